"""A collection: ids + float32 vectors + JSON metadata, searched through compressed codes.

Files in the collection's folder:

- ``catalog.sqlite``: ids, metadata, tombstones, checksums, counters, and the names
  of the current files below (the commit point).
- ``vectors.f32``: every vector ever written, float32, append-only; read via mmap.
- ``codes.bin``: codes of the sealed rows ``0 .. sealed_rows-1`` (derived data).
- ``codec.npz`` / ``codec-<g>.npz``: the trained codec (derived data).
- ``sample_queries.npy``: optional sample queries given at creation (codec tuning, LeanVec).
- ``index-<tag>/``: the ANN index over rows ``0 .. index rows-1``, if any (derived data).

Rows ``sealed_rows .. n_rows-1`` form the growing segment, scanned exactly;
crossing ``seal_rows`` growing rows seals them into codes. ``optimize()`` seals,
brings the index up to date and compacts away deleted rows; compaction writes
``vectors-<g>.f32`` / ``codes-<g>.bin`` of generation g and switches to them in
one catalog transaction. A collection created with ``codec="auto"`` chooses its codec
(``vecpack.tuning``) when it first seals; ``retune()`` chooses again and re-encodes.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import shutil
import sqlite3
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vecpack import filters, planner, tenants, validate
from vecpack.codecs import Codec, load_codec, make_codec, save_codec
from vecpack.codecs.base import inliers
from vecpack.errors import ClosedError, Conflict, CorruptData, InvalidInput, NotFound, StorageError, VecpackError
from vecpack.fields import FieldColumns
from vecpack.index import INDEX_KINDS, Index
from vecpack.index.base import arrays_crc, load_arrays, save_arrays
from vecpack.index.graph import DEFAULTS as GRAPH_DEFAULTS
from vecpack.kernels.rowset import ascending
from vecpack.search import ScanData, prepare
from vecpack.selection import Selection, filter_groups, run_plan
from vecpack.storage.catalog import Catalog
from vecpack.storage.files import write_atomic
from vecpack.storage.rowfile import RowFile
from vecpack.tenant_clusters import TenantClusters
from vecpack.tuning import MIN_TUNE_ROWS, bytes_per_vector, check_settings, fidelity, tune

log = logging.getLogger("vecpack")

VECTORS_MAGIC = b"VPKVEC01"
CODES_MAGIC = b"VPKCODE1"
DEFAULT_SEAL_ROWS = 16384
TRAIN_ROWS = 65536
ENCODE_CHUNK = 65536
PREAD_RERANK_BYTES = 64 << 20
#: optimize() compacts when at least this fraction of the rows are deleted
COMPACT_FRACTION = 0.1
#: an index is built once this many rows are sealed (below it, a flat scan is as fast)
MIN_INDEX_ROWS = 1024
#: optimize() refits the codec when its fidelity (recall@10 of its own scores on a sample of the live rows,
#: ``tuning.fidelity``) fell this much below its fidelity at fit time, and a refitted codec gains as much: the
#: measurement's noise on ~2,000 hits is about 0.01
DRIFT_LOSS = 0.05
#: ... measured once the rows written or deleted since the last measurement reach this share of the live rows
DRIFT_CHECK_SHARE = 0.1
#: rows of a sample that fidelity is measured on (200 of them as queries)
FIDELITY_ROWS = 10_000
#: searches restarted because a compaction renumbered the rows under them, before giving up
SNAPSHOT_TRIES = 3
#: why each plan runs, as ``explain`` tells a tenant: in words that do not depend on the other tenants' rows
TENANT_PLANS = {
    "none": "none of the tenant's rows match",
    "exact": "an exact scan of the codes of the tenant's matching rows",
    "clusters": "the tenant's rows in the shared clusters nearest the query",
    "postfilter": "a walk of the shared index keeping the tenant's matching rows",
    "filtered": "a walk of the shared index through the tenant's matching rows only",
    "scan": "a scan of every code, keeping the tenant's matching rows",
}
#: the codec spec of a collection that chooses its codec by measurement (``vecpack.tuning``)
AUTO = "auto"
SAMPLE_QUERIES = "sample_queries.npy"


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: ``score`` is cosine similarity, inner product or L2 distance."""

    id: str
    score: float
    metadata: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What one search reads, as of one generation: the rows, the live mask, the index, the number of live
    rows, and the codec's scan layout of the codes if the collection keeps one."""

    data: ScanData
    live: np.ndarray
    index: Index | None
    n_live: int
    layout: np.ndarray | None


@dataclass(slots=True)
class _PendingCommit:
    """What a write transaction changes in memory once it commits (``Collection._apply``)."""

    deleted: list[int] = field(default_factory=list)  # rows tombstoned
    added: int = 0  # rows appended
    codec: Codec | None = None  # the codec this transaction trained
    reload: bool = False  # rows renumbered or re-encoded: load everything again
    forget: list[int] = field(default_factory=list)  # tenants whose row lists and postings are dropped


@dataclass(frozen=True, slots=True)
class _Committed:
    """What one write transaction committed: its number (``commit_seq``), the row counters and the index."""

    seq: int
    n_rows: int
    sealed_rows: int
    index_state: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Record:
    """A stored record as returned by ``Collection.get``."""

    id: str
    vector: np.ndarray
    metadata: dict[str, Any] | None


class Collection:
    """A durable set of (id, vector, metadata) records with compressed search.

    Open collections through ``Database.create_collection`` / ``get_collection``.
    Every write is atomic and durable when the call returns.
    """

    def __init__(self, path: Path, *, memory_map: bool = False) -> None:
        """Open the collection in folder ``path``; ``memory_map`` as in ``vecpack.connect``."""
        self.path = Path(path)
        self.memory_map = memory_map
        # Two locks, so that searches never wait for a write's fsyncs: ``_write_lock`` admits one writer
        # at a time for a whole write transaction; ``_lock`` guards the in-memory state and the read
        # connection and is held only briefly (a reader's snapshot, the writer applying its commit).
        # Lock order: _optimize_lock, then _write_lock, then _lock.
        self._lock = threading.RLock()
        self._write_lock = threading.RLock()
        self._optimize_lock = threading.Lock()
        self._catalog = Catalog(self.path / "catalog.sqlite")  # the writer's connection
        try:
            self._reader = Catalog(self.path / "catalog.sqlite")  # committed state, for readers
        except BaseException:
            self._catalog.close()
            raise
        self._writer: int | None = None  # thread id of the writer inside its transaction
        self._closed = False
        self._pending = _PendingCommit()
        self._files: tuple[str, str] | None = None
        self._index: Index | None = None
        # the codec's scan layout of the sealed codes, kept while there is no index: (files, layout, rows)
        self._layout: tuple[tuple[str, str], np.ndarray, int] | None = None
        self._index_dir: str | None = None
        self._fields = FieldColumns()
        self._tenant_rows = tenants.TenantRows()
        self._clusters: TenantClusters | None = None  # a multi-tenant index's shared clustering
        self._tenant_codes: dict[str, tuple[int, bool]] = {}  # name -> (code, active), cleared on every change
        self._indexed_fields: list[tuple[str, ...]] | None = None  # paths of the field indexes; None = reread
        # maintenance after a commit (sealing) that failed: it is not the write's failure (stats() shows it)
        self._maintenance_error: str | None = None
        self._maintenance_failures = 0
        try:
            meta = self._db.all_meta()
            self.name: str = meta["name"]
            self.dim: int = meta["dim"]
            self.metric: str = meta["metric"]
            self.seal_rows: int = meta["seal_rows"]
            self.index_kind: str = meta.get("index", "flat")
            self.index_params: dict[str, Any] = meta.get("index_params", {})
            self.multi_tenant: bool = meta.get("multi_tenant", False)
            # an "auto" collection holds a placeholder until its first seal chooses the codec
            self._codec: Codec = make_codec(_placeholder(meta["codec"]), self.dim, self._codec_metric)
            self._data_version, self._applied_seq = -1, -1  # no state loaded yet: the first refresh loads it
            with self._reading():
                pass
        except BaseException:
            self._close_files()
            self._catalog.close()
            self._reader.close()
            raise

    @property
    def _db(self) -> Catalog:
        """The catalog as this thread must see it: inside its write transaction, the writer's connection
        (its own uncommitted changes included); otherwise the read connection, which sees committed
        state only and is used with ``_lock`` held."""
        return self._catalog if self._writer == threading.get_ident() else self._reader

    @property
    def _codec_metric(self) -> str:
        return "l2" if self.metric == "l2" else "ip"

    # -- creation and state ---------------------------------------------------------
    @classmethod
    def create(
        cls, path: Path, name: str, dim: int, metric: str, codec: str, seal_rows: int,
        index: str = "flat", index_params: dict[str, Any] | None = None, tuning: dict[str, Any] | None = None,
        sample_queries: np.ndarray | None = None, multi_tenant: bool = False,
    ) -> Collection:
        """Write a new, empty collection into the (new, empty) folder ``path`` and open it.

        index / index_params must already be validated (``vecpack.index.check_index``), tuning
        (codec "auto") by ``vecpack.tuning.check_settings``, sample_queries by ``validate.vectors``.
        """
        code_size = make_codec(_placeholder(codec), dim, "l2" if metric == "l2" else "ip").code_size
        if sample_queries is not None:
            write_atomic(path / SAMPLE_QUERIES, _npy_bytes(sample_queries))
        catalog = Catalog(
            path / "catalog.sqlite",
            create=True,
            meta={"name": name, "dim": dim, "metric": metric, "codec": codec, "seal_rows": seal_rows,
                  "n_rows": 0, "sealed_rows": 0, "codec_crc": None, "index": index,
                  "index_params": index_params or {}, "index_state": None, "tuning": tuning,
                  "tuning_report": None, "multi_tenant": multi_tenant,
                  "vectors_file": "vectors.f32", "codes_file": "codes.bin"},
        )
        catalog.close()
        RowFile(path / "vectors.f32", VECTORS_MAGIC, 4 * dim, create=True).close()
        RowFile(path / "codes.bin", CODES_MAGIC, code_size, create=True).close()
        return cls(path)

    def _load_state(self) -> None:
        """(Re)read counters, tombstones, the codec and the index from disk, verifying sizes and tail checksums."""
        meta = self._db.all_meta()
        n_rows, sealed = meta["n_rows"], meta["sealed_rows"]
        if meta["codec_crc"] is not None:
            codec_path = self.path / meta.get("codec_file", "codec.npz")
            try:
                blob = codec_path.read_bytes()
            except FileNotFoundError as exc:
                raise CorruptData(f"{codec_path}: missing, but the catalog has a trained codec") from exc
            if zlib.crc32(blob) != meta["codec_crc"]:
                raise CorruptData(f"{codec_path}: checksum mismatch")
            self._codec = load_codec(blob)
        files = (meta.get("vectors_file", "vectors.f32"), meta.get("codes_file", "codes.bin"))
        if files != self._files:  # first open, or another handle compacted or re-encoded into new files
            self._close_files()
            try:
                vectors = RowFile(self.path / files[0], VECTORS_MAGIC, 4 * self.dim)
                try:
                    codes = RowFile(self.path / files[1], CODES_MAGIC, self._codec.code_size,
                                    resident=not self.memory_map)
                except BaseException:
                    vectors.close()
                    raise
            except FileNotFoundError as exc:
                raise CorruptData(f"{exc.filename}: missing, but the catalog names it") from exc
            self._vectors, self._codes, self._files = vectors, codes, files
        self._vectors.check(n_rows)
        self._codes.check(sealed)
        self._verify_tail("batches", self._vectors)
        self._verify_tail("segments", self._codes)
        self._load_index(meta.get("index_state"), sealed)
        live = np.ones(max(n_rows, 1024), dtype=np.uint8)
        live[n_rows:] = 0
        live[self._db.tombstones()] = 0
        self._live = live
        self._n_rows, self._sealed = n_rows, sealed
        self._n_live = self._db.count()
        self._tenant_codes.clear()
        self._indexed_fields = None
        self._data_version = self._db.data_version()
        self._applied_seq = meta.get("commit_seq", 0)

    def _load_index(self, state: dict[str, Any] | None, sealed: int) -> None:
        """Open the index folder named in the catalog: its arrays are read (or memory-mapped), never rebuilt."""
        if state is None:
            self._index, self._index_dir, self._clusters = None, None, None
            return
        if state["dir"] == self._index_dir:
            return
        cls = INDEX_KINDS[self.index_kind]
        assert cls is not None
        if state["rows"] > sealed:
            raise CorruptData(f"{self.path}: index covers {state['rows']} rows but only {sealed} are sealed")
        arrays = load_arrays(self.path / state["dir"], state["arrays"], memory_map=self.memory_map)
        index = cls.from_arrays(state["rows"], state["params"], arrays)
        try:
            index.check()
            clusters = TenantClusters.from_arrays(state["rows"], arrays)
        except CorruptData as exc:
            raise CorruptData(f"{self.path / state['dir']}: {exc}") from exc
        self._index, self._index_dir, self._clusters = index, state["dir"], clusters

    def _verify_tail(self, table: str, rows: RowFile) -> None:
        last = self._db.last_range(table)
        if last is not None and rows.crc(last[0], last[1]) != last[2]:
            raise CorruptData(f"{rows.path}: checksum mismatch in rows {last[0]}..{last[0] + last[1] - 1}")

    def _refresh(self) -> None:
        """Reload state if another handle (of this process or another) committed since we last looked. Our own
        commits are applied by ``_apply``; ``commit_seq``, counted by every write transaction, tells them apart."""
        if self._closed:
            raise ClosedError(f"collection {self.name!r} is closed")
        with self._db.snapshot():
            version = self._db.data_version()
            if version == self._data_version:
                return
            if self._db.get_meta("commit_seq", 0) == self._applied_seq:
                self._data_version = version  # nothing but our own commits since
            else:
                self._load_state()

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """``_lock`` held and one catalog read transaction open, the in-memory state refreshed at its start:
        what the block reads from the catalog and from memory is one generation, whoever commits meanwhile."""
        with self._lock:
            if self._closed:
                raise ClosedError(f"collection {self.name!r} is closed")
            try:
                for attempt in range(SNAPSHOT_TRIES):
                    with self._db.snapshot():
                        try:
                            self._refresh()
                        except CorruptData as exc:
                            # a file our snapshot names was removed by a newer commit of another process: again
                            if isinstance(exc.__cause__, FileNotFoundError) and attempt + 1 < SNAPSHOT_TRIES:
                                continue
                            raise
                        yield
                        return
            except sqlite3.Error as exc:
                raise _storage_error(exc, self.path) from exc

    # -- writes -----------------------------------------------------------------------
    def add(self, ids: Any, vectors: Any, metadata: Any = None, *, tenant: str | None = None) -> None:
        """Insert new records; fails with ``Conflict`` (adding nothing) if any id exists.

        Parameters
        ----------
        ids : list of str or int, unique within the call.
        vectors : float32-convertible (n, dim), finite.
        metadata : optional list of dict (JSON-serialisable) or None, one per id.
        tenant : the tenant to write to, in a multi-tenant collection (required there; created
            if new). Every method takes it: ids are unique per tenant, and no call of one
            tenant can read, change or detect another tenant's records.

        Examples
        --------
        >>> import vecpack, numpy as np
        >>> col = vecpack.connect().create_collection("docs", dim=3, metric="cosine", codec="float32")
        >>> col.add(ids=["a", 7], vectors=np.eye(3)[:2], metadata=[{"year": 2020}, None])
        >>> len(col)
        2
        """
        ids, x, meta = self._check_batch(ids, vectors, metadata)
        with self._write():
            keys = self._keys(ids, self._tenant(tenant, create=True))
            existing = self._db.rows_of(keys)
            if existing:
                taken = sorted(tenants.public_id(key) for key in existing)
                raise Conflict(f"ids already exist: {taken[:5]} (use upsert to replace)")
            self._append(keys, x, meta)
        self._maybe_seal()

    def upsert(self, ids: Any, vectors: Any, metadata: Any = None, *, tenant: str | None = None) -> None:
        """Insert records, replacing the vector and metadata of ids that already exist."""
        ids, x, meta = self._check_batch(ids, vectors, metadata)
        with self._write():
            keys = self._keys(ids, self._tenant(tenant, create=True))
            existing = self._db.rows_of(keys)
            if existing:
                self._delete_rows(list(existing.values()))
            self._append(keys, x, meta)
        self._maybe_seal()

    def delete(
        self, ids: Any = None, *, where: dict[str, Any] | None = None, tenant: str | None = None,
        delete_all: bool = False,
    ) -> int:
        """Delete records by id, by filter, or the ids that pass the filter; returns how many were deleted.

        Fails with ``NotFound`` (deleting nothing) if any given id is unknown. The
        filter is evaluated inside the write transaction: exactly the rows matching at
        commit time go. A filter without conditions (``{}``) is refused: deleting every
        record (of the tenant) takes ``delete_all=True`` and neither ids nor where.

        Examples
        --------
        >>> import vecpack, numpy as np
        >>> col = vecpack.connect().create_collection("d", dim=2, codec="float32")
        >>> col.add(ids=[1, 2, 3], vectors=np.eye(3)[:, :2] + 1, metadata=[{"y": 1}, {"y": 2}, {"y": 3}])
        >>> col.delete(where={"y": {"$gte": 2}}), len(col)
        (2, 1)
        >>> col.delete(delete_all=True), len(col)
        (1, 0)
        """
        if not isinstance(delete_all, bool):
            raise InvalidInput(f"delete_all must be True or False, got {delete_all!r}")
        if delete_all and (ids is not None or where is not None):
            raise InvalidInput("delete_all=True deletes every record (of the tenant): give it no ids or where")
        if not delete_all and ids is None and where is None:
            raise InvalidInput("delete needs ids, where, or both (delete_all=True deletes every record)")
        ids = validate.ids(ids) if ids is not None else None
        node = filters.parse(where) if where is not None else None
        if node is not None and filters.unconditional(node):
            raise InvalidInput(f"where={where!r} has no condition and would delete every record: "
                               "call delete(delete_all=True) for that")
        with self._write(), self._lock:  # _lock: the selection extends the shared field columns
            code = self._tenant(tenant)
            if ids is not None:
                rows = np.array([row for _, row, _ in self._records(ids, code)], dtype=np.int64)
                if node is not None:
                    rows = rows[self._filter_mask(node)[rows]]
            else:
                selection = self._select(code, node)
                rows = np.flatnonzero(self._live[: self._n_rows]) if selection.everything else selection.rows()
            self._delete_rows(rows.tolist())
        return int(rows.size)

    def optimize(self, *, compact: bool | None = None) -> None:
        """Seal growing rows, bring the index up to date, and compact away deleted rows.

        Parameters
        ----------
        compact : True = always compact, False = never, None (default) = when at least
            COMPACT_FRACTION of the rows are deleted. Compaction rewrites the vector log, codes
            and index without deleted rows, reclaiming disk and memory, and repairs the graph;
            writes wait while it runs.

        Searches keep using the previous index while a new one is built; the switch is one
        catalog commit. A crash at any point leaves the previous state serving.
        """
        with self._optimize_lock, self._exclusive("optimize.lock"), _storage_errors(self.path):
            with self._write_lock:
                with self._write():  # no other process is inside a write transaction, writing files
                    self._remove_stale_files()
                self._seal()
                self._maintenance_error = None
                self._refit_if_drifted()
                with self._lock:
                    deleted, n_rows = self._n_rows - self._n_live, self._n_rows
                if compact or (compact is None and deleted and deleted >= COMPACT_FRACTION * n_rows):
                    self._compact()
            self._update_index()

    @contextmanager
    def _exclusive(self, name: str) -> Iterator[None]:
        """An advisory lock file held across processes (released by the OS if the holder dies)."""
        with open(self.path / name, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _remove_stale_files(self) -> None:
        """Delete files and index folders the catalog no longer names (left by a crash or a compaction). Inside a
        write transaction, under optimize's lock: no other process is writing files it is about to commit."""
        meta = self._db.all_meta()
        state = meta.get("index_state")
        current = {meta.get("vectors_file", "vectors.f32"), meta.get("codes_file", "codes.bin"),
                   meta.get("codec_file", "codec.npz"), state["dir"] if state else None}
        for entry in self.path.iterdir():
            derived = entry.name.startswith(("vectors", "codes", "codec", "index-")) or entry.name.endswith(".tmp")
            if derived and entry.name not in current:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def _update_index(self) -> None:
        """Build or extend the index to cover every sealed row, off the lock, then switch to it atomically."""
        cls = INDEX_KINDS[self.index_kind]
        with self._reading():
            old, old_dir, sealed, clusters = self._index, self._index_dir, self._sealed, self._clusters
            if cls is None or sealed == (old.rows if old else 0) or sealed < MIN_INDEX_ROWS:
                return
            live = self._live[:sealed].copy()
            stored, codes = self._vectors.view(sealed, np.float32), self._codes.view(sealed)
        # rows below sealed never change, and only optimize() (which we hold) renumbers them
        vectors = prepare(stored, self.metric)
        params = {**self.index_params, "metric": self._codec_metric}
        new = old.extend(vectors, codes, live) if old else cls.build(vectors, codes, live, params)
        if self.multi_tenant:
            clusters = clusters.extend(vectors) if clusters else TenantClusters.build(vectors, live)
        self._commit_index(new, clusters, expect_dir=old_dir)

    def _save_index(self, index: Index, clusters: TenantClusters | None) -> dict[str, Any]:
        """Write the index (and a multi-tenant collection's clusters) to a new folder; returns the catalog's
        ``index_state`` naming it."""
        folder = f"index-{uuid.uuid4().hex[:12]}"
        arrays = index.arrays() | (clusters.arrays() if clusters is not None else {})
        crc = save_arrays(self.path / folder, arrays)
        return {"dir": folder, "rows": index.rows, "crc": crc, "params": index.params, "arrays": sorted(arrays)}

    def _commit_index(self, index: Index, clusters: TenantClusters | None, expect_dir: str | None) -> None:
        """Write the index to a new folder and point the catalog at it (unless another writer moved on)."""
        new_state = self._save_index(index, clusters)
        with self._write():
            state = self._db.get_meta("index_state")
            if (state["dir"] if state else None) != expect_dir:
                shutil.rmtree(self.path / new_state["dir"])
                return
            self._db.set_meta(index_state=new_state)
        if expect_dir is not None:
            shutil.rmtree(self.path / expect_dir, ignore_errors=True)

    def _compact(self) -> None:
        """Rewrite vectors, codes and index without deleted rows as generation g + 1, in one transaction.

        Renumbering keeps the order of rows, so sealed rows stay a prefix (rows a codec could not
        be trained for yet stay growing) and the index's rows stay a prefix of those.
        """
        with self._write():
            n_rows, sealed = self._db.get_meta("n_rows"), self._db.get_meta("sealed_rows")
            keep = np.flatnonzero(self._live[:n_rows])
            keep_sealed = keep[keep < sealed]
            gen = self._db.get_meta("generation", 0) + 1
            files = (f"vectors-{gen}.f32", f"codes-{gen}.bin")
            for name in files:
                (self.path / name).unlink(missing_ok=True)
            vectors = RowFile(self.path / files[0], VECTORS_MAGIC, 4 * self.dim, create=True)
            codes = RowFile(self.path / files[1], CODES_MAGIC, self._codec.code_size, create=True)
            try:
                old_vectors = self._vectors.view(n_rows, np.float32)
                old_codes = self._codes.view(sealed)
                self._db.clear_ranges("batches", "segments")
                self._write_rows("batches", vectors, 0, keep.size, lambda a, b: old_vectors[keep[a:b]])
                self._write_rows("segments", codes, 0, keep_sealed.size, lambda a, b: old_codes[keep_sealed[a:b]])
            finally:
                vectors.close()
                codes.close()
            index_state = None
            if self._index is not None:
                live = self._live[:n_rows]
                index = self._index.compact(prepare(old_vectors[: self._index.rows], self.metric), old_codes, live,
                                            keep)
                clusters = self._clusters.compact(keep) if self._clusters is not None else None
                index_state = self._save_index(index, clusters)
            self._db.renumber(keep)
            self._db.set_meta(n_rows=int(keep.size), sealed_rows=int(keep_sealed.size), generation=gen,
                              vectors_file=files[0], codes_file=files[1], index_state=index_state)
            self._pending.reload = True
        with self._write():
            self._remove_stale_files()
        self._catalog.checkpoint()

    def _check_batch(self, ids: Any, vectors: Any, metadata: Any) -> tuple[list[str], np.ndarray, list[str | None]]:
        ids = validate.ids(ids)
        x = validate.vectors(vectors, self.dim, len(ids), metric=self.metric)
        return ids, x, validate.metadata(metadata, len(ids))

    class _WriteTxn:
        """Write lock + catalog transaction; in-memory state changes only after COMMIT.

        Readers are not blocked while the transaction runs (vector writes and their fsync, encoding):
        they read the committed state through their own connection. COMMIT and applying it to the
        in-memory state happen together under ``_lock``, so a reader never sees one without the other.
        """

        def __init__(self, col: Collection) -> None:
            self.col = col

        def __enter__(self) -> None:
            col = self.col
            col._write_lock.acquire()
            try:
                with col._reading():  # before the write lock: load what is new (most of it) without holding it
                    pass
                self.txn = col._catalog.transaction()
                self.txn.__enter__()
                with col._lock:
                    col._refresh()  # another process may have committed before we took the write lock
                col._writer = threading.get_ident()
                col._pending = _PendingCommit()
            except (sqlite3.Error, OSError) as exc:
                col._write_lock.release()
                raise _storage_error(exc, col.path) from exc
            except BaseException:
                col._write_lock.release()
                raise

        def __exit__(self, *exc: Any) -> None:
            col = self.col
            try:
                with col._lock:
                    committed = None
                    try:
                        try:
                            committed = col._committing() if exc[0] is None else None
                        except BaseException as failed:
                            self.txn.__exit__(type(failed), failed, failed.__traceback__)  # ROLLBACK
                            raise
                        self.txn.__exit__(*exc)  # COMMIT, or ROLLBACK if the body raised
                    except (sqlite3.Error, OSError) as failed:
                        raise _storage_error(failed, col.path) from failed
                    finally:
                        col._writer = None
                    if committed is not None:
                        col._apply(committed, col._pending)
            finally:
                col._pending = _PendingCommit()
                col._write_lock.release()
            if exc[0] is not None and issubclass(exc[0], sqlite3.Error | OSError) and not isinstance(
                    exc[1], VecpackError):  # rolled back: nothing of the call was written
                raise _storage_error(exc[1], col.path) from exc[1]

    def _write(self) -> Collection._WriteTxn:
        return Collection._WriteTxn(self)

    def _append(self, ids: list[str], x: np.ndarray, meta: list[str | None]) -> None:
        """Inside a write transaction: write vectors past the committed end, then record them."""
        row0 = self._db.get_meta("n_rows")
        crc = self._vectors.write(row0, x)
        self._db.insert_records(row0, ids, meta)
        self._db.add_range("batches", row0, len(ids), crc)
        self._db.set_meta(n_rows=row0 + len(ids))
        self._pending.added += len(ids)

    def _delete_rows(self, rows: list[int]) -> None:
        """Inside a write transaction: tombstone live rows."""
        self._db.delete_rows(rows)
        self._pending.deleted.extend(rows)

    def _committing(self) -> _Committed:
        """Inside a write transaction, just before COMMIT: count the commit, and read what it leaves."""
        seq = self._db.get_meta("commit_seq", 0) + 1
        self._db.set_meta(commit_seq=seq)
        churn = self._pending.added + len(self._pending.deleted)
        if churn:  # rows written or deleted since the collection was created: when to look for drift again
            self._db.set_meta(churn=self._db.get_meta("churn", 0) + churn)
        return _Committed(seq, self._db.get_meta("n_rows"), self._db.get_meta("sealed_rows"),
                          self._db.get_meta("index_state"))

    def _apply(self, committed: _Committed, pending: _PendingCommit) -> None:
        """After our commit, ``_lock`` held: bring counters, the live mask, the codec and the index in line with
        what it committed. Another process may have committed since: the next ``_refresh`` loads that (its
        commit_seq is not ours)."""
        if pending.reload:  # compaction renumbered every row, or re-encoding wrote new codes
            with self._db.snapshot():
                self._load_state()
            return
        self._load_index(committed.index_state, committed.sealed_rows)
        n_rows = committed.n_rows
        if n_rows > self._live.shape[0]:
            grown = np.zeros(max(n_rows, 2 * self._live.shape[0]), dtype=np.uint8)
            grown[: self._live.shape[0]] = self._live
            self._live = grown
        self._live[self._n_rows : n_rows] = 1
        self._live[pending.deleted] = 0
        self._n_rows = n_rows
        self._n_live += pending.added - len(pending.deleted)
        self._sealed = committed.sealed_rows
        if pending.codec is not None:
            self._codec = pending.codec
        for code in pending.forget:
            self._tenant_rows.drop(code)
            if self._clusters is not None:
                self._clusters.forget(code)
        self._tenant_codes.clear()
        self._indexed_fields = None
        self._applied_seq = committed.seq

    # -- sealing --------------------------------------------------------------------
    def _maybe_seal(self) -> None:
        """Seal once seal_rows rows are growing. Runs after a write's commit, so a failure here (a full disk)
        is not the write's: it is logged and kept for ``stats()``, the rows stay growing (searched exactly),
        and the next write or ``optimize()`` tries again."""
        if self._n_rows - self._sealed < self.seal_rows:
            return
        try:
            self._seal()
        except Exception as exc:  # any failure of maintenance: reported where it cannot be missed
            self._maintenance_failed("seal", exc)
        else:
            self._maintenance_error = None

    def _maintenance_failed(self, what: str, exc: Exception) -> None:
        self._maintenance_error = f"{what} failed: {type(exc).__name__}: {exc}"
        self._maintenance_failures += 1
        log.warning("collection %r: %s (the write itself was committed; the rows stay unsealed)", self.name,
                    self._maintenance_error)

    def _seal(self) -> None:
        """Encode rows sealed_rows..n_rows-1 into codes; train the codec first if needed."""
        with self._write():
            n_rows, sealed = self._db.get_meta("n_rows"), self._db.get_meta("sealed_rows")
            if n_rows == sealed:
                return
            vectors = self._vectors.view(n_rows, np.float32)
            if not self._codec.trained:
                live_rows = np.flatnonzero(self._live[:n_rows])
                if self._db.get_meta("codec") == AUTO:
                    if live_rows.size >= MIN_TUNE_ROWS:
                        codec, report, fid = self._choose_codec(live_rows, n_rows)
                        self._recode(codec, n_rows, fid, report=report)
                    return  # else too few rows to tune: stay exact for now
                if live_rows.size < self._codec.min_train_rows:
                    return  # too few rows to train: stay exact for now
                x, queries = self._training_sample(live_rows, n_rows)
                codec = make_codec(self._codec.spec, self.dim, self._codec.metric).fit(x, queries)
                blob = save_codec(codec)
                write_atomic(self.path / "codec.npz", blob)
                self._db.set_meta(codec_crc=zlib.crc32(blob), codec_fidelity=self._fidelity(codec, x),
                                  drift_checked_churn=self._db.get_meta("churn", 0))
                self._pending.codec = codec
            else:
                codec = self._codec
            self._write_rows("segments", self._codes, sealed, n_rows, self._encoder(codec, vectors))
            self._db.set_meta(sealed_rows=n_rows)

    def _write_rows(self, table: str, rows: RowFile, start: int, end: int,
                    chunk: Callable[[int, int], np.ndarray]) -> None:
        """Inside a write transaction: write rows start..end-1 of a row file, ``chunk(a, b)`` giving rows a..b-1,
        ENCODE_CHUNK at a time, each chunk's crc32 recorded in ``table`` ("batches" or "segments")."""
        for a in range(start, end, ENCODE_CHUNK):
            b = min(a + ENCODE_CHUNK, end)
            self._db.add_range(table, a, b - a, rows.write(a, chunk(a, b)))

    def _encoder(self, codec: Codec, vectors: np.ndarray) -> Callable[[int, int], np.ndarray]:
        """``_write_rows``' chunk: the codes of stored vectors a..b-1, as the codec sees them."""
        return lambda a, b: codec.encode(prepare(vectors[a:b], self.metric))

    def _training_sample(self, live_rows: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Up to TRAIN_ROWS live rows (prepared) less outliers (``codecs.base.inliers``: one row of huge values
        would set the codec for every row, and every tenant), and the sample queries, if any, to fit a codec on."""
        pick = np.random.default_rng(0).choice(live_rows, size=min(TRAIN_ROWS, live_rows.size), replace=False)
        x = prepare(self._vectors.view(n_rows, np.float32)[np.sort(pick)], self.metric)
        keep = inliers(x)
        return (x[keep] if keep.size >= self._codec.min_train_rows else x), self._sample_queries()

    def _sample_queries(self) -> np.ndarray | None:
        path = self.path / SAMPLE_QUERIES
        return prepare(np.load(path), self.metric) if path.exists() else None

    def _choose_codec(
        self, live_rows: np.ndarray, n_rows: int, settings: dict[str, Any] | None = None
    ) -> tuple[Codec, dict[str, Any], float]:
        """Run the tuner on a sample of the live rows; the chosen codec (fitted), the report and its fidelity."""
        settings = settings or self._db.get_meta("tuning")
        budget = bytes_per_vector(settings, int(live_rows.size), self._index_row_bytes())
        x, queries = self._training_sample(live_rows, n_rows)
        spec, report = tune(x, self.metric, budget, settings["target_recall"], queries=queries)
        report["settings"] = settings
        codec = make_codec(spec, self.dim, self._codec_metric).fit(x, queries)
        return codec, report, self._fidelity(codec, x)

    def _fidelity(self, codec: Codec, x: np.ndarray) -> float:
        """``tuning.fidelity`` of a codec on up to FIDELITY_ROWS rows of a (prepared) sample."""
        pick = np.random.default_rng(1).permutation(x.shape[0])[:FIDELITY_ROWS]
        return fidelity(codec, x[np.sort(pick)], self.metric)

    def _refit_if_drifted(self) -> None:
        """Fit the codec again and re-encode every sealed row when the rows have drifted from those it was fitted
        on: on a fresh sample of live rows its fidelity fell more than DRIFT_LOSS below the fidelity it had at fit
        time (or that is unknown), and a codec fitted on that sample does DRIFT_LOSS better. Measured once rows
        written or deleted since the last measurement reach DRIFT_CHECK_SHARE of the live rows. Inside
        optimize() with the write lock held; the next index build covers the new codes."""
        with self._reading():
            codec, sealed, known = self._codec, self._sealed, self._db.get_meta("codec_fidelity")
            churn, checked = self._db.get_meta("churn", 0), self._db.get_meta("drift_checked_churn", 0)
            live_rows = np.flatnonzero(self._live[:sealed])
        if not codec.trained or codec.exact or live_rows.size < max(MIN_TUNE_ROWS, codec.min_train_rows):
            return
        if known is not None and churn - checked < DRIFT_CHECK_SHARE * live_rows.size:
            return  # too few rows changed since the last look to have moved the data
        x, queries = self._training_sample(live_rows, sealed)
        now = self._fidelity(codec, x)
        fresh = None
        if known is None or now < known - DRIFT_LOSS:
            fresh = make_codec(codec.spec, self.dim, self._codec_metric).fit(x, queries)
            fresh_fidelity = self._fidelity(fresh, x)
        with self._write():
            if fresh is not None and fresh_fidelity >= now + DRIFT_LOSS:
                log.info("collection %r: refitting codec %s (fidelity %.3f, refitted %.3f)", self.name, codec.spec,
                         now, fresh_fidelity)
                self._recode(fresh, sealed, fresh_fidelity)
            else:  # unknown: fitted before fidelity was recorded, and from now on this is its baseline
                self._db.set_meta(drift_checked_churn=churn, codec_fidelity=known if known is not None else now)

    def _index_row_bytes(self) -> int:
        """Resident bytes per row of the collection's index besides codes (graph adjacency, IVF row ids)."""
        if self.index_kind == "graph":
            return 4 * self.index_params.get("degree", GRAPH_DEFAULTS["degree"])
        return 8 if self.index_kind == "ivf" else 0

    def _recode(self, codec: Codec, upto: int, fidelity: float, *, report: dict[str, Any] | None = None) -> None:
        """Inside a write transaction: encode rows 0..upto-1 with ``codec`` (its ``fidelity`` measured on its
        training sample; ``report``: the tuner's, for a codec it chose) into new codes and codec files of the
        next generation and switch to them; the index is dropped (the next ``optimize()`` rebuilds it)."""
        gen = self._db.get_meta("generation", 0) + 1
        codes_file, codec_file = f"codes-{gen}.bin", f"codec-{gen}.npz"
        (self.path / codes_file).unlink(missing_ok=True)
        codes = RowFile(self.path / codes_file, CODES_MAGIC, codec.code_size, create=True)
        try:
            self._db.clear_ranges("segments")
            self._write_rows("segments", codes, 0, upto, self._encoder(codec, self._vectors.view(upto, np.float32)))
        finally:
            codes.close()
        blob = save_codec(codec)
        write_atomic(self.path / codec_file, blob)
        self._db.set_meta(codec=codec.spec, codec_crc=zlib.crc32(blob), codec_file=codec_file,
                          codes_file=codes_file, generation=gen, sealed_rows=upto, index_state=None,
                          codec_fidelity=fidelity, drift_checked_churn=self._db.get_meta("churn", 0))
        if report is not None:
            self._db.set_meta(tuning_report=report)
        self._pending.reload = True

    def tuning_report(self) -> dict[str, Any] | None:
        """How ``codec="auto"`` (or ``retune()``) chose the codec: every candidate measured, the choice and
        why; None before the first choice (an auto collection chooses when it first seals)."""
        with self._reading():
            return self._db.get_meta("tuning_report")

    def retune(
        self, *, memory_budget: int | str | None = None, bytes_per_vector: int | str | None = None,
        target_recall: float | None = None,
    ) -> dict[str, Any]:
        """Choose the codec again on the current rows (settings default to the stored ones); returns the report.

        If the choice differs from the current codec, every sealed row is re-encoded into new files and
        the index dropped (rebuilt by the next ``optimize()``), all in one commit; searches use the old
        codes until then.
        """
        overrides = {"memory_budget": memory_budget, "bytes_per_vector": bytes_per_vector,
                     "target_recall": target_recall}
        with self._optimize_lock, self._exclusive("optimize.lock"), _storage_errors(self.path):
            with self._reading():
                stored = self._db.get_meta("tuning") or {}
                if memory_budget is not None or bytes_per_vector is not None:
                    stored = {"target_recall": stored.get("target_recall", 0.95)}
                settings = check_settings({**stored, **{k: v for k, v in overrides.items() if v is not None}})
                n_rows = self._n_rows
                live_rows = np.flatnonzero(self._live[:n_rows])
                if live_rows.size < MIN_TUNE_ROWS:
                    raise InvalidInput(f"retune needs at least {MIN_TUNE_ROWS} live rows, the collection has "
                                       f"{live_rows.size}")
            # off the lock: rows below n_rows never change, and only optimize() (whose lock we hold) renumbers
            codec, report, fid = self._choose_codec(live_rows, n_rows, settings)
            with self._write():
                if codec.spec == self._codec.spec and self._codec.trained:
                    self._db.set_meta(tuning=settings, tuning_report=report)
                else:
                    self._db.set_meta(tuning=settings)
                    self._recode(codec, self._db.get_meta("sealed_rows"), fid, report=report)
            with self._write():
                self._remove_stale_files()
        return report

    # -- reads ------------------------------------------------------------------------
    def search(
        self, q: Any, k: int = 10, *, where: dict[str, Any] | list[dict[str, Any] | None] | None = None,
        rerank: int | None = None, ef: int | None = None, nprobe: int | None = None, tenant: str | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """Nearest records to the query/queries, best first.

        Parameters
        ----------
        q : (dim,) for one query, or (m, dim) for a batch.
        k : results per query.
        where : a metadata filter (``vecpack.filters``) for every query, or for a batch one
            filter (or None) per query; queries with equal filters are searched together.
            The plan (exact scan of the matches, filtered index search, or post-filter) follows
            the filter's selectivity (``explain``); at least k hits come back whenever k rows match.
        rerank : candidates re-scored with the float32 vectors; None = the codec's
            default (0 for float32, float16 and int8; max(10k, 100) for binary and PQ); 0 = off.
        ef : graph index only: beam width (default max(64, k, rerank)); larger = better recall, slower.
        nprobe : IVF index only: lists scanned per query (default 3 sqrt(nlist), at least 8).

        Returns
        -------
        list[Hit] for a 1-D query, else one list per query. Scores: cosine
        similarity, inner product (descending) or L2 distance (ascending).
        """
        q, single = validate.queries(q, self.dim, metric=self.metric)
        k = validate.positive_int(k, "k")
        if rerank is not None:
            rerank = validate.positive_int(rerank, "rerank", low=0, high=validate.MAX_K)
        knob = self._check_knob(ef, nprobe)
        groups = filter_groups(where, q.shape[0], single)
        q = prepare(q, self.metric)
        # The search runs on a snapshot, off the lock. If a compaction (by any process) renumbers the rows
        # meanwhile, its row numbers no longer name the same records: search the new rows again. The ids are
        # read in one read transaction with the refresh that tells whether the numbering is still ours.
        for _ in range(SNAPSHOT_TRIES):
            with self._reading():
                code, files = self._tenant(tenant), self._files
                selections = [self._select(code, node) for node, _ in groups]
                snapshot = self._snapshot(k, rerank, every_row=all(s.everything for s in selections))
            try:
                scores, rows = self._search_snapshot(q, k, groups, selections, knob, snapshot)
            except OSError:  # this process's compaction closed the file we were reading
                if files == self._files:
                    raise
                continue
            with self._reading():
                if files == self._files:
                    found = self._db.records_by_row(np.unique(rows[rows >= 0]).tolist())
                    break
        else:
            raise Conflict(f"collection {self.name!r} was compacted {SNAPSHOT_TRIES} times during one search: "
                           "retry")
        results = self._hits(scores, rows, found)
        return results[0] if single else results

    def _snapshot(self, k: int, rerank: int | None, every_row: bool) -> _Snapshot:
        """What a search reads, as of now (``_lock`` held): later commits do not change it.

        every_row : no filter or tenant restricts the search, so a scan layout (if any) is all it scans.
        """
        codec, n_rows, sealed = self._codec, self._n_rows, self._sealed
        vectors, vector_file = self._vectors.view(n_rows, np.float32), self._vectors
        rerank = codec.default_rerank(k) if rerank is None else rerank
        # a large vector log is read with pread for re-ranking: faults through the mmap would map
        # 64 KiB of neighbours per candidate and inflate resident memory (measured: 1.4 GB peak at 1M)
        gather = (lambda r: vector_file.gather(r, np.float32)) if vectors.nbytes > PREAD_RERANK_BYTES else None
        layout = self._scan_layout(sealed, build=every_row)
        # with a scan layout, the stored rows are copied into memory only once a filtered search needs them
        codes = self._codes.mapped(sealed) if layout is not None and every_row else self._codes.view(sealed)
        data = ScanData(codec, codes, vectors, self.metric, 0 if codec.exact or sealed == 0 else rerank, gather)
        return _Snapshot(data, self._live[:n_rows], self._index, self._n_live, layout)

    def _scan_layout(self, sealed: int, build: bool = True) -> np.ndarray | None:
        """The codec's ``scan_layout`` of the sealed codes (``_lock`` held): kept while the collection has no
        index, extended by the rows sealed since; rebuilt for new code files (a compaction or a new codec
        writes new ones; sealed rows never change in place). None if the codec has none, or if there is
        none yet and not ``build`` (searches restricted to some rows do not scan it)."""
        if self._index is not None or sealed == 0:
            self._layout = None
            return None
        if not build and self._layout is None:
            return None
        done = None
        if self._layout is not None and self._layout[0] == self._files and self._layout[2] <= sealed:
            if self._layout[2] == sealed:
                return self._layout[1]
            done = self._layout[1:]
        layout = self._codec.scan_layout(self._codes.mapped(sealed), done)
        self._layout = (self._files, layout, sealed) if layout is not None else None
        return layout

    @staticmethod
    def _search_snapshot(
        q: np.ndarray, k: int, groups: list[tuple[Any, Any]], selections: list[Selection], knob: int | None,
        snap: _Snapshot,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (m, k), of the queries, one plan per filter group."""
        scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        rows = np.full((q.shape[0], k), -1, dtype=np.int64)
        for (_, picked), selection in zip(groups, selections, strict=True):
            matches = None if selection.everything else selection.count()
            plan = planner.choose(matches, snap.n_live, max(k, snap.data.rerank), snap.index, knob,
                                  clustered=selection.postings is not None)
            scores[picked], rows[picked] = run_plan(plan, q[picked], k, selection, snap.live, snap.index, snap.data,
                                                    snap.layout)
        return scores, rows

    def explain(
        self, k: int = 10, *, where: dict[str, Any] | None = None, ef: int | None = None, nprobe: int | None = None,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """How ``search(q, k, where=..., ef=..., nprobe=...)`` would run: the plan, matching rows, selectivity, why.

        A multi-tenant collection's plan is explained in the tenant's numbers only: ``live`` and ``selectivity``
        count the tenant's rows, and nothing derived from the other tenants' rows (the index's widened ef, the
        share of the collection that matches) is shown.

        Examples
        --------
        >>> import vecpack, numpy as np
        >>> col = vecpack.connect().create_collection("e", dim=2, codec="float32")
        >>> col.add(ids=[1, 2, 3, 4], vectors=np.ones((4, 2)), metadata=[{"y": i} for i in range(4)])
        >>> plan = col.explain(where={"y": {"$gte": 3}})
        >>> plan["plan"], plan["matches"], plan["selectivity"]
        ('exact', 1, 0.25)
        """
        k = validate.positive_int(k, "k")
        knob = self._check_knob(ef, nprobe)
        node = filters.parse(where) if where is not None else None
        with self._reading():
            code = self._tenant(tenant)
            selection = self._select(code, node)
            matches = None if selection.everything else selection.count()
            width = max(k, self._codec.default_rerank(k) if not self._codec.exact else 0)
            plan = planner.choose(matches, self._n_live, width, self._index, knob,
                                  clustered=selection.postings is not None)
            own = self._select(code, None).count() if code is not None else None
            indexed = {".".join(p): self._fields.indexed(p) for p in (filters.paths(node) if node else ())}
        out = plan.as_dict()
        out["plan"] = out.pop("kind")
        if own is not None:
            out |= {"live": own, "selectivity": plan.matches / own if own else 0.0, "knob": None, "fallback": None,
                    "reason": TENANT_PLANS[plan.kind]}
        return out | {"index": self.index_kind, "fields": indexed}

    # -- tenants ------------------------------------------------------------------------------
    def _tenant(self, tenant: str | None, *, create: bool = False) -> int | None:
        """The code of a call's tenant (None in a collection without tenants). Lock held; ``create``
        (inside a write transaction) registers a new tenant instead of raising NotFound."""
        if not self.multi_tenant:
            if tenant is not None:
                self._require_tenants()
            return None
        if tenant is None:
            raise InvalidInput(f"collection {self.name!r} is multi-tenant: every call needs tenant=")
        name = validate.tenant_name(tenant)
        found = self._tenant_codes.get(name) if not create else None
        if found is None:
            found = self._db.tenant(name)
            if found is not None and not create:  # committed before this call: safe to remember
                self._tenant_codes[name] = found
        if found is None:
            if not create:
                raise self._no_tenant(name)
            return self._db.add_tenant(name)
        if not found[1]:
            raise Conflict(f"tenant {name!r} is inactive: call activate_tenant({name!r}) first")
        return found[0]

    @staticmethod
    def _keys(ids: list[str], code: int | None) -> list[str]:
        """Catalog keys of a call's ids (tenant-prefixed in a multi-tenant collection)."""
        return ids if code is None else [tenants.key(code, i) for i in ids]

    def _records(self, ids: list[str], code: int | None) -> list[tuple[str, int, str | None]]:
        """(id, row, metadata JSON) of each id of tenant ``code``, in order; NotFound naming any unknown id."""
        keys = self._keys(ids, code)
        found = self._db.records_by_id(keys)
        missing = [i for i, key in zip(ids, keys, strict=True) if key not in found]
        if missing:
            raise NotFound(_unknown_ids(missing))
        return [(i, *found[key]) for i, key in zip(ids, keys, strict=True)]

    def _select(self, code: int | None, node: filters.Filter | None) -> Selection:
        """Live rows of tenant ``code`` (None = all) passing ``node`` (None = no filter). Lock held, state fresh."""
        passing = None  # rows passing a single indexed condition, found without a pass over every row
        if node is not None:
            self._sync_fields()
            passing = self._fields.indexed_rows(node)
        if code is None:
            if node is None:
                return Selection(self._n_rows)
            if passing is not None:  # its live rows, sorted on the way (``kernels.rowset``)
                return Selection(self._n_rows, rows=ascending(passing, self._n_rows, self._live), ordered=True)
            return Selection(self._n_rows, mask=self._filter_mask(node))
        self._tenant_rows.sync(self._db, self._n_rows, self._files)
        if passing is not None:  # cost grows with the filter's matches, whatever the tenant's size
            rows = ascending(self._tenant_rows.owned(code, passing), self._n_rows, self._live)
            return Selection(self._n_rows, rows=rows, ordered=True)
        every = self._tenant_rows.rows(code)
        if node is None and self._clusters is not None and every.size > planner.EXACT_ROWS:  # Curator-style
            tail = every[np.searchsorted(every, self._clusters.rows) :].astype(np.int64)
            return Selection(self._n_rows, among=every, live=self._live, postings=self._clusters.postings(code, every),
                             tail=tail[self._live[tail] != 0])
        rows = every[self._live[every] != 0]
        if node is not None:
            rows = rows[self._filter_mask(node)[rows]]
        return Selection(self._n_rows, rows=rows, ordered=True)

    def create_tenant(self, name: str) -> None:
        """Register a tenant (``add`` / ``upsert`` also create theirs); Conflict if it exists."""
        name = self._tenant_name(name)
        with self._write():
            if self._db.tenant(name) is not None:
                raise Conflict(f"tenant {name!r} already exists in collection {self.name!r}")
            self._db.add_tenant(name)

    def drop_tenant(self, name: str) -> int:
        """Delete a tenant and all its records in one transaction; returns how many records went."""
        name = self._tenant_name(name)
        with self._write():
            code = self._existing_tenant(name)
            rows = self._db.rows_with_prefix(tenants.key(code, ""))
            self._delete_rows(rows)
            self._db.remove_tenant(code)
            self._pending.forget.append(code)
        return len(rows)

    def list_tenants(self) -> list[dict[str, Any]]:
        """Every tenant: ``{"name": ..., "active": bool}``, by name."""
        self._require_tenants()
        with self._reading():
            return [{"name": n, "active": a} for n, (_, a) in sorted(self._db.tenants().items())]

    def deactivate_tenant(self, name: str) -> None:
        """Offload a tenant: its in-memory row list and postings are dropped and its calls are refused until
        ``activate_tenant``; its records stay on disk."""
        self._set_tenant_active(name, False)

    def activate_tenant(self, name: str) -> None:
        self._set_tenant_active(name, True)

    def _set_tenant_active(self, name: str, active: bool) -> None:
        name = self._tenant_name(name)
        with self._write():
            code = self._existing_tenant(name)
            self._db.set_tenant_active(code, active)
            if not active:
                self._pending.forget.append(code)

    def _tenant_name(self, name: str) -> str:
        """A tenant management call's checked tenant name (InvalidInput without tenants or for a bad name)."""
        self._require_tenants()
        return validate.tenant_name(name)

    def _existing_tenant(self, name: str) -> int:
        """The code of tenant ``name``, active or not; NotFound if there is none. Inside a write transaction."""
        found = self._db.tenant(name)
        if found is None:
            raise self._no_tenant(name)
        return found[0]

    def _no_tenant(self, name: str) -> NotFound:
        return NotFound(f"tenant {name!r} does not exist in collection {self.name!r}")

    def _require_no_tenants(self) -> None:
        if self.multi_tenant:
            raise InvalidInput(f"collection {self.name!r} is multi-tenant: use get(ids=..., tenant=...)")

    def _require_tenants(self) -> None:
        if not self.multi_tenant:
            raise InvalidInput(f"collection {self.name!r} has no tenants (create it with multi_tenant=True)")

    # -- metadata filters and field indexes ---------------------------------------------------
    def _filter_mask(self, node: filters.Filter) -> np.ndarray:
        """bool (n_rows,): live rows passing ``node``. Call with the lock held, state refreshed."""
        self._sync_fields()
        return self._fields.mask(self._db, node, self._n_rows) & (self._live[: self._n_rows] != 0)

    def _sync_fields(self) -> None:
        """Bring the indexed fields' columns up to date with the rows. Lock held, state refreshed."""
        if self._indexed_fields is None:  # changed since last read (this handle's or another's commit)
            self._indexed_fields = [filters.field_path(f) for f in self._db.get_meta("field_indexes", [])]
        self._fields.sync(self._db, self._indexed_fields, self._n_rows, self._files)

    def create_field_index(self, field: str) -> None:
        """Index a metadata field (dotted path for nested fields) so filters on it cost milliseconds.

        The index is a typed column in memory, built now from the stored records and
        extended as rows are added; its name is kept in the catalog. Filters work on
        fields without one too, reading the field from every record per call.
        Creating an index that exists does nothing.
        """
        filters.field_path(field)
        with self._write():
            names = self._db.get_meta("field_indexes", [])
            if field not in names:
                self._db.set_meta(field_indexes=[*names, field])
        with self._reading():
            self._sync_fields()

    def drop_field_index(self, field: str) -> None:
        """Remove a field index; NotFound if there is none on ``field``."""
        filters.field_path(field)
        with self._write():
            names = self._db.get_meta("field_indexes", [])
            if field not in names:
                raise NotFound(f"no field index on {field!r}; indexed fields: {names}")
            self._db.set_meta(field_indexes=[n for n in names if n != field])

    def field_indexes(self) -> list[str]:
        """The indexed metadata fields."""
        with self._reading():
            return list(self._db.get_meta("field_indexes", []))

    def count(self, where: dict[str, Any] | None = None, *, tenant: str | None = None) -> int:
        """Live records (of the tenant), or those passing the filter ``where``."""
        node = filters.parse(where) if where is not None else None
        with self._reading():
            selection = self._select(self._tenant(tenant), node)
            return self._n_live if selection.everything else selection.count()

    def _check_knob(self, ef: int | None, nprobe: int | None) -> int | None:
        """The knob for this collection's index; InvalidInput for the other index's knob."""
        knob = None
        for name, value, kind in (("ef", ef, "graph"), ("nprobe", nprobe, "ivf")):
            if value is not None and self.index_kind != kind:
                raise InvalidInput(f"{name} applies to {kind} indexes; collection {self.name!r} has index "
                                   f"{self.index_kind!r}")
            if value is not None:
                knob = validate.positive_int(value, name, high=validate.MAX_K)
        return knob

    def _hits(
        self, scores: np.ndarray, rows: np.ndarray, found: dict[int, tuple[str, str | None]]
    ) -> list[list[Hit]]:
        """The hits of (scores, rows), given the catalog's (key, metadata JSON) of those rows (deleted rows
        are missing from ``found`` and dropped)."""
        if self.metric == "l2":
            scores = np.sqrt(np.maximum(-scores, 0.0))
        # one json.loads for all metadata of this call: ~10x cheaper than one per hit
        metadata = json.loads("[" + ",".join(m if m is not None else "null" for _, m in found.values()) + "]")
        by_row = {r: (rid, meta) for (r, (rid, _)), meta in zip(found.items(), metadata, strict=True)}
        out = []
        for srow, rrow in zip(scores.tolist(), rows.tolist(), strict=True):
            out.append([Hit(tenants.public_id(by_row[r][0]) if self.multi_tenant else by_row[r][0], s, by_row[r][1])
                        for s, r in zip(srow, rrow, strict=True) if r in by_row])
        return out

    def get(
        self, ids: Any = None, *, where: dict[str, Any] | None = None, limit: int | None = None, offset: int = 0,
        tenant: str | None = None,
    ) -> list[Record]:
        """Records by id (in the given order; ``NotFound`` if any id is unknown), or by filter (in insertion order).

        With both, the given ids that pass the filter. With neither, every record.
        ``limit`` / ``offset`` page through the result.
        """
        ids = validate.ids(ids, unique=False) if ids is not None else None
        node = filters.parse(where) if where is not None else None
        limit = validate.positive_int(limit, "limit", high=validate.MAX_BATCH) if limit is not None else None
        offset = validate.positive_int(offset, "offset", low=0, high=1 << 62)
        with self._reading():
            code = self._tenant(tenant)
            vectors = self._vectors.view(self._n_rows, np.float32)
            if ids is not None:
                keep = self._filter_mask(node) if node is not None else None
                picked = [r for r in self._records(ids, code) if keep is None or keep[r[1]]]
            else:
                selection = self._select(code, node)
                rows = (np.flatnonzero(self._live[: self._n_rows]) if selection.everything else selection.rows())
                rows = rows[offset:][:limit].tolist()
                offset = 0
                picked = [(tenants.public_id(i), r, m)
                          for r, (i, m) in sorted(self._db.records_by_row(rows).items())]
            picked = picked[offset:][:limit]
            return [Record(i, np.array(vectors[row]), json.loads(meta) if meta is not None else None)
                    for i, row, meta in picked]

    def __contains__(self, id: object) -> bool:
        """True if a record with this id (str or int) exists (not for multi-tenant collections: use get)."""
        key = validate.ids([id])[0]
        self._require_no_tenants()
        with self._reading():
            return bool(self._db.rows_of([key]))

    def __len__(self) -> int:
        with self._reading():
            return self._n_live

    @property
    def maintenance_failures(self) -> int:
        """Seals after committed writes that failed since this handle opened (the writes stand; ``stats()`` shows
        the last error until a seal succeeds)."""
        return self._maintenance_failures

    def stats(self) -> dict[str, Any]:
        """Counts and sizes.

        ``memory_bytes`` is what search keeps resident: the index, codes of the sealed
        rows it does not hold (an IVF index holds its rows' codes; a graph reads the
        collection's; without an index, a codec's scan layout of them, plus the rows
        themselves once a filtered search read them), float32 rows of the growing segment,
        the live mask, codec parameters, field index columns and tenant row lists, shared clusters and postings
        (``field_index_bytes``, ``tenant_bytes``). ``disk_bytes`` is the disk space the folder's
        files take (allocated blocks). ``maintenance_error`` is the last failure of sealing after a
        committed write (None once a seal succeeds), ``maintenance_failures`` how many there were.
        """
        with self._reading():
            growing = self._n_rows - self._sealed
            codec_bytes = sum(a.nbytes for a in self._codec.state().values()) if self._codec.trained else 0
            index = self._index
            index_bytes = index.nbytes if index is not None else 0
            own_codes = index.rows if index is not None and index.kind == "ivf" else 0
            clusters_bytes = self._clusters.nbytes if self._clusters is not None else 0
            codes_bytes = (self._sealed - own_codes) * self._codec.code_size
            if self._layout is not None:  # the scan layout, and the stored rows once a filtered search read them
                codes_bytes = self._layout[1].nbytes + self._codes.resident_rows * self._codec.code_size
            return {
                "name": self.name,
                "n": self._n_live,
                "dim": self.dim,
                "metric": self.metric,
                "codec": self._db.get_meta("codec"),
                "bytes_per_vector": self._codec.code_size,
                "compression_ratio": 4 * self.dim / self._codec.code_size,
                "rows": self._n_rows,
                "sealed_rows": self._sealed,
                "growing_rows": growing,
                "deleted_rows": self._n_rows - self._n_live,
                "index": self.index_kind,
                "indexed_rows": index.rows if index is not None else 0,
                "index_bytes": index_bytes,
                "field_index_bytes": self._fields.nbytes,
                "tenant_bytes": self._tenant_rows.nbytes + clusters_bytes,
                "memory_bytes": (
                    codes_bytes + index_bytes + growing * 4 * self.dim
                    + self._n_rows + codec_bytes + self._fields.nbytes + self._tenant_rows.nbytes + clusters_bytes
                ),
                "disk_bytes": sum(f.stat().st_blocks * 512 for f in self.path.rglob("*") if f.is_file()),
                # the last failure of maintenance after a committed write (sealing), until it next succeeds
                "maintenance_error": self._maintenance_error,
                "maintenance_failures": self._maintenance_failures,
            }

    def verify(self) -> None:
        """Check the catalog (SQLite's integrity check, and its records against its counters and the row files) and
        every checksum of the vector log, the codes and the index files; raises CorruptData naming the problem."""
        with self._reading():
            catalog = self.path / "catalog.sqlite"
            problems = self._db.integrity_problems()
            if problems:
                raise CorruptData(f"{catalog}: damaged ({'; '.join(problems[:3])})")
            problems = self._db.consistency_problems(self._n_rows, self._sealed, self.multi_tenant)
            if problems or self._db.count() != self._n_live:
                raise CorruptData(f"{catalog}: inconsistent ({'; '.join(problems) or 'live count changed'})")
            for table, rows in (("batches", self._vectors), ("segments", self._codes)):
                for row0, n, crc in self._db.ranges(table):
                    if rows.crc(row0, n) != crc:
                        raise CorruptData(f"{rows.path}: checksum mismatch in rows {row0}..{row0 + n - 1}")
            state = self._db.get_meta("index_state")
            if self._index is not None:  # the files, which the index was read from (or is mapped on)
                stored = load_arrays(self.path / state["dir"], state["arrays"], memory_map=True)
                if arrays_crc(stored) != state["crc"]:
                    raise CorruptData(f"{self.path / state['dir']}: index checksum mismatch")

    # -- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        with self._write_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_files()
            self._catalog.close()
            self._reader.close()

    def _close_files(self) -> None:
        if self._files is not None:
            self._vectors.close()
            self._codes.close()
            self._files = None

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Collection({self.name!r}, dim={self.dim}, metric={self.metric!r}, codec={self._codec.spec!r})"


@contextmanager
def _storage_errors(path: Path) -> Iterator[None]:
    """Failures of SQLite or the file system inside the block raised as vecpack errors (``_storage_error``)."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        if isinstance(exc, VecpackError):
            raise
        raise _storage_error(exc, path) from exc


def _storage_error(exc: BaseException, path: Path) -> VecpackError:
    """The vecpack error for a failure of SQLite or the file system in the collection at ``path``: CorruptData for a
    damaged catalog, StorageError for the rest (a full disk, an I/O error, a lock held too long)."""
    if isinstance(exc, VecpackError):
        return exc
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return CorruptData(f"{path / 'catalog.sqlite'}: {exc}")
    return StorageError(f"{path}: {type(exc).__name__}: {exc}")


def _placeholder(spec: str) -> str:
    """The codec spec to hold until an "auto" collection has chosen (never trained, never encodes)."""
    return "float32" if spec == AUTO else spec


def _npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()


def _unknown_ids(missing: list[str]) -> str:
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return f"unknown ids: {missing[:5]}{more}"

