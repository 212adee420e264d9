"""Filtered search plans: which way to search rows that pass a filter, from its selectivity.

The filter is evaluated first (``columns.FieldColumns.mask``), so the plan knows
exactly how many live rows match; it then picks the cheapest way that keeps recall:

* ``exact`` -- few matches (or fewer than ``post_rows_per_ef`` per unit of the beam a
  post-filter would need, ``rows_per_ef`` per unit of a filtered walk's): scan the codes of
  just those rows (then re-rank). Cost grows with the matches, not the collection, and
  recall is the flat scan's.
* ``postfilter`` -- a graph index: walk it as usual with the beam (ef) widened to
  max(ef / sqrt(s), post_depth * width / s), so that it is expected to meet post_depth
  times the rows asked for among the matches, and keep the matching rows. Where the
  filter is correlated with the vectors it can pass few rows near a query: a query whose
  beam met fewer than max(width, half the expected) matches is searched again by the
  ``filtered`` walk. Chosen while that beam is at most ``post_beam`` times the filtered
  walk's (a walk that scores every row it reaches costs a third to a fifth of ACORN's per
  unit of beam); an IVF index post-filters at s >= ``postfilter_fraction``.
* ``filtered`` -- the graph walks only through matching rows, reaching past
  non-matching neighbours by two hops (ACORN-1), from the matching seed rows, with ef
  widened by 1/selectivity^``ef_exponent``; an IVF index scans its lists checking the
  filter bitmap, with nprobe scaled up by 1/sqrt(selectivity).
* ``clusters`` -- a large tenant of a multi-tenant collection (no filter): scan its own
  rows in the shared clusters nearest the query (``index.tenant_clusters``, Curator-style).

Whatever the plan, a query left with fewer than min(k, matches) hits is answered
again by ``exact``, so a search never returns fewer than k hits when k rows match.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from vecpack.errors import InvalidInput
from vecpack.index.base import Index


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The measured costs behind the planner's choices (``DEFAULT``); a test or a benchmark may plan with others."""

    #: at most this many matching rows are always scanned exactly: on 50k sentences (int8, 384-d, one query) an
    #: exact scan of 2,500 / 5,000 matches took 0.62 / 0.76 ms against 0.77 / 0.69 ms for the filtered graph
    #: walk at ef 64, with higher recall (0.994 / 0.996 against 0.984 / 0.992)
    exact_rows: int = 4_096
    #: ... and so are matches below this fraction of the live rows (two-hop traversal degrades below a few %)
    exact_fraction: float = 0.01
    #: a filtered graph walk widens its beam to ef / s^ef_exponent: on 1M synthetic rows, a filter passing 11% of
    #: the rows as whole k-means clusters (away from the query) gave recall@10 0.80 / 0.90 / 0.95 / 0.97 at ef
    #: 64 / 128 / 256 / 512, while the same share of uncorrelated rows gave 0.97 at ef 64
    ef_exponent: float = 0.75
    #: ... and the matches are scanned exactly instead when there are at most this many per unit of that beam:
    #: on the same 1M rows an exact scan cost about 0.2 us per matching row, the walk about 22 us per unit of ef
    rows_per_ef: float = 100
    #: ... or per unit of a post-filtering beam, a plain walk: 3.7 - 4.8 us per unit of ef at ef 256 - 64 on the
    #: same rows (ann_synthetic_1000000_384)
    post_rows_per_ef: float = 25
    #: an IVF index post-filters filters passing at least this fraction of rows (its filtered scan differs only
    #: in name)
    postfilter_fraction: float = 0.5
    #: a post-filtering beam aims at this many times the rows asked for among its matches: at 1.5x - 2x on
    #: 200k synthetic rows, queries whose beam met 10-20 matches for k = 10 kept 0.97 - 0.98 of the true top
    #: 10 (uncorrelated filter), those that met fewer 0.1 - 0.7
    post_depth: float = 2.0
    #: ... and is tried first while it is at most this many times the filtered walk's beam: on the same rows
    #: the walk cost 3 - 5x as much per unit of beam (ACORN's two hops), so at 2x a query sent on to the walk
    #: costs at most 1.4 - 1.7x the walk alone, and one the post-filter answers 1.5 - 5x less
    post_beam: float = 2.0
    #: a flat collection scans a gathered subset below this fraction, else the whole codes with the bitmap
    flat_subset_fraction: float = 0.3


DEFAULT = Thresholds()


class PlanKind(StrEnum):
    """How a search runs (``Plan.kind``; ``explain()["plan"]``)."""

    ALL = "all"  # no filter: the index (or flat scan) over every live row
    NONE = "none"  # no live row matches
    EXACT = "exact"  # an exact scan of the matching rows' codes
    SCAN = "scan"  # every code scanned without an index, non-matching rows skipped
    CLUSTERS = "clusters"  # a large tenant's rows in the shared clusters nearest the query
    POSTFILTER = "postfilter"  # the index searched as usual (wider), non-matching rows dropped
    FILTERED = "filtered"  # the index searched through matching rows only


@dataclass(frozen=True, slots=True)
class Plan:
    """How one filtered search runs (what ``Collection.explain`` returns, as a dict)."""

    kind: PlanKind
    matches: int  # live rows passing the filter
    live: int  # live rows
    reason: str
    ef: int | None = None  # the beam width a graph search uses (None: no graph search, or its default)
    nprobe: int | None = None  # the lists an IVF search scans (None: no IVF search, or its default)
    #: post-filtering a graph: (min matches a query's beam must meet, ef of the filtered walk for those that do not)
    fallback: tuple[int, int] | None = None

    @property
    def selectivity(self) -> float:
        return self.matches / self.live if self.live else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"kind": str(self.kind), "selectivity": self.selectivity}


#: the plans a caller may force (``Collection.search(plan=...)``); "all" and "none" follow from the filter
FORCIBLE = (PlanKind.EXACT, PlanKind.SCAN, PlanKind.FILTERED, PlanKind.POSTFILTER, PlanKind.CLUSTERS)


def choose(
    matches: int | None, live: int, width: int, index: Index | None, ef: int | None = None,
    nprobe: int | None = None, *, clustered: bool = False, force: PlanKind | None = None,
    thresholds: Thresholds = DEFAULT,
) -> Plan:
    """The plan for a search of ``width`` candidates (max(k, rerank)) when ``matches`` of ``live`` rows pass
    the filter (None = no filter).

    ``ef`` / ``nprobe``: the user's, for a graph / an IVF index (None = the index default, which a filtered
    plan may widen). ``clustered``: the matches are a tenant's rows with postings in the shared clusters
    (``index.tenant_clusters``). ``force``: run this plan (one of FORCIBLE) rather than the cheapest, as a
    user checking recall or a benchmark comparing plans would; InvalidInput where it cannot run (an index plan
    without an index or a filter, clusters without a tenant's postings). No live match is always "none".
    """
    t = thresholds
    if force is not None:
        _check_forced(force, matches, index, clustered)
    if matches == 0:
        return Plan(PlanKind.NONE, 0, live, "no live row matches the filter")
    if force in (PlanKind.EXACT, PlanKind.SCAN) or index is None or not index.rows:
        return _flat(matches, live, force, t)
    ivf = index.search_param == "nprobe"
    given = nprobe if ivf else ef

    def plan(kind: PlanKind, reason: str, value: int | None = None, fallback: tuple[int, int] | None = None) -> Plan:
        """A plan that searches the index with ``value`` as its ef or nprobe."""
        return Plan(kind, matches or 0, live, reason, None if ivf else value, value if ivf else None, fallback)

    if matches is None:
        return Plan(PlanKind.ALL, live, live, "no filter", None if ivf else given, given if ivf else None)
    # ``effort``: the index's own parameter (ef or nprobe), which a filter widens below
    effort = index.default_search_param(width) if given is None else given
    s = matches / live
    if force == PlanKind.CLUSTERS or (force is None and clustered and matches > t.exact_rows):
        return plan(PlanKind.CLUSTERS, f"a tenant of {matches} rows: scan its rows in the shared clusters nearest "
                    "the query (its own postings)")
    if force is None and (matches <= t.exact_rows or s < t.exact_fraction):
        return plan(PlanKind.EXACT, f"{matches} matching rows (<= {t.exact_rows} or < {t.exact_fraction:.0%}): an "
                    "exact scan of their codes is cheapest")
    if ivf:
        effort = math.ceil(effort / math.sqrt(s))
        if force == PlanKind.FILTERED or (force is None and s < t.postfilter_fraction):
            return plan(PlanKind.FILTERED, f"{s:.1%} match: scan the nearest IVF lists' matching rows", effort)
        return plan(PlanKind.POSTFILTER, f"{s:.1%} match: scan the nearest IVF lists with nprobe widened by "
                    f"1/sqrt({s:.2f}), drop non-matching rows", effort)
    walk = math.ceil(effort / s**t.ef_exponent)
    post = math.ceil(max(effort / math.sqrt(s), t.post_depth * width / s))
    post_first = force == PlanKind.POSTFILTER or (force is None and post <= t.post_beam * walk)
    if post_first:
        cost, how = t.post_rows_per_ef * post, f"a walk with ef {post} that keeps matching rows"
    else:
        cost, how = t.rows_per_ef * walk, f"a filtered walk with ef {walk} (ef / {s:.3f}^{t.ef_exponent})"
    if force is None and matches <= cost:
        return plan(PlanKind.EXACT, f"{matches} matching rows: scanning them costs less than {how}")
    if post_first:
        min_live = max(width, math.ceil(s * post / 2))
        return plan(PlanKind.POSTFILTER, f"{s:.1%} match: walk the {index.kind} index with ef {post}, keep matching "
                    f"rows; a query meeting fewer than {min_live} walks matching rows only (ef {walk})", post,
                    (min_live, walk))
    return plan(PlanKind.FILTERED, f"{s:.1%} match: walk the {index.kind} index through matching rows only "
                f"(ef {walk})", walk)


def _check_forced(force: PlanKind, matches: int | None, index: Index | None, clustered: bool) -> None:
    """InvalidInput unless ``force`` can run here."""
    if force not in FORCIBLE:
        raise InvalidInput(f"plan must be one of {', '.join(map(str, FORCIBLE))}, not {str(force)!r}")
    if force in (PlanKind.FILTERED, PlanKind.POSTFILTER):
        if index is None or not index.rows:
            raise InvalidInput(f"plan {str(force)!r} searches the index, and this collection has none holding rows "
                               "yet (optimize() builds it once enough rows are sealed); plans 'exact' and 'scan' "
                               "search without one")
        if matches is None:
            raise InvalidInput(f"plan {str(force)!r} searches through the rows a filter or a tenant selects: give "
                               "where= or tenant=")
    if force == PlanKind.CLUSTERS and not clustered:
        raise InvalidInput("plan 'clusters' needs a tenant of a multi-tenant collection whose rows are clustered "
                           "(an optimized index), searched without a filter")


def _flat(matches: int | None, live: int, force: PlanKind | None, t: Thresholds) -> Plan:
    """The plan without an index (or with an empty one, or forced not to use it)."""
    if matches is None:
        if force is not None:
            return Plan(PlanKind.SCAN, live, live, f"plan {str(force)!r} forced: scan every code")
        return Plan(PlanKind.ALL, live, live, "no filter")
    s = matches / live
    if force == PlanKind.EXACT or (force is None and s < t.flat_subset_fraction):
        why = "plan 'exact' forced" if force else f"flat collection, {s:.1%} < {t.flat_subset_fraction:.0%} match"
        return Plan(PlanKind.EXACT, matches, live, f"{why}: scan only the matching rows' codes")
    why = "plan 'scan' forced" if force else "flat collection"
    return Plan(PlanKind.SCAN, matches, live, f"{why}: scan every code, skipping rows that do not match")
