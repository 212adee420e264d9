"""Which rows a call may see: the live rows of its tenant (if any) that pass its filter (if any).

A ``Selection`` holds them either as ascending row numbers (a tenant's rows: cost
proportional to the tenant) or as a bitmap over every row (a filter on the whole
collection), converting on demand, because the exact plan wants rows and the
index plans want a bitmap. ``execute.run_plan`` searches a selection under a
``planner.Plan``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vecpack.errors import InvalidInput
from vecpack.index.tenant_clusters import Postings
from vecpack.kernels.rowset import ascending, count_live
from vecpack.query import filters


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

    def empty(self) -> bool:
        """No row in scope (a restriction that passes none; an unrestricted selection is never empty)."""
        if self._rows is not None:
            return self._rows.size == 0
        if self._among is not None:
            return self.count() == 0
        return self._mask is not None and not self._mask.any()

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

