"""Which rows a call may see: the live rows of its tenant (if any) that pass its filter (if any).

A ``Selection`` holds them either as ascending row numbers (a tenant's rows: cost
proportional to the tenant) or as a bitmap over every row (a filter on the whole
collection), converting on demand, because the exact plan wants rows and the
index plans want a bitmap. ``run_plan`` searches a selection under a
``planner.Plan``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vecpack import filters
from vecpack.errors import InvalidInput
from vecpack.index.base import Index
from vecpack.kernels.rowset import ascending, count_live
from vecpack.planner import Plan
from vecpack.search import ScanData, search_rows, search_subset
from vecpack.tenant_clusters import Postings


class Selection:
    """Live rows in scope, as ``rows`` (unique ints, ascending if ``ordered``), as ``mask`` (bool, one per row),
    or as the rows of ``among`` (ascending, dead ones included) that ``live`` marks, listed only on demand;
    none of them = every live row. Sorting is left to ``rows()``: an index plan only needs the mask,
    scattered from the rows."""

    def __init__(
        self, n_rows: int, *, rows: np.ndarray | None = None, mask: np.ndarray | None = None, ordered: bool = False,
        among: np.ndarray | None = None, live: np.ndarray | None = None, postings: Postings | None = None,
        tail: np.ndarray | None = None,
    ) -> None:
        self.n_rows = n_rows
        self._rows = rows
        self._mask = mask
        self._sorted = ordered
        self._among, self._live = among, live
        #: a tenant's rows grouped by shared cluster, and its live rows they do not cover (the clusters plan)
        self.postings = postings
        self.tail = tail

    @property
    def everything(self) -> bool:
        return self._rows is None and self._mask is None and self._among is None

    def count(self) -> int:
        if self._rows is not None:
            return int(self._rows.size)
        if self._among is not None:
            return int(count_live(self._among, self._live))
        return int(np.count_nonzero(self._mask))

    def rows(self) -> np.ndarray:
        """Ascending int64 rows."""
        if self._rows is None and self._among is not None:
            self._rows, self._sorted = self._among[self._live[self._among] != 0], True
        if self._rows is None:
            self._rows = np.flatnonzero(self._mask)
        elif not self._sorted:
            self._rows = ascending(self._rows, self.n_rows)
        self._sorted = True
        return self._rows.astype(np.int64, copy=False)

    def mask(self) -> np.ndarray:
        """bool (n_rows,)."""
        if self._mask is None:
            self._mask = np.zeros(self.n_rows, bool)
            self._mask[self.rows()] = True
        return self._mask


def filter_groups(where: Any, m: int, single: bool) -> list[tuple[filters.Filter | None, np.ndarray]]:
    """Queries grouped by equal filter: (parsed filter or None, query positions) per distinct filter.

    ``where`` is None, one filter for all queries, or a list of one filter (or None) per query.
    """
    if where is None or isinstance(where, dict):
        return [(filters.parse(where) if where is not None else None, np.arange(m))]
    if single or not isinstance(where, list) or len(where) != m:
        raise InvalidInput(f"where must be a dict, or a list of one filter (or None) per query: {m} queries")
    positions: dict[str, list[int]] = {}
    parsed: dict[str, filters.Filter | None] = {}
    for i, w in enumerate(where):
        try:
            key = filters.canonical(w)
            if key not in parsed:
                parsed[key] = filters.parse(w) if w is not None else None
        except InvalidInput as exc:
            raise InvalidInput(f"where[{i}]: {exc}") from exc
        positions.setdefault(key, []).append(i)
    return [(parsed[key], np.array(pos)) for key, pos in positions.items()]


def run_plan(
    plan: Plan, q: np.ndarray, k: int, selection: Selection, live: np.ndarray, index: Index | None, data: ScanData,
    layout: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) of the selected rows of ``data`` under ``plan``; ``layout`` is the codec's scan layout
    of the codes, if kept (for the plans that scan every row).

    Queries an index or clusters plan leaves with fewer than min(k, matches) hits are answered
    again by an exact scan of the selection, so no query comes back short while k rows match.
    """
    if plan.kind == "none":
        return np.full((q.shape[0], k), -np.inf, np.float32), np.full((q.shape[0], k), -1, np.int64)
    if plan.kind == "exact":
        return search_subset(q, k, selection.rows(), data)
    if plan.kind == "clusters":
        assert selection.postings is not None
        scores, rows = selection.postings.search(q, k, selection.tail, live, data)
    else:
        allow = live if selection.everything else selection.mask().view(np.uint8)
        scores, rows = search_rows(q, k, data, allow, index=index if plan.kind != "scan" else None, knob=plan.knob,
                                   filtered=plan.kind == "filtered", fallback=plan.fallback, layout=layout)
    # an index walk can fall short of k reachable rows (a beam narrower than k among many deleted rows, a
    # region the graph links poorly): such queries are answered by a scan, which cannot
    short = np.flatnonzero(np.count_nonzero(rows >= 0, axis=1) < min(k, plan.matches))
    if short.size and selection.everything:
        scores[short], rows[short] = search_rows(q[short], k, data, live, layout=layout)
    elif short.size:
        scores[short], rows[short] = search_subset(q[short], k, selection.rows(), data)
    return scores, rows
