"""A collection's rows as files, and the in-memory state searches read: vectors, codes, codec, index.

Files in the collection's folder (the catalog, ``storage.manifest``, names the current ones):

- ``vectors.f32`` / ``vectors-<g>.f32``: every vector written, float32, append-only; read via mmap.
- ``codes.bin`` / ``codes-<g>.bin``: codes of the sealed rows ``0 .. sealed_rows-1`` (derived data).
- ``codec.npz`` / ``codec-<g>.npz``: the trained codec (derived data).
- ``sample_queries.npy``: optional sample queries given at creation (codec tuning, LeanVec).
- ``index-<tag>/``: the ANN index over rows ``0 .. index rows-1``, if any (derived data).

Rows ``sealed_rows .. n_rows-1`` form the growing segment, scanned exactly. Sealing encodes
them (training the codec first); re-encoding (a new or refitted codec) and compaction
(without deleted rows, renumbered in order) write the files of generation g + 1, which the
same catalog transaction switches to. ``Segments`` does the file work inside the caller's
write transaction and keeps the state in memory; it holds no lock (``storage.store`` does).
"""

from __future__ import annotations

import io
import shutil
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vecpack.codecs import Codec, load_codec, make_codec, save_codec
from vecpack.codecs.base import inliers
from vecpack.errors import CorruptData
from vecpack.index import INDEX_KINDS, Index, IndexKind
from vecpack.index.base import arrays_crc, load_arrays, save_arrays
from vecpack.index.graph import DEFAULTS as GRAPH_DEFAULTS
from vecpack.index.tenant_clusters import TenantClusters
from vecpack.search import ScanData, prepare
from vecpack.storage import manifest
from vecpack.storage.catalog import Catalog
from vecpack.storage.files import write_atomic
from vecpack.storage.manifest import Manifest
from vecpack.storage.rowfile import RowFile
from vecpack.tuning import MIN_TUNE_ROWS, bytes_per_vector, fidelity, tune

VECTORS_MAGIC = b"VPKVEC01"
CODES_MAGIC = b"VPKCODE1"
TRAIN_ROWS = 65536
ENCODE_CHUNK = 65536
PREAD_RERANK_BYTES = 64 << 20
#: an index is built once this many rows are sealed (below it, a flat scan is as fast)
MIN_INDEX_ROWS = 1024
#: rows of a sample that fidelity is measured on (200 of them as queries)
FIDELITY_ROWS = 10_000
#: the codec spec of a collection that chooses its codec by measurement (``vecpack.tuning``)
AUTO = "auto"
SAMPLE_QUERIES = "sample_queries.npy"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one search reads, as of one generation: the rows, the live mask, the index, the number of live
    rows, and the codec's scan layout of the codes if kept."""

    data: ScanData
    live: np.ndarray
    index: Index | None
    n_live: int
    layout: np.ndarray | None


@dataclass(slots=True)
class PendingCommit:
    """What a write transaction changes in memory once it commits (``Store.apply``)."""

    deleted: list[int] = field(default_factory=list)  # rows tombstoned
    added: int = 0  # rows appended
    codec: Codec | None = None  # the codec this transaction trained
    reload: bool = False  # rows renumbered or re-encoded: load everything again
    forget: list[int] = field(default_factory=list)  # tenants whose row lists and postings are dropped


@dataclass(frozen=True, slots=True)
class Committed:
    """What one write transaction committed: its number (``commit_seq``), the row counters and the index."""

    seq: int
    n_rows: int
    sealed_rows: int
    index_state: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class IndexJob:
    """An index build: extend ``old`` (or build one of ``kind``) over the sealed rows, and the shared clusters."""

    kind: type[Index]
    old: Index | None
    old_dir: str | None  # the folder it replaces
    clusters: TenantClusters | None
    live: np.ndarray
    vectors: np.ndarray  # as stored: run() prepares them for the metric, off the store's lock
    metric: str
    codes: np.ndarray
    params: dict[str, Any]

    def run(self, multi_tenant: bool) -> tuple[Index, TenantClusters | None]:
        old, clusters, live = self.old, self.clusters, self.live
        vectors = prepare(self.vectors, self.metric)  # a copy for cosine: ~0.1 s at 100k rows
        new = old.extend(vectors, self.codes, live) if old else self.kind.build(vectors, self.codes, live, self.params)
        if multi_tenant:
            clusters = clusters.extend(vectors) if clusters else TenantClusters.build(vectors, live)
        return new, clusters


@dataclass(frozen=True, slots=True)
class _ScanLayout:
    """The codec's scan layout of rows 0 .. rows-1 of the code file of generation ``files``."""

    files: tuple[str, str]
    array: np.ndarray
    rows: int


class Segments:
    """The files of one collection and what searches read of them; the caller holds the store's locks."""

    def __init__(self, path: Path, m: Manifest, memory_map: bool) -> None:
        self.path, self.dim, self.metric, self.memory_map = path, m.dim, m.metric, memory_map
        self.index_kind, self.index_params = m.index, m.index_params
        self.codec_metric = "l2" if m.metric == "l2" else "ip"
        # an "auto" collection holds a placeholder until its first seal chooses the codec
        self.codec: Codec = make_codec(placeholder(m.codec), m.dim, self.codec_metric)
        self.files: tuple[str, str] | None = None
        self.vectors: RowFile
        self.codes: RowFile
        self.index: Index | None = None
        self.index_dir: str | None = None
        self.clusters: TenantClusters | None = None  # a multi-tenant index's shared clustering
        self.layout: _ScanLayout | None = None  # kept while there is no index
        self.live = np.zeros(0, np.uint8)
        self.n_rows = self.sealed = self.n_live = 0

    @staticmethod
    def create(path: Path, dim: int, metric: str, codec: str, sample_queries: np.ndarray | None) -> None:
        """Write the empty row files (and the sample queries) of a new collection into ``path``."""
        code_size = make_codec(placeholder(codec), dim, "l2" if metric == "l2" else "ip").code_size
        if sample_queries is not None:
            write_atomic(path / SAMPLE_QUERIES, _npy_bytes(sample_queries))
        RowFile(path / "vectors.f32", VECTORS_MAGIC, 4 * dim, create=True).close()
        RowFile(path / "codes.bin", CODES_MAGIC, code_size, create=True).close()

    # -- loading -------------------------------------------------------------------
    def load(self, db: Catalog, m: Manifest) -> None:
        """(Re)read the codec, files, live mask and index the manifest names, verifying sizes and tail checksums."""
        if m.codec_crc is not None:
            codec_path = self.path / m.codec_file
            try:
                blob = codec_path.read_bytes()
            except FileNotFoundError as exc:
                raise CorruptData(f"{codec_path}: missing, but the catalog has a trained codec") from exc
            if zlib.crc32(blob) != m.codec_crc:
                raise CorruptData(f"{codec_path}: checksum mismatch")
            self.codec = load_codec(blob)
        if m.files != self.files:  # first open, or another handle compacted or re-encoded into new files
            self.close()
            try:
                vectors = RowFile(self.path / m.vectors_file, VECTORS_MAGIC, 4 * self.dim)
                try:
                    codes = RowFile(self.path / m.codes_file, CODES_MAGIC, self.codec.code_size,
                                    resident=not self.memory_map)
                except BaseException:
                    vectors.close()
                    raise
            except FileNotFoundError as exc:
                raise CorruptData(f"{exc.filename}: missing, but the catalog names it") from exc
            self.vectors, self.codes, self.files = vectors, codes, m.files
        self.vectors.check(m.n_rows)
        self.codes.check(m.sealed_rows)
        for table, rows in (("batches", self.vectors), ("segments", self.codes)):
            last = db.last_range(table)
            if last is not None and rows.crc(last[0], last[1]) != last[2]:
                raise CorruptData(f"{rows.path}: checksum mismatch in rows {last[0]}..{last[0] + last[1] - 1}")
        self.load_index(m.index_state, m.sealed_rows)
        live = np.ones(max(m.n_rows, 1024), dtype=np.uint8)
        live[m.n_rows :] = 0
        live[db.tombstones()] = 0
        self.live, self.n_rows, self.sealed, self.n_live = live, m.n_rows, m.sealed_rows, db.count()

    def load_index(self, state: dict[str, Any] | None, sealed: int) -> None:
        """Open the index folder ``state`` names: its arrays are read (or memory-mapped), never rebuilt."""
        if state is None:
            self.index, self.index_dir, self.clusters = None, None, None
            return
        if state["dir"] == self.index_dir:
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
        self.index, self.index_dir, self.clusters = index, state["dir"], clusters

    def apply(self, committed: Committed, pending: PendingCommit) -> None:
        """Bring counters, the live mask, the codec and the index in line with what a commit of ours wrote."""
        self.load_index(committed.index_state, committed.sealed_rows)
        n_rows = committed.n_rows
        if n_rows > self.live.shape[0]:
            grown = np.zeros(max(n_rows, 2 * self.live.shape[0]), dtype=np.uint8)
            grown[: self.live.shape[0]] = self.live
            self.live = grown
        self.live[self.n_rows : n_rows] = 1
        self.live[pending.deleted] = 0
        self.n_rows = n_rows
        self.n_live += pending.added - len(pending.deleted)
        self.sealed = committed.sealed_rows
        if pending.codec is not None:
            self.codec = pending.codec
        if self.clusters is not None:
            for tenant_no in pending.forget:
                self.clusters.forget(tenant_no)

    # -- writing (inside the caller's write transaction) ------------------------------------------
    def append(self, db: Catalog, ids: list[str], x: np.ndarray, meta: list[str | None]) -> None:
        """Write vectors past the committed end, then record them."""
        row0 = manifest.get(db, "n_rows")
        crc = self.vectors.write(row0, x)
        db.insert_records(row0, ids, meta)
        db.add_range("batches", row0, len(ids), crc)
        manifest.update(db, n_rows=row0 + len(ids))

    def seal(self, db: Catalog, pending: PendingCommit) -> None:
        """Encode rows sealed_rows..n_rows-1 into codes; train (or, codec "auto", choose) the codec first if needed."""
        m = Manifest.read(db)
        if m.n_rows == m.sealed_rows:
            return
        codec = self.codec
        if not codec.trained:
            live_rows = np.flatnonzero(self.live[: m.n_rows])
            if m.codec == AUTO:
                if live_rows.size >= MIN_TUNE_ROWS:
                    chosen, report, fid = self.choose_codec(live_rows, m.n_rows, m.tuning)
                    self.recode(db, pending, chosen, m.n_rows, fid, report=report)
                return  # else too few rows to tune: stay exact for now
            if live_rows.size < codec.min_train_rows:
                return  # too few rows to train: stay exact for now
            x, queries = self.training_sample(live_rows, m.n_rows)
            codec = make_codec(codec.spec, self.dim, codec.metric).fit(x, queries)
            blob = save_codec(codec)
            write_atomic(self.path / "codec.npz", blob)
            manifest.update(db, codec_crc=zlib.crc32(blob), codec_fidelity=self.fidelity(codec, x),
                            drift_checked_churn=m.churn)
            pending.codec = codec
        self._write_rows(db, "segments", self.codes, m.sealed_rows, m.n_rows,
                         self._encoder(codec, self.vectors.view(m.n_rows, np.float32)))
        manifest.update(db, sealed_rows=m.n_rows)

    def recode(self, db: Catalog, pending: PendingCommit, codec: Codec, upto: int, fidelity: float, *,
               report: dict[str, Any] | None = None) -> None:
        """Encode rows 0..upto-1 with ``codec`` (its ``fidelity`` measured on its training sample; ``report``: the
        tuner's, for a codec it chose) into the codes and codec files of the next generation and switch to them;
        the index is dropped (the next ``optimize()`` rebuilds it)."""
        m = Manifest.read(db)
        gen = m.generation + 1
        codes_file, codec_file = f"codes-{gen}.bin", f"codec-{gen}.npz"
        (self.path / codes_file).unlink(missing_ok=True)
        codes = RowFile(self.path / codes_file, CODES_MAGIC, codec.code_size, create=True)
        try:
            db.clear_ranges("segments")
            self._write_rows(db, "segments", codes, 0, upto, self._encoder(codec, self.vectors.view(upto, np.float32)))
        finally:
            codes.close()
        blob = save_codec(codec)
        write_atomic(self.path / codec_file, blob)
        manifest.update(db, codec=codec.spec, codec_crc=zlib.crc32(blob), codec_file=codec_file,
                        codes_file=codes_file, generation=gen, sealed_rows=upto, index_state=None,
                        codec_fidelity=fidelity, drift_checked_churn=m.churn)
        if report is not None:
            manifest.update(db, tuning_report=report)
        pending.reload = True

    def compact(self, db: Catalog, pending: PendingCommit) -> None:
        """Rewrite vectors, codes and index without deleted rows as generation g + 1.

        Renumbering keeps the order of rows, so sealed rows stay a prefix (rows a codec could not
        be trained for yet stay growing) and the index's rows stay a prefix of those.
        """
        m = Manifest.read(db)
        keep = np.flatnonzero(self.live[: m.n_rows])
        keep_sealed = keep[keep < m.sealed_rows]
        gen = m.generation + 1
        files = (f"vectors-{gen}.f32", f"codes-{gen}.bin")
        for name in files:
            (self.path / name).unlink(missing_ok=True)
        vectors = RowFile(self.path / files[0], VECTORS_MAGIC, 4 * self.dim, create=True)
        codes = RowFile(self.path / files[1], CODES_MAGIC, self.codec.code_size, create=True)
        try:
            old_vectors = self.vectors.view(m.n_rows, np.float32)
            old_codes = self.codes.view(m.sealed_rows)
            db.clear_ranges("batches", "segments")
            self._write_rows(db, "batches", vectors, 0, keep.size, lambda a, b: old_vectors[keep[a:b]])
            self._write_rows(db, "segments", codes, 0, keep_sealed.size, lambda a, b: old_codes[keep_sealed[a:b]])
        finally:
            vectors.close()
            codes.close()
        index_state = None
        if self.index is not None:
            index = self.index.compact(prepare(old_vectors[: self.index.rows], self.metric), old_codes,
                                       self.live[: m.n_rows], keep)
            clusters = self.clusters.compact(keep) if self.clusters is not None else None
            index_state = self.save_index(index, clusters)
        db.renumber(keep)
        manifest.update(db, n_rows=int(keep.size), sealed_rows=int(keep_sealed.size), generation=gen,
                        vectors_file=files[0], codes_file=files[1], index_state=index_state)
        pending.reload = True

    def remove_stale_files(self, m: Manifest) -> None:
        """Delete files and index folders the manifest does not name (left by a crash or a compaction). Call
        inside a write transaction, under optimize's lock: no other process is writing files it will commit."""
        current = m.current_files()
        for entry in self.path.iterdir():
            derived = entry.name.startswith(("vectors", "codes", "codec", "index-")) or entry.name.endswith(".tmp")
            if derived and entry.name not in current:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def _write_rows(self, db: Catalog, table: str, rows: RowFile, start: int, end: int,
                    chunk: Callable[[int, int], np.ndarray]) -> None:
        """Write rows start..end-1 of a row file, ``chunk(a, b)`` giving rows a..b-1, ENCODE_CHUNK at a time, each
        chunk's crc32 recorded in ``table`` ("batches" or "segments")."""
        for a in range(start, end, ENCODE_CHUNK):
            b = min(a + ENCODE_CHUNK, end)
            db.add_range(table, a, b - a, rows.write(a, chunk(a, b)))

    def _encoder(self, codec: Codec, vectors: np.ndarray) -> Callable[[int, int], np.ndarray]:
        """``_write_rows``' chunk: the codes of stored vectors a..b-1, as the codec sees them."""
        return lambda a, b: codec.encode(prepare(vectors[a:b], self.metric))

    # -- codecs ---------------------------------------------------------------------
    def training_sample(self, live_rows: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Up to TRAIN_ROWS live rows (prepared) less outliers (``codecs.base.inliers``: one row of huge values
        would set the codec for every row, and every tenant), and the sample queries, if any, to fit a codec on."""
        pick = np.random.default_rng(0).choice(live_rows, size=min(TRAIN_ROWS, live_rows.size), replace=False)
        x = prepare(self.vectors.view(n_rows, np.float32)[np.sort(pick)], self.metric)
        keep = inliers(x)
        path = self.path / SAMPLE_QUERIES
        queries = prepare(np.load(path), self.metric) if path.exists() else None
        return (x[keep] if keep.size >= self.codec.min_train_rows else x), queries

    def choose_codec(
        self, live_rows: np.ndarray, n_rows: int, settings: dict[str, Any]
    ) -> tuple[Codec, dict[str, Any], float]:
        """Run the tuner on a sample of the live rows; the chosen codec (fitted), the report and its fidelity."""
        # resident bytes per row besides codes: a graph's adjacency, IVF's row ids
        degree = self.index_params.get("degree", GRAPH_DEFAULTS["degree"])
        index_bytes = {IndexKind.GRAPH: 4 * degree, IndexKind.IVF: 8}.get(IndexKind(self.index_kind), 0)
        budget = bytes_per_vector(settings, int(live_rows.size), index_bytes)
        x, queries = self.training_sample(live_rows, n_rows)
        spec, report = tune(x, self.metric, budget, settings["target_recall"], queries=queries)
        report["settings"] = settings
        codec = make_codec(spec, self.dim, self.codec_metric).fit(x, queries)
        return codec, report, self.fidelity(codec, x)

    def fidelity(self, codec: Codec, x: np.ndarray) -> float:
        """``tuning.fidelity`` of a codec on up to FIDELITY_ROWS rows of a (prepared) sample."""
        pick = np.random.default_rng(1).permutation(x.shape[0])[:FIDELITY_ROWS]
        return fidelity(codec, x[np.sort(pick)], self.metric)

    # -- the index ------------------------------------------------------------------
    def index_job(self) -> IndexJob | None:
        """What building or extending the index over every sealed row reads (None: it is up to date, or there are
        too few rows yet). Rows below ``sealed`` never change while optimize()'s lock is held: the job runs off
        the store's lock."""
        cls = INDEX_KINDS[self.index_kind]
        old, sealed = self.index, self.sealed
        if cls is None or sealed == (old.rows if old else 0) or sealed < MIN_INDEX_ROWS:
            return None
        return IndexJob(cls, old, self.index_dir, self.clusters, self.live[:sealed].copy(),
                        self.vectors.view(sealed, np.float32), self.metric, self.codes.view(sealed),
                        {**self.index_params, "metric": self.codec_metric})

    def save_index(self, index: Index, clusters: TenantClusters | None) -> dict[str, Any]:
        """Write the index (and a multi-tenant collection's clusters) to a new folder; the manifest's
        ``index_state`` naming it."""
        folder = f"index-{uuid.uuid4().hex[:12]}"
        arrays = index.arrays() | (clusters.arrays() if clusters is not None else {})
        crc = save_arrays(self.path / folder, arrays)
        return {"dir": folder, "rows": index.rows, "crc": crc, "params": index.params, "arrays": sorted(arrays)}

    # -- reading --------------------------------------------------------------------
    def snapshot(self, k: int, rerank: int | None, every_row: bool) -> Snapshot:
        """What a search reads, as of now: later commits do not change it.

        every_row : no filter or tenant restricts the search, so a scan layout (if any) is all it scans.
        """
        codec, n_rows, sealed = self.codec, self.n_rows, self.sealed
        vectors, vector_file = self.vectors.view(n_rows, np.float32), self.vectors
        rerank = codec.default_rerank(k) if rerank is None else rerank
        # a large vector log is read with pread for re-ranking: faults through the mmap would map
        # 64 KiB of neighbours per candidate and inflate resident memory (measured: 1.4 GB peak at 1M)
        gather = (lambda r: vector_file.gather(r, np.float32)) if vectors.nbytes > PREAD_RERANK_BYTES else None
        layout = self.scan_layout(build=every_row)
        # with a scan layout, the stored rows are copied into memory only once a filtered search needs them
        codes = self.codes.mapped(sealed) if layout is not None and every_row else self.codes.view(sealed)
        data = ScanData(codec, codes, vectors, self.metric, 0 if codec.exact or sealed == 0 else rerank, gather)
        return Snapshot(data, self.live[:n_rows], self.index, self.n_live, layout)

    def scan_layout(self, build: bool = True) -> np.ndarray | None:
        """The codec's ``scan_layout`` of the sealed codes: kept while the collection has no index, extended by
        the rows sealed since; rebuilt for new code files (a compaction or a new codec writes new ones; sealed
        rows never change in place). None if the codec has none, or if there is none yet and not ``build``
        (searches restricted to some rows do not scan it)."""
        sealed, kept = self.sealed, self.layout
        if self.index is not None or sealed == 0:
            self.layout = None
            return None
        if not build and kept is None:
            return None
        done = None
        if kept is not None and kept.files == self.files and kept.rows <= sealed:
            if kept.rows == sealed:
                return kept.array
            done = (kept.array, kept.rows)
        assert self.files is not None
        array = self.codec.scan_layout(self.codes.mapped(sealed), done)
        self.layout = _ScanLayout(self.files, array, sealed) if array is not None else None
        return array

    @property
    def indexed_rows(self) -> int:
        """Rows the index covers (0 without one)."""
        return self.index.rows if self.index is not None else 0

    @property
    def unindexed_rows(self) -> int:
        """Rows an index collection scans flat until its index covers them (0 for a flat collection)."""
        return 0 if self.index_kind == IndexKind.FLAT else self.n_rows - self.indexed_rows

    def memory(self) -> dict[str, int]:
        """Resident bytes: ``codes`` (of sealed rows the index does not hold: an IVF index holds its rows' codes;
        without an index, a codec's scan layout of them, plus the rows once a filtered search read them),
        ``index``, ``clusters``, ``growing`` (float32 rows), ``live`` mask and ``codec`` parameters."""
        index = self.index
        own_codes = index.rows if index is not None and index.kind == IndexKind.IVF else 0
        codes = (self.sealed - own_codes) * self.codec.code_size
        if self.layout is not None:
            codes = self.layout.array.nbytes + self.codes.resident_rows * self.codec.code_size
        return {"codes": codes, "index": index.nbytes if index is not None else 0,
                "clusters": self.clusters.nbytes if self.clusters is not None else 0,
                "growing": (self.n_rows - self.sealed) * 4 * self.dim, "live": self.n_rows,
                "codec": sum(a.nbytes for a in self.codec.state().values()) if self.codec.trained else 0}

    def verify(self, db: Catalog, m: Manifest) -> None:
        """Check every checksum of the vector log, the codes and the index files; CorruptData naming the problem."""
        for table, rows in (("batches", self.vectors), ("segments", self.codes)):
            for row0, n, crc in db.ranges(table):
                if rows.crc(row0, n) != crc:
                    raise CorruptData(f"{rows.path}: checksum mismatch in rows {row0}..{row0 + n - 1}")
        state = m.index_state
        if self.index is not None and state is not None:  # the files the index was read from (or is mapped on)
            stored = load_arrays(self.path / state["dir"], state["arrays"], memory_map=True)
            if arrays_crc(stored) != state["crc"]:
                raise CorruptData(f"{self.path / state['dir']}: index checksum mismatch")

    def close(self) -> None:
        if self.files is not None:
            self.vectors.close()
            self.codes.close()
            self.files = None


def placeholder(spec: str) -> str:
    """The codec spec to hold until an "auto" collection has chosen (never trained, never encodes)."""
    return "float32" if spec == AUTO else spec


def _npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()
