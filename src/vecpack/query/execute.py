"""Run reads against one collection's store: search (snapshot, plan, ids), explain, get and count.

A search takes a snapshot of one generation (``Segments.snapshot``) and the selections of its
filter groups under the store's lock, searches off the lock, then reads its hits' ids and metadata
in a second read transaction that first checks no compaction renumbered the rows meanwhile (if one
did, by any process, it searches the new rows again).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from vecpack import tenants, validate
from vecpack.errors import Conflict, FilterWarning, InvalidInput
from vecpack.index import IndexKind
from vecpack.kernels.rowset import ascending
from vecpack.query import filters, planner
from vecpack.query.columns import Fields
from vecpack.query.planner import Plan, PlanKind
from vecpack.query.selection import Selection
from vecpack.search import ScanData, search_rows, search_subset
from vecpack.storage.segments import Snapshot
from vecpack.storage.store import Store
from vecpack.tenants import Tenants

#: searches restarted because a compaction renumbered the rows under them, before giving up
SEARCH_TRIES = 3
#: hints kept per collection handle (``Reader.hint``)
MAX_HINTS = 256
#: why each plan runs, as ``explain`` tells a tenant: in words that do not depend on the other tenants' rows
TENANT_PLANS = {
    PlanKind.NONE: "none of the tenant's rows match",
    PlanKind.EXACT: "an exact scan of the codes of the tenant's matching rows",
    PlanKind.CLUSTERS: "the tenant's rows in the shared clusters nearest the query",
    PlanKind.POSTFILTER: "a walk of the shared index keeping the tenant's matching rows",
    PlanKind.FILTERED: "a walk of the shared index through the tenant's matching rows only",
    PlanKind.SCAN: "a scan of every code, keeping the tenant's matching rows",
}


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: ``score`` is cosine similarity, inner product or L2 distance."""

    id: str
    score: float
    metadata: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Record:
    """A stored record as returned by ``Collection.get``."""

    id: str
    vector: np.ndarray
    metadata: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class SearchParams:
    """A search's checked parameters (``check``): results per query, re-rank depth (None = the codec's default),
    a graph index's beam width ``ef`` and an IVF index's ``nprobe`` (None = the index's default), and the plan
    the caller forces (None = the planner's choice)."""

    k: int = 10
    rerank: int | None = None
    ef: int | None = None
    nprobe: int | None = None
    plan: PlanKind | None = None

    @classmethod
    def check(cls, collection: str, index_kind: str, k: Any = 10, rerank: Any = None, ef: Any = None,
              nprobe: Any = None, plan: Any = None) -> SearchParams:
        """InvalidInput for a bad value, or for the ef or nprobe of an index the collection does not have."""
        k = validate.positive_int(k, "k")
        if rerank is not None:
            rerank = validate.positive_int(rerank, "rerank", low=0, high=validate.MAX_K)
        for name, value, kind in (("ef", ef, IndexKind.GRAPH), ("nprobe", nprobe, IndexKind.IVF)):
            if value is not None and index_kind != kind:
                raise InvalidInput(f"{name} applies to {kind} indexes; collection {collection!r} has index "
                                   f"{str(index_kind)!r}")
        ef = validate.positive_int(ef, "ef", high=validate.MAX_K) if ef is not None else None
        nprobe = validate.positive_int(nprobe, "nprobe", high=validate.MAX_K) if nprobe is not None else None
        if plan is not None:
            if not isinstance(plan, str) or plan not in planner.FORCIBLE:
                raise InvalidInput(f"plan must be one of {', '.join(map(str, planner.FORCIBLE))} or None, not {plan!r}")
            plan = PlanKind(plan)
        return cls(k, rerank, ef, nprobe, plan)


class Reader:
    """Reads of one collection: its store, tenants and field indexes."""

    def __init__(self, store: Store, tenants: Tenants, fields: Fields) -> None:
        self.store, self.tenants, self.fields = store, tenants, fields
        #: hints for filters that matched nothing, by (filter, tenant, data generation): a loop repeating an
        #: empty filter pays for its hint once
        self._hints: dict[tuple[Any, ...], str | None] = {}

    def hint(self, tenant_no: int | None, node: filters.Filter, selection: Selection) -> str | None:
        """Why ``node`` selected no row of the tenant's (``hints.why_empty``); None if it selected some or no
        reason is found. Store's lock held, state fresh."""
        if not selection.empty():
            return None
        seg = self.store.segments
        key = (repr(node), tenant_no, seg.files, seg.n_rows, seg.n_live)
        if key not in self._hints:
            if len(self._hints) >= MAX_HINTS:
                self._hints.clear()
            self._hints[key] = self.fields.hint(node, self.live_rows(self.select(tenant_no, None)))
        return self._hints[key]

    def select(self, tenant_no: int | None, node: filters.Filter | None, force: PlanKind | None = None) -> Selection:
        """Live rows of tenant ``tenant_no`` (None = all) passing ``node`` (None = no filter); a large tenant's come
        with its postings in the shared clusters (also a smaller one's when ``force`` is the clusters plan).
        Store's lock held, state fresh."""
        segments = self.store.segments
        n_rows, live = segments.n_rows, segments.live
        passing = None  # rows passing a single indexed condition, found without a pass over every row
        if node is not None:
            self.fields.sync()
            passing = self.fields.columns.indexed_rows(node)
        if tenant_no is None:
            if node is None:
                return Selection(n_rows)
            if passing is not None:  # its live rows, sorted on the way (``kernels.rowset``)
                return Selection(n_rows, rows=ascending(passing, n_rows, live), ordered=True)
            return Selection(n_rows, mask=self.fields.mask(node))
        owned = self.tenants.rows
        owned.sync(self.store.db, n_rows, segments.files)
        if passing is not None:  # cost grows with the filter's matches, whatever the tenant's size
            return Selection(n_rows, rows=ascending(owned.owned(tenant_no, passing), n_rows, live), ordered=True)
        every = owned.rows(tenant_no)
        clusters = segments.clusters
        large = every.size > planner.DEFAULT.exact_rows or force == PlanKind.CLUSTERS
        if node is None and clusters is not None and large:  # Curator-style
            tail = every[np.searchsorted(every, clusters.rows) :].astype(np.int64)
            return Selection(n_rows, among=every, live=live, postings=clusters.postings(tenant_no, every),
                             tail=tail[live[tail] != 0])
        rows = every[live[every] != 0]
        if node is not None:
            rows = rows[self.fields.mask(node)[rows]]
        return Selection(n_rows, rows=rows, ordered=True)

    def live_rows(self, selection: Selection) -> np.ndarray:
        """The selection's rows, ascending (every live row when it is unrestricted). Store's lock held."""
        segments = self.store.segments
        return np.flatnonzero(segments.live[: segments.n_rows]) if selection.everything else selection.rows()

    def search(
        self, q: np.ndarray, params: SearchParams, groups: list[tuple[filters.Filter | None, np.ndarray]],
        tenant: str | None,
    ) -> list[list[Hit]]:
        """The hits of prepared queries ``q``, one plan per filter group (``selection.filter_groups``)."""
        store = self.store
        # The search runs on a snapshot, off the lock. If a compaction (by any process) renumbers the rows
        # meanwhile, its row numbers no longer name the same records: search the new rows again. The ids are
        # read in one snapshot with the name of the vector log, which tells whether the numbering is still ours.
        # Without a filter or tenant, the snapshot needs the in-memory state only (``fresh``).
        plain = tenant is None and all(node is None for node, _ in groups)
        for _ in range(SEARCH_TRIES):
            with store.fresh() if plain else store.reading():
                tenant_no, files = self.tenants.resolve(tenant), store.segments.files
                selections = [self.select(tenant_no, node, params.plan) for node, _ in groups]
                snap = store.segments.snapshot(params.k, params.rerank, every_row=all(s.everything for s in selections))
                notes = [self.hint(tenant_no, node, s) for (node, _), s in zip(groups, selections, strict=True)
                         if node is not None]
            try:
                scores, rows = search_snapshot(q, params, groups, selections, snap)
            except OSError:  # this process's compaction closed the file we were reading
                if files == store.segments.files:
                    raise
                continue
            log, found = store.records_at(sorted({r for r in rows.ravel().tolist() if r >= 0}))
            if log == files[0]:
                break
        else:
            raise Conflict(f"collection {store.name!r} was compacted {SEARCH_TRIES} times during one search: retry")
        warn(notes)
        return self._hits(scores, rows, found)

    def _hits(self, scores: np.ndarray, rows: np.ndarray, found: dict[int, tuple[str, str | None]]) -> list[list[Hit]]:
        """The hits of (scores, rows), given the catalog's (key, metadata JSON) of those rows (deleted rows
        are missing from ``found`` and dropped)."""
        if self.store.settings.metric == "l2":
            scores = np.sqrt(np.maximum(-scores, 0.0))
        # one json.loads for all metadata of this call: ~10x cheaper than one per hit
        metadata = json.loads("[" + ",".join(m if m is not None else "null" for _, m in found.values()) + "]")
        public = tenants.public_id if self.tenants.multi_tenant else str
        by_row = {r: (public(key), meta) for (r, (key, _)), meta in zip(found.items(), metadata, strict=True)}
        return [[Hit(by_row[r][0], s, by_row[r][1]) for s, r in zip(srow, rrow, strict=True) if r in by_row]
                for srow, rrow in zip(scores.tolist(), rows.tolist(), strict=True)]

    def explain(self, params: SearchParams, node: filters.Filter | None, tenant: str | None) -> dict[str, Any]:
        """The plan ``search`` would run for one filter, as a dict (``Collection.explain``)."""
        store = self.store
        with store.reading():
            tenant_no = self.tenants.resolve(tenant)
            selection = self.select(tenant_no, node, params.plan)
            matches = None if selection.everything else selection.count()
            codec = store.segments.codec
            width = max(params.k, codec.default_rerank(params.k) if not codec.exact else 0)
            plan = planner.choose(matches, store.segments.n_live, width, store.segments.index, params.ef, params.nprobe,
                                  clustered=selection.postings is not None, force=params.plan)
            own = self.select(tenant_no, None).count() if tenant_no is not None else None
            paths = filters.paths(node) if node else ()
            indexed = {".".join(p): self.fields.columns.indexed(p) for p in paths}
            seg, kind = store.segments, store.settings.index
            rows = {"growing_rows": seg.n_rows - seg.sealed, "unindexed_rows": seg.unindexed_rows}
            hint = self.hint(tenant_no, node, selection) if node is not None else None
        out = plan.as_dict()
        out["plan"] = out.pop("kind")
        if own is not None:  # row counts of the whole collection are other tenants' business
            out |= {"live": own, "selectivity": plan.matches / own if own else 0.0, "ef": None, "nprobe": None,
                    "fallback": None, "reason": TENANT_PLANS[plan.kind]}
            rows = {"growing_rows": None, "unindexed_rows": None}
        return out | {"index": kind, "fields": indexed, "hint": hint} | rows

    def count(self, node: filters.Filter | None, tenant: str | None) -> int:
        with self.store.reading():
            tenant_no = self.tenants.resolve(tenant)
            selection = self.select(tenant_no, node)
            n = self.store.segments.n_live if selection.everything else selection.count()
            note = self.hint(tenant_no, node, selection) if node is not None else None
        warn([note])
        return n

    def get(self, ids: list[str] | None, node: filters.Filter | None, limit: int | None, offset: int,
            tenant: str | None) -> list[Record]:
        """Records by id (in the given order), or by filter (in insertion order); see ``Collection.get``."""
        store = self.store
        with store.reading():
            tenant_no = self.tenants.resolve(tenant)
            vectors = store.segments.vectors.view(store.segments.n_rows, np.float32)
            if ids is not None:
                keep = self.fields.mask(node) if node is not None else None
                picked = [r for r in self.tenants.records(ids, tenant_no) if keep is None or keep[r[1]]]
            else:
                selection = self.select(tenant_no, node)
                rows = self.live_rows(selection)[offset:][:limit].tolist()
                offset = 0
                picked = [(tenants.public_id(i), r, m) for r, (i, m) in sorted(store.db.records_by_row(rows).items())]
            note = self.hint(tenant_no, node, selection) if node is not None and ids is None else None
            picked = picked[offset:][:limit]
            records = [Record(i, np.array(vectors[row]), json.loads(meta) if meta is not None else None)
                       for i, row, meta in picked]
        warn([note])
        return records


def warn(notes: list[str | None]) -> None:
    """A FilterWarning per hint, pointing at the user's call (Collection method -> Reader -> here)."""
    for note in notes:
        if note is not None:
            warnings.warn(FilterWarning(f"the filter matched no record: {note}"), stacklevel=4)


def search_snapshot(
    q: np.ndarray, params: SearchParams, groups: list[tuple[Any, np.ndarray]], selections: list[Selection],
    snap: Snapshot,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows), each (m, k), of the queries, one plan per filter group."""
    k = params.k
    if len(groups) == 1:  # every query under one filter (or none): no result arrays to assemble
        return run_plan(_plan(params, selections[0], snap), q, k, selections[0], snap)
    scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
    rows = np.full((q.shape[0], k), -1, dtype=np.int64)
    for (_, picked), selection in zip(groups, selections, strict=True):
        scores[picked], rows[picked] = run_plan(_plan(params, selection, snap), q[picked], k, selection, snap)
    return scores, rows


def _plan(params: SearchParams, selection: Selection, snap: Snapshot) -> Plan:
    """The planner's plan (or the forced one) for a selection of a snapshot."""
    matches = None if selection.everything else selection.count()
    return planner.choose(matches, snap.n_live, max(params.k, snap.data.rerank), snap.index, params.ef, params.nprobe,
                          clustered=selection.postings is not None, force=params.plan)


def run_plan(plan: Plan, q: np.ndarray, k: int, selection: Selection, snap: Snapshot) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) of the selected rows of a snapshot under ``plan``.

    Queries an index or clusters plan leaves with fewer than min(k, matches) hits are answered
    again by an exact scan of the selection, so no query comes back short while k rows match.
    """
    data: ScanData = snap.data
    if plan.kind == PlanKind.NONE:
        return np.full((q.shape[0], k), -np.inf, np.float32), np.full((q.shape[0], k), -1, np.int64)
    if plan.kind == PlanKind.EXACT:
        return search_subset(q, k, selection.rows(), data)
    if plan.kind == PlanKind.CLUSTERS:
        assert selection.postings is not None
        scores, rows = selection.postings.search(q, k, selection.tail, snap.live, data)
    else:  # every live row, or the filter's bitmap (already ANDed with the live mask)
        allowed = snap.live if selection.everything else selection.mask().view(np.uint8)
        scores, rows = search_rows(q, k, data, allowed, index=snap.index if plan.kind != PlanKind.SCAN else None,
                                   ef=plan.ef, nprobe=plan.nprobe, filtered=plan.kind == PlanKind.FILTERED,
                                   fallback=plan.fallback, layout=snap.layout)
    # an index walk can fall short of k reachable rows (a beam narrower than k among many deleted rows, a
    # region the graph links poorly): such queries are answered by a scan, which cannot
    short = np.flatnonzero(np.count_nonzero(rows >= 0, axis=1) < min(k, plan.matches))
    if short.size and selection.everything:
        scores[short], rows[short] = search_rows(q[short], k, data, snap.live, layout=snap.layout)
    elif short.size:
        scores[short], rows[short] = search_subset(q[short], k, selection.rows(), data)
    return scores, rows
