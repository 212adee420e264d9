"""A database is a folder; each collection is a sub-folder with its own catalog and files."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vecpack import validate
from vecpack.codecs import make_codec
from vecpack.collection import DEFAULT_SEAL_ROWS, Collection
from vecpack.errors import ClosedError, Conflict, InvalidInput, NotFound
from vecpack.index import check_index
from vecpack.kernels import warm
from vecpack.storage.background import Maintainer
from vecpack.storage.files import fsync_dir
from vecpack.storage.manifest import Manifest
from vecpack.storage.segments import AUTO
from vecpack.tuning import check_settings

#: the lock a create or drop holds (shared) while it has a ``.tmp-*`` folder, and connect() (exclusive) to clean up
STAGING_LOCK = ".vecpack-staging.lock"
CATALOG = "catalog.sqlite"


def connect(
    path: str | os.PathLike[str] | None = None, *, memory_map: bool = False, maintenance: bool | None = None,
) -> Database:
    """Open (creating if missing) the database in folder ``path``; no path = a temporary database.

    A collection's codes and index arrays are read into memory when it opens (a 1M x 384 int8
    graph collection, 512 MB of them, opened and answered its first query in 0.58 s), so the
    operating system cannot drop them when they go cold.
    ``memory_map=True`` maps them from their files instead: opening costs nothing and a collection
    may exceed RAM, but pages the kernel reclaims are read from disk again by the query that
    needs them. Float32 vectors stay on disk in both modes.
    ``maintenance``: a background thread compresses, indexes and compacts each open collection's new rows a
    second after its last write (``storage.background``), so ``optimize()`` is never needed for memory or
    speed; None = on unless ``VECPACK_MAINTENANCE=0``.
    The first connect of a process starts compiling the search kernels in the background, unless a
    finished warm-up left them in numba's cache (``kernels.warm``; ``VECPACK_WARMUP=0`` turns it off).

    Examples
    --------
    >>> import vecpack
    >>> with vecpack.connect() as db:
    ...     col = db.create_collection("docs", dim=4, codec="int8")
    ...     db.list_collections()
    ['docs']
    """
    warm.start()
    return Database(path, memory_map=memory_map, maintenance=maintenance)


class Database:
    """Collections stored under one folder. Use ``connect()`` to open one."""

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, memory_map: bool = False,
        maintenance: bool | None = None,
    ) -> None:
        self.memory_map = memory_map
        self._maintainer: Maintainer | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="vecpack-") if path is None else None
        self.path = Path(self._tmp.name if self._tmp else path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._open: dict[str, Collection] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._remove_leftovers()
        if maintenance is None:
            maintenance = os.environ.get("VECPACK_MAINTENANCE", "1") != "0"
        if maintenance:  # last: a database that failed to open leaves no thread behind
            self._maintainer = Maintainer()

    @contextmanager
    def _staging(self, exclusive: bool = False) -> Iterator[bool]:
        """The database's staging lock (``flock`` on STAGING_LOCK, released by the OS if the holder dies): shared
        while a create or drop has a ``.tmp-*`` folder, exclusive (without waiting) to remove leftovers. Yields
        whether it was taken."""
        with open(self.path / STAGING_LOCK, "a+b") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _remove_leftovers(self) -> None:
        """Remove ``.tmp-*`` folders left by a create or drop cut short by a crash, unless a create or drop of any
        process is running now (its folder is not a leftover): the next connect() removes them then."""
        with self._staging(exclusive=True) as alone:
            if alone:
                for leftover in self.path.glob(".tmp-*"):
                    shutil.rmtree(leftover, ignore_errors=True)

    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str = "cosine",
        codec: str = "int8",
        *,
        seal_rows: int = DEFAULT_SEAL_ROWS,
        index: str = "flat",
        index_params: dict[str, Any] | None = None,
        memory_budget: int | str | None = None,
        bytes_per_vector: int | str | None = None,
        target_recall: float = 0.95,
        sample_queries: Any = None,
        multi_tenant: bool = False,
        exist_ok: bool = False,
    ) -> Collection:
        """Create a collection.

        Parameters
        ----------
        name : 1-64 letters, digits, '_', '-', '.'.
        dim : vector dimension.
        metric : "cosine" (default), "ip" or "l2".
        codec : compression of the searched codes (``vecpack.codecs.make_codec``): "float32",
            "float16", "bf16", "int8" (default: 4x smaller, recall@10 ~0.99 without re-ranking),
            "binary" (32x, re-ranks with float32), "pq<M>" (M bytes per vector), the other codecs
            of ``CODEC_FAMILIES``, a chain such as "pca192,int8", or "auto": chosen by
            measurement on the collection's own rows when it first seals (``vecpack.tuning``),
            to fit ``memory_budget`` or ``bytes_per_vector`` and reach ``target_recall``.
        seal_rows : growing rows that trigger automatic sealing into codes.
        index : "flat" (default: scan every code), "graph" (Vamana graph over the codes) or
            "ivf" (inverted lists). An index covers the rows sealed when ``optimize()`` last ran;
            newer rows are scanned flat until the next ``optimize()``.
        index_params : graph: degree (32), build_ef (96), alpha (1.1), insert_order ("random"
            (default) | "given" | "lid"), seed; ivf: nlist (4 sqrt(n), at most n / 39), train_rows,
            iters, seed.
        memory_budget, bytes_per_vector, target_recall : codec="auto" only: resident bytes for
            the whole collection (an int or "64MB") or code bytes per vector, and recall@10.
        sample_queries : (m, dim) queries like the ones to come: the tuner measures recall on
            them, and query-aware codecs (leanvec<d>) learn from them.
        multi_tenant : every call names a tenant (``tenant=``); tenants are isolated namespaces
            of ids and records (``vecpack.tenants``).
        exist_ok : return the existing collection instead of raising Conflict.
        """
        settings, sample_queries = _settings(
            name, dim, metric, codec, seal_rows, index, index_params, multi_tenant, sample_queries,
            {"memory_budget": memory_budget, "bytes_per_vector": bytes_per_vector, "target_recall": target_recall})
        with self._lock:
            self._check_open()
            final = self.path / settings.name
            if final.exists():
                if exist_ok and (final / CATALOG).is_file():
                    return self._get(settings.name)
                raise Conflict(_taken(settings.name, final))
            with self._staging():
                staging = self.path / f".tmp-{uuid.uuid4().hex}"
                staging.mkdir()
                try:
                    Collection.create(staging, settings, sample_queries).close()
                    fsync_dir(staging)
                    try:
                        os.rename(staging, final)  # atomic; fails if another process created it first
                    except OSError as exc:
                        raise Conflict(_taken(settings.name, final)) from exc
                    fsync_dir(self.path)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
            return self._get(settings.name)

    def get_collection(self, name: str) -> Collection:
        """The collection ``name``; raises NotFound if it does not exist."""
        name = validate.collection_name(name)
        with self._lock:
            self._check_open()
            return self._get(name)

    def _get(self, name: str) -> Collection:
        col = self._open.get(name)
        if col is None or col.closed:
            if not (self.path / name / CATALOG).is_file():
                raise NotFound(f"collection {name!r} does not exist")
            col = self._open[name] = Collection(self.path / name, memory_map=self.memory_map,
                                                maintainer=self._maintainer)
        return col

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        self._check_open()
        return sorted(
            p.name for p in self.path.iterdir() if not p.name.startswith(".") and (p / CATALOG).is_file()
        )

    def drop_collection(self, name: str) -> None:
        """Delete a collection and its files; raises NotFound if it does not exist. A folder of that name that
        holds no collection (left by hand, or by a crash of an older version) is removed too."""
        name = validate.collection_name(name)
        with self._lock:
            self._check_open()
            final = self.path / name
            if not final.is_dir():
                raise NotFound(f"collection {name!r} does not exist")
            col = self._open.pop(name, None)
            if col is not None:
                col.close()
            with self._staging():
                trash = self.path / f".tmp-{uuid.uuid4().hex}"
                os.rename(final, trash)  # atomic: the collection is gone in one step
                fsync_dir(self.path)
                shutil.rmtree(trash, ignore_errors=True)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("database is closed")

    def close(self) -> None:
        """Close every open collection (and delete a temporary database), after the background optimize in
        progress, if any, ends."""
        if self._maintainer is not None:
            self._maintainer.close()  # outside the lock: other threads' get_collection is not held up meanwhile
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for col in self._open.values():
                col.close()
            self._open.clear()
            if self._tmp is not None:
                self._tmp.cleanup()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"


def _taken(name: str, folder: Path) -> str:
    if (folder / CATALOG).is_file():
        return f"collection {name!r} already exists"
    return f"{folder.name!r} is a folder that holds no collection: drop_collection({name!r}) removes it"


def _settings(
    name: Any, dim: Any, metric: Any, codec: Any, seal_rows: Any, index: Any, index_params: Any, multi_tenant: Any,
    sample_queries: Any, tuning: dict[str, Any],
) -> tuple[Manifest, np.ndarray | None]:
    """The checked settings and sample queries of a new collection (``Database.create_collection``'s arguments);
    ``tuning``: the memory_budget, bytes_per_vector and target_recall of codec "auto"."""
    name, dim, metric = validate.collection_name(name), validate.dimension(dim), validate.metric(metric)
    codec_metric = "l2" if metric == "l2" else "ip"
    if codec == AUTO:
        settings = check_settings(tuning)
    elif tuning["memory_budget"] is not None or tuning["bytes_per_vector"] is not None:
        raise InvalidInput("memory_budget / bytes_per_vector apply to codec='auto' only")
    else:
        settings, codec = None, make_codec(codec, dim, codec_metric).spec  # raises UnknownSpec early
    if sample_queries is not None:
        sample_queries = validate.vectors(sample_queries, dim, metric=metric)
    seal_rows = validate.positive_int(seal_rows, "seal_rows", high=1 << 30)
    if not isinstance(multi_tenant, bool):
        raise InvalidInput(f"multi_tenant must be True or False, got {multi_tenant!r}")
    index, index_params = check_index(index, index_params, codec_metric)
    return Manifest(name, dim, metric, seal_rows, index=index, index_params=index_params, multi_tenant=multi_tenant,
                    tuning=settings, codec=codec), sample_queries
