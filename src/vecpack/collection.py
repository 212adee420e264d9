"""A collection: ids + float32 vectors + JSON metadata, searched through compressed codes.

``Collection`` is the public API: it checks every argument (``validate``), then runs the
call in a transaction of its store and delegates. The pieces, each in its own module:

- ``storage.store``: the catalog connections, the locks, read and write transactions;
- ``storage.segments``: the row files, codec, live mask and index (sealing, re-encoding,
  compaction); ``storage.maintenance``: ``optimize()`` and ``retune()``;
- ``query.execute``: search, explain, get and count over one consistent snapshot;
- ``tenants.Tenants`` (``col.tenants``) and ``query.columns.Fields`` (``col.fields``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from vecpack import tenants, validate
from vecpack.errors import Conflict, CorruptData, InvalidInput
from vecpack.index import IndexKind
from vecpack.query import filters
from vecpack.query.columns import Fields
from vecpack.query.execute import Hit, Reader, Record, SearchParams
from vecpack.query.selection import filter_groups
from vecpack.search import prepare
from vecpack.storage import background, maintenance
from vecpack.storage.background import Maintainer
from vecpack.storage.catalog import Catalog
from vecpack.storage.manifest import Manifest
from vecpack.storage.segments import AUTO, Segments
from vecpack.storage.store import Store

__all__ = ["AUTO", "DEFAULT_SEAL_ROWS", "Collection", "Hit", "Record"]

DEFAULT_SEAL_ROWS = 16384


class Collection:
    """A durable set of (id, vector, metadata) records with compressed search.

    Open collections through ``Database.create_collection`` / ``get_collection``.
    Every write is atomic and durable when the call returns.
    """

    def __init__(self, path: Path, *, memory_map: bool = False, maintainer: Maintainer | None = None) -> None:
        """Open the collection in folder ``path``; ``memory_map`` as in ``vecpack.connect``; ``maintainer``: the
        database's background maintenance, which then looks after this collection."""
        self.path = Path(path)
        self.memory_map = memory_map
        self._store = Store(self.path, memory_map=memory_map)
        self._maintained = maintainer is not None
        if maintainer is not None:
            maintainer.watch(self._store)
        settings = self._store.settings
        self.name, self.dim, self.metric = settings.name, settings.dim, settings.metric
        self.seal_rows, self.index_params = settings.seal_rows, settings.index_params
        self.index_kind = IndexKind(settings.index)
        self.multi_tenant = settings.multi_tenant
        #: the collection's tenants (``create`` / ``drop`` / ``list`` / ``set_active``)
        self.tenants = tenants.Tenants(self._store)
        #: the collection's field indexes (``create`` / ``drop`` / ``list``)
        self.fields = Fields(self._store)
        self._reader = Reader(self._store, self.tenants, self.fields)

    @classmethod
    def create(cls, path: Path, settings: Manifest, sample_queries: np.ndarray | None = None) -> Collection:
        """Write a new, empty collection into the (new, empty) folder ``path`` and open it. ``settings`` and
        ``sample_queries`` must already be checked (``Database.create_collection``)."""
        Segments.create(path, settings.dim, settings.metric, settings.codec, sample_queries)
        Catalog(path / "catalog.sqlite", create=True, meta=asdict(settings)).close()
        return cls(path)

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
        self._put(ids, vectors, metadata, tenant, replace=False)

    def upsert(self, ids: Any, vectors: Any, metadata: Any = None, *, tenant: str | None = None) -> None:
        """Insert records, replacing the vector and metadata of ids that already exist."""
        self._put(ids, vectors, metadata, tenant, replace=True)

    def _put(self, ids: Any, vectors: Any, metadata: Any, tenant: str | None, replace: bool) -> None:
        ids = validate.ids(ids)
        x = validate.vectors(vectors, self.dim, len(ids), metric=self.metric)
        meta = validate.metadata(metadata, len(ids))
        store = self._store
        with store.write():
            keys = self.tenants.keys(ids, self.tenants.resolve(tenant, create=True))
            existing = store.db.rows_of(keys)
            if existing and not replace:
                taken = sorted(tenants.public_id(key) for key in existing)
                raise Conflict(f"ids already exist: {taken[:5]} (use upsert to replace)")
            if existing:
                store.delete_rows(list(existing.values()))
            store.append(keys, x, meta)
        maintenance.seal_if_due(store)

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
        store = self._store
        with store.write(), store.lock:  # lock: the selection extends the shared field columns
            tenant_no = self.tenants.resolve(tenant)
            if ids is not None:
                rows = np.array([row for _, row, _ in self.tenants.records(ids, tenant_no)], dtype=np.int64)
                if node is not None:
                    rows = rows[self.fields.mask(node)[rows]]
            else:
                rows = self._reader.live_rows(self._reader.select(tenant_no, node))
            store.delete_rows(rows.tolist())
        return int(rows.size)

    def optimize(self, *, compact: bool | None = None) -> None:
        """Seal growing rows, bring the index up to date, and compact away deleted rows.

        Parameters
        ----------
        compact : True = always compact, False = never, None (default) = when at least 10% of the rows are
            deleted (``maintenance.COMPACT_FRACTION``). Compaction rewrites the vector log, codes and index
            without deleted rows, reclaiming disk and memory, and repairs the graph; writes wait while it runs.

        Searches keep using the previous index while a new one is built; the switch is one catalog commit. A
        crash at any point leaves the previous state serving. Right after an install, background maintenance
        builds the index once its kernels compiled (``background.index_now``; searches scan exactly meanwhile).
        """
        maintenance.optimize(self._store, compact, index=not self._maintained or background.index_now(self._store))

    def tuning_report(self) -> dict[str, Any] | None:
        """How ``codec="auto"`` (or ``retune()``) chose the codec: every candidate measured, the choice and
        why; None before the first choice (an auto collection chooses when it first seals)."""
        with self._store.reading():
            return self._store.manifest().tuning_report

    def retune(
        self, *, memory_budget: int | str | None = None, bytes_per_vector: int | str | None = None,
        target_recall: float | None = None,
    ) -> dict[str, Any]:
        """Choose the codec again on the current rows (settings default to the stored ones); returns the report.

        If the choice differs from the current codec, every sealed row is re-encoded into new files and
        the index dropped (rebuilt by the next ``optimize()``), all in one commit; searches use the old
        codes until then.
        """
        return maintenance.retune(self._store, {"memory_budget": memory_budget, "bytes_per_vector": bytes_per_vector,
                                                "target_recall": target_recall})

    # -- reads ------------------------------------------------------------------------
    def search(
        self, q: Any, k: int = 10, *, where: dict[str, Any] | list[dict[str, Any] | None] | None = None,
        rerank: int | None = None, ef: int | None = None, nprobe: int | None = None, tenant: str | None = None,
        plan: str | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """Nearest records to the query/queries, best first.

        Parameters
        ----------
        q : (dim,) for one query, or (m, dim) for a batch.
        k : results per query.
        where : a metadata filter (``vecpack.query.filters``) for every query, or for a batch one
            filter (or None) per query; queries with equal filters are searched together.
            The plan (exact scan of the matches, filtered index search, or post-filter) follows
            the filter's selectivity (``explain``); at least k hits come back whenever k rows match.
        rerank : candidates re-scored with the float32 vectors; None = the codec's
            default (0 for float32, float16 and int8; max(10k, 100) for binary and PQ); 0 = off.
        ef : graph index only: beam width (default max(64, k, rerank)); larger = better recall, slower.
        nprobe : IVF index only: lists scanned per query (default 3 sqrt(nlist), at least 8).
        plan : run this plan, not the planner's choice (to check recall, compare plans): "exact" / "scan"
            (no index), "filtered" / "postfilter" (the index, with a filter or tenant), "clusters" (a tenant).

        Returns
        -------
        list[Hit] for a 1-D query, else one list per query. Scores: cosine
        similarity, inner product (descending) or L2 distance (ascending).
        """
        q, single = validate.queries(q, self.dim, metric=self.metric)
        params = SearchParams.check(self.name, self.index_kind, k, rerank, ef, nprobe, plan)
        groups = filter_groups(where, q.shape[0], single)
        results = self._reader.search(prepare(q, self.metric), params, groups, tenant)
        return results[0] if single else results

    def explain(
        self, k: int = 10, *, where: dict[str, Any] | None = None, ef: int | None = None, nprobe: int | None = None,
        tenant: str | None = None, plan: str | None = None,
    ) -> dict[str, Any]:
        """How ``search(q, k, where=..., ef=..., nprobe=..., plan=...)`` would run: the plan, matching rows,
        selectivity, why.

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
        params = SearchParams.check(self.name, self.index_kind, k, None, ef, nprobe, plan)
        node = filters.parse(where) if where is not None else None
        return self._reader.explain(params, node, tenant)

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
        return self._reader.get(ids, node, limit, offset, tenant)

    def count(self, where: dict[str, Any] | None = None, *, tenant: str | None = None) -> int:
        """Live records (of the tenant), or those passing the filter ``where``."""
        return self._reader.count(filters.parse(where) if where is not None else None, tenant)

    def __contains__(self, id: object) -> bool:
        """True if a record with this id (str or int) exists (not for multi-tenant collections: use get)."""
        key = validate.ids([id])[0]
        if self.multi_tenant:
            raise InvalidInput(f"collection {self.name!r} is multi-tenant: use get(ids=..., tenant=...)")
        with self._store.reading():
            return bool(self._store.db.rows_of([key]))

    def __len__(self) -> int:
        with self._store.reading():
            return self._store.segments.n_live

    # -- tenants and field indexes (``col.tenants``, ``col.fields``) ---------------------------------
    def create_tenant(self, name: str) -> None:
        """Register a tenant (``add`` / ``upsert`` also create theirs); Conflict if it exists."""
        self.tenants.create(name)

    def drop_tenant(self, name: str) -> int:
        """Delete a tenant and all its records in one transaction; returns how many records went."""
        return self.tenants.drop(name)

    def list_tenants(self) -> list[dict[str, Any]]:
        """Every tenant: ``{"name": ..., "active": bool}``, by name."""
        return self.tenants.list()

    def deactivate_tenant(self, name: str) -> None:
        """Offload a tenant: its in-memory row list and postings are dropped and its calls are refused until
        ``activate_tenant``; its records stay on disk."""
        self.tenants.set_active(name, False)

    def activate_tenant(self, name: str) -> None:
        self.tenants.set_active(name, True)

    def create_field_index(self, field: str) -> None:
        """Index a metadata field (dotted path for nested fields) so filters on it cost milliseconds.

        The index is a typed column in memory, built now from the stored records and
        extended as rows are added; its name is kept in the catalog. Filters work on
        fields without one too, reading the field from every record per call.
        Creating an index that exists does nothing.
        """
        self.fields.create(field)

    def drop_field_index(self, field: str) -> None:
        """Remove a field index; NotFound if there is none on ``field``."""
        self.fields.drop(field)

    def field_indexes(self) -> list[str]:
        """The indexed metadata fields."""
        return self.fields.list()

    # -- state --------------------------------------------------------------------------
    @property
    def maintenance_failures(self) -> int:
        """Seals after committed writes that failed since this handle opened (the writes stand; ``stats()`` shows
        the last error until a seal succeeds)."""
        return self._store.maintenance_failures

    def stats(self) -> dict[str, Any]:
        """Counts and sizes.

        ``memory_bytes`` is what search keeps resident: the index, codes of the sealed rows it does not hold
        (an IVF index holds its rows' codes; a graph reads the collection's; without an index, a codec's scan
        layout of them, plus the rows once a filtered search read them), float32 rows of the growing segment,
        the live mask, codec parameters, field index columns, tenant row lists, shared clusters and postings
        (``field_index_bytes``, ``tenant_bytes``). ``disk_bytes``: the folder's allocated blocks.
        ``growing_rows``: rows not yet compressed (float32, scanned exactly); ``unindexed_rows``: rows an index
        collection scans flat until its index covers them (0 for a flat collection); ``maintenance_due``:
        ``optimize()`` has such work (or deleted rows to compact), which background maintenance does a second
        after the last write; ``maintenance_error`` / ``_failures``: the last failure of sealing after a write or
        of background maintenance (None once one succeeds), and how many. ``scan_layout_rows`` /
        ``clustered_rows``: rows the codec's scan layout / a multi-tenant index's shared clustering covers.
        """
        store = self._store
        with store.reading():
            seg = store.segments
            memory = seg.memory()
            tenant_bytes = self.tenants.rows.nbytes + memory["clusters"]
            return {
                "name": self.name, "n": seg.n_live, "dim": self.dim, "metric": self.metric,
                "codec": store.manifest().codec, "bytes_per_vector": seg.codec.code_size,
                "compression_ratio": 4 * self.dim / seg.codec.code_size,
                "rows": seg.n_rows, "sealed_rows": seg.sealed, "growing_rows": seg.n_rows - seg.sealed,
                "deleted_rows": seg.n_rows - seg.n_live,
                "index": str(self.index_kind), "indexed_rows": seg.indexed_rows,
                "unindexed_rows": seg.unindexed_rows,
                "index_bytes": memory["index"], "field_index_bytes": self.fields.columns.nbytes,
                "tenant_bytes": tenant_bytes,
                "memory_bytes": sum(memory.values()) + self.fields.columns.nbytes + self.tenants.rows.nbytes,
                "scan_layout_rows": seg.layout.rows if seg.layout is not None else 0,
                "clustered_rows": seg.clusters.rows if seg.clusters is not None else 0,
                "disk_bytes": sum(f.stat().st_blocks * 512 for f in self.path.rglob("*") if f.is_file()),
                "maintenance_due": background.due(store),
                "maintenance_error": store.maintenance_error,
                "maintenance_failures": store.maintenance_failures,
            }

    def verify(self) -> None:
        """Check the catalog (SQLite's integrity check, and its records against its counters and the row files) and
        every checksum of the vector log, the codes and the index files; raises CorruptData naming the problem."""
        store = self._store
        with store.reading():
            catalog, db, seg = self.path / "catalog.sqlite", store.db, store.segments
            problems = db.integrity_problems()
            if problems:
                raise CorruptData(f"{catalog}: damaged ({'; '.join(problems[:3])})")
            problems = db.consistency_problems(seg.n_rows, seg.sealed, self.multi_tenant)
            if problems or db.count() != seg.n_live:
                raise CorruptData(f"{catalog}: inconsistent ({'; '.join(problems) or 'live count changed'})")
            seg.verify(db, store.manifest())

    def close(self) -> None:
        self._store.close()

    @property
    def closed(self) -> bool:
        return self._store.closed

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        codec = self._store.segments.codec.spec
        return f"Collection({self.name!r}, dim={self.dim}, metric={self.metric!r}, codec={codec!r})"
