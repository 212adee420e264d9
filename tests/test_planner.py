"""planner.choose on its own, with stand-in indexes: every branch, with the numbers computed from its default
thresholds, Plan's selectivity and dict form, and a property test over any selectivity, width and knob."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecpack.errors import InvalidInput
from vecpack.query.planner import DEFAULT, Plan, PlanKind, Thresholds, choose

# the thresholds every test here plans with (``choose``'s default)
EF_EXPONENT, EXACT_FRACTION, EXACT_ROWS = DEFAULT.ef_exponent, DEFAULT.exact_fraction, DEFAULT.exact_rows
FLAT_SUBSET_FRACTION, POST_BEAM, POST_DEPTH = DEFAULT.flat_subset_fraction, DEFAULT.post_beam, DEFAULT.post_depth
POST_ROWS_PER_EF, POSTFILTER_FRACTION = DEFAULT.post_rows_per_ef, DEFAULT.postfilter_fraction
ROWS_PER_EF = DEFAULT.rows_per_ef

KINDS = {"all", "exact", "filtered", "clusters", "postfilter", "scan", "none"}
assert KINDS == {str(k) for k in PlanKind}
NO_KNOB_KINDS = {"exact", "none", "scan", "clusters"}
IVF_DEFAULT = 12


class StubIndex:
    """What choose reads of an index: ``kind``, ``search_param``, ``rows`` and ``default_search_param``."""

    def __init__(self, kind: str, search_param: str, rows: int) -> None:
        self.kind, self.search_param, self.rows = kind, search_param, rows

    def default_search_param(self, k_out: int) -> int:
        return max(64, k_out) if self.search_param == "ef" else IVF_DEFAULT  # as GraphIndex; a fixed nprobe for IVF


@pytest.fixture
def graph() -> StubIndex:
    return StubIndex("graph", "ef", rows=1_000)


@pytest.fixture
def ivf() -> StubIndex:
    return StubIndex("ivf", "nprobe", rows=1_000)


def make_index(name: str) -> StubIndex | None:
    return {"none": None, "empty": StubIndex("graph", "ef", rows=0), "graph": StubIndex("graph", "ef", rows=1_000),
            "ivf": StubIndex("ivf", "nprobe", rows=1_000)}[name]


def walk_ef(ef: int, s: float) -> int:
    """The filtered walk's beam."""
    return math.ceil(ef / s**EF_EXPONENT)


def post_ef(ef: int, width: int, s: float) -> int:
    """The post-filtering walk's beam."""
    return math.ceil(max(ef / math.sqrt(s), POST_DEPTH * width / s))


def indexed_range(matches: int, live: int) -> None:
    """Preconditions of the index branches: neither few matches nor a small fraction."""
    assert matches > EXACT_ROWS and matches / live >= EXACT_FRACTION


def plan_for(matches, live, width, index, knob, **kw):
    """``choose`` with the user's ``knob`` given as the index's own parameter (ef for a graph, nprobe for IVF)."""
    if index is not None and index.search_param == "nprobe":
        return choose(matches, live, width, index, nprobe=knob, **kw)
    return choose(matches, live, width, index, ef=knob, **kw)


def knob_of(plan):
    """The ef or nprobe a plan sets (a plan never sets both)."""
    assert plan.ef is None or plan.nprobe is None
    return plan.ef if plan.ef is not None else plan.nprobe


# -- no filter, no match, no index --------------------------------------------------------------------------
def test_no_filter_plans_all_with_the_given_knob(graph, ivf):
    plan = plan_for(None, 1_000, 10, None, None)
    assert (plan.kind, plan.matches, plan.live, knob_of(plan), plan.fallback) == ("all", 1_000, 1_000, None, None)
    assert knob_of(plan_for(None, 1_000, 10, None, 77)) is None  # no index: no knob
    assert knob_of(plan_for(None, 1_000, 10, StubIndex("graph", "ef", rows=0), 77)) is None  # an empty index is none
    assert knob_of(plan_for(None, 1_000, 10, graph, 77)) == 77
    assert knob_of(plan_for(None, 1_000, 10, ivf, 5)) == 5
    # no knob given: the plan leaves it to the index, which picks its default for the search's own width
    assert knob_of(plan_for(None, 1_000, 10, graph, None)) is None
    assert plan_for(None, 1_000, 10, graph, None, clustered=True).kind == "all"


@pytest.mark.parametrize("index", ["none", "empty", "graph", "ivf"])
@pytest.mark.parametrize("clustered", [False, True])
def test_no_match_plans_none(index, clustered):
    plan = plan_for(0, 1_000_000, 10, make_index(index), 50, clustered=clustered)
    assert (plan.kind, plan.matches, plan.live, knob_of(plan), plan.fallback) == ("none", 0, 1_000_000, None, None)


@pytest.mark.parametrize("index", ["none", "empty"])
@pytest.mark.parametrize("clustered", [False, True])
def test_flat_collection_scans_a_subset_below_the_fraction_else_everything(index, clustered):
    live = 100 * EXACT_ROWS
    at = math.ceil(FLAT_SUBSET_FRACTION * live)
    assert (at - 1) / live < FLAT_SUBSET_FRACTION <= at / live and at - 1 > EXACT_ROWS
    for matches, kind in [(1, "exact"), (at - 1, "exact"), (at, "scan"), (live, "scan")]:
        plan = plan_for(matches, live, 10, make_index(index), 64, clustered=clustered)
        assert (plan.kind, plan.matches, plan.live, knob_of(plan)) == (kind, matches, live, None), matches


# -- clusters and exact ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["graph", "ivf"])
def test_clustered_tenant_above_exact_rows_scans_its_clusters(name):
    index = make_index(name)
    for live in (EXACT_ROWS + 1, 10**9):  # a tenant the whole collection, or a tiny share of it
        plan = plan_for(EXACT_ROWS + 1, live, 10, index, 64, clustered=True)
        assert (plan.kind, knob_of(plan), plan.fallback) == ("clusters", None, None)
    assert plan_for(EXACT_ROWS, EXACT_ROWS, 10, index, 64, clustered=True).kind == "exact"
    assert plan_for(EXACT_ROWS + 1, EXACT_ROWS + 1, 10, index, 64).kind != "clusters"


@pytest.mark.parametrize("name", ["graph", "ivf"])
def test_few_matches_are_scanned_exactly(name):
    index = make_index(name)
    for matches in (1, EXACT_ROWS // 2, EXACT_ROWS):
        plan = plan_for(matches, matches, 10, index, 64)  # every row matches, but there are few
        assert (plan.kind, plan.matches, knob_of(plan), plan.fallback) == ("exact", matches, None, None)


@pytest.mark.parametrize("name", ["graph", "ivf"])
def test_a_small_fraction_is_scanned_exactly(name):
    index = make_index(name)
    matches = EXACT_ROWS + 1
    live = math.floor(matches / EXACT_FRACTION) + 1
    assert matches / live < EXACT_FRACTION
    plan = plan_for(matches, live, 10, index, 64)
    assert (plan.kind, knob_of(plan)) == ("exact", None)


def test_exactly_the_exact_fraction_goes_to_the_index(ivf):
    matches = 100 * (EXACT_ROWS + 1)
    live = round(matches / EXACT_FRACTION)
    assert matches / live == EXACT_FRACTION
    assert plan_for(matches, live, 10, ivf, 8).kind == "filtered"


# -- IVF ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("knob", [1, 8, 100, None])
def test_ivf_widens_nprobe_and_post_filters_from_the_fraction(ivf, knob):
    live = 1_000_000
    given_knob = IVF_DEFAULT if knob is None else knob
    at = math.ceil(POSTFILTER_FRACTION * live)
    below = at - 1
    quarter = math.ceil(POSTFILTER_FRACTION * live / 4)
    assert below / live < POSTFILTER_FRACTION <= at / live
    cases = [(quarter, "filtered"), (below, "filtered"), (at, "postfilter"), (live, "postfilter")]
    for matches, kind in cases:
        indexed_range(matches, live)
        plan = plan_for(matches, live, 10, ivf, knob)
        s = matches / live
        assert (plan.kind, knob_of(plan), plan.fallback) == (kind, math.ceil(given_knob / math.sqrt(s)), None), matches
    assert knob_of(plan_for(live, live, 10, ivf, knob)) == given_knob  # every row matches: nothing to widen


# -- graph -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("knob", "width"), [(64, 10), (None, 10), (None, 30), (200, 30), (1_000, 10)])
def test_graph_post_filters_a_broad_filter(graph, knob, width):
    live, matches = 1_000_000, 500_000
    indexed_range(matches, live)
    s = matches / live
    ef = graph.default_search_param(width) if knob is None else knob
    walk, post = walk_ef(ef, s), post_ef(ef, width, s)
    assert post <= POST_BEAM * walk and matches > POST_ROWS_PER_EF * post
    plan = plan_for(matches, live, width, graph, knob)
    assert (plan.kind, plan.matches, plan.live, knob_of(plan)) == ("postfilter", matches, live, post)
    assert plan.fallback == (max(width, math.ceil(s * post / 2)), walk)
    assert knob_of(plan) >= ef and plan.fallback[1] >= ef and plan.fallback[0] >= width


def test_graph_post_filter_beam_follows_the_width(graph):
    live, matches, ef, width = 1_000_000, 900_000, 200, 100  # POST_DEPTH * width / s beats ef / sqrt(s)
    s = matches / live
    assert POST_DEPTH * width / s > ef / math.sqrt(s) and post_ef(ef, width, s) <= POST_BEAM * walk_ef(ef, s)
    plan = plan_for(matches, live, width, graph, ef)
    assert plan.kind == "postfilter" and knob_of(plan) == math.ceil(POST_DEPTH * width / s)


def test_graph_walks_matching_rows_when_post_filtering_needs_too_wide_a_beam(graph):
    live, matches, ef, width = 10_000_000, 200_000, 64, 100
    indexed_range(matches, live)
    s = matches / live
    walk, post = walk_ef(ef, s), post_ef(ef, width, s)
    assert post > POST_BEAM * walk and matches > ROWS_PER_EF * walk
    plan = plan_for(matches, live, width, graph, ef)
    assert (plan.kind, knob_of(plan), plan.fallback) == ("filtered", walk, None)


def test_graph_scans_exactly_when_cheaper_than_a_post_filtering_walk(graph):
    live, matches, ef, width = 60_000, 30_000, 1_000, 10
    indexed_range(matches, live)
    s = matches / live
    post = post_ef(ef, width, s)
    assert post <= POST_BEAM * walk_ef(ef, s) and matches <= POST_ROWS_PER_EF * post
    assert (plan_for(matches, live, width, graph, ef).kind, knob_of(plan_for(matches, live, width, graph, ef))) == (
        "exact", None)


def test_graph_scans_exactly_when_cheaper_than_a_filtered_walk(graph):
    live, matches, ef, width = 5_000_000, 100_000, 64, 100
    indexed_range(matches, live)
    s = matches / live
    walk = walk_ef(ef, s)
    assert post_ef(ef, width, s) > POST_BEAM * walk and matches <= ROWS_PER_EF * walk
    plan = plan_for(matches, live, width, graph, ef)
    assert (plan.kind, knob_of(plan), plan.fallback) == ("exact", None, None)


def test_graph_exact_until_the_matches_exceed_the_walks_cost(graph):
    """Across the switch from the exact scan to the post-filter: exact exactly while matches <= the cost."""
    live, ef, width = 60_000, 1_000, 10
    kinds = set()
    for matches in range(30_000, 36_000):
        s = matches / live
        post = post_ef(ef, width, s)
        assert post <= POST_BEAM * walk_ef(ef, s)
        plan = plan_for(matches, live, width, graph, ef)
        assert plan.kind == ("exact" if matches <= POST_ROWS_PER_EF * post else "postfilter"), matches
        kinds.add(plan.kind)
    assert kinds == {"exact", "postfilter"}


# -- Plan ----------------------------------------------------------------------------------------------------
def test_plan_selectivity_and_dict(graph):
    plan = plan_for(500_000, 1_000_000, 10, graph, 64)
    assert plan.selectivity == 0.5
    d = plan.as_dict()
    assert set(d) == {"kind", "matches", "live", "ef", "nprobe", "reason", "fallback", "selectivity"}
    assert d == {"kind": "postfilter", "matches": plan.matches, "live": plan.live, "ef": plan.ef, "nprobe": None,
                 "reason": plan.reason, "fallback": plan.fallback, "selectivity": 0.5}
    assert type(d["kind"]) is str  # the enum's value: explain() output is plain JSON
    assert isinstance(d["reason"], str) and d["reason"]
    assert json.loads(json.dumps(d))["fallback"] == list(plan.fallback)  # explain() hands it out as JSON
    assert plan_for(250, 1_000, 10, None, None).selectivity == 0.25
    assert plan_for(None, 1_000, 10, None, None).selectivity == 1.0


def test_plan_selectivity_of_no_live_rows_is_zero():
    plan = plan_for(None, 0, 10, None, None)
    assert plan.selectivity == 0.0 and plan.as_dict()["selectivity"] == 0.0
    assert Plan(PlanKind.NONE, 0, 0, "nothing").as_dict()["selectivity"] == 0.0


def test_plan_is_frozen():
    plan = Plan(PlanKind.EXACT, 3, 10, "few")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.kind = "all"  # type: ignore[misc]


# -- any input -------------------------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(
    live=st.integers(1, 10**8),
    data=st.data(),
    width=st.integers(1, 2_000),
    knob=st.none() | st.integers(1, 5_000),
    index_name=st.sampled_from(["none", "empty", "graph", "ivf"]),
    clustered=st.booleans(),
)
def test_any_plan_is_well_formed(live, data, width, knob, index_name, clustered):
    matches = data.draw(st.none() | st.integers(0, live) | st.integers(max(0, live - 10), live), label="matches")
    index = make_index(index_name)
    plan = plan_for(matches, live, width, index, knob, clustered=clustered)

    assert plan.kind in KINDS
    if index is not None and index.search_param == "ef":  # a plan names the knob of its own index only
        assert plan.nprobe is None
    else:
        assert plan.ef is None
    assert plan.matches == (live if matches is None else matches) and plan.live == live
    assert 0.0 <= plan.selectivity <= 1.0
    assert (plan.kind == "all") == (matches is None)
    assert (plan.kind == "none") == (matches == 0)
    if plan.kind in NO_KNOB_KINDS:
        assert knob_of(plan) is None and plan.fallback is None
    if index is None or not index.rows:
        assert knob_of(plan) is None and plan.kind in {"all", "none", "exact", "scan"}
    else:
        assert plan.kind != "scan"
        given_knob = index.default_search_param(width) if knob is None else knob
        if plan.kind != "all":
            assert knob_of(plan) is None or knob_of(plan) >= given_knob
        else:
            assert knob_of(plan) == knob
    if plan.kind == "clusters":
        assert clustered and matches > EXACT_ROWS
    if plan.fallback is not None:
        assert index is not None and index.search_param == "ef" and plan.kind == "postfilter"
        min_live, walk = plan.fallback
        assert min_live >= width and walk >= (index.default_search_param(width) if knob is None else knob)
    if plan.kind in {"filtered", "postfilter"}:
        assert knob_of(plan) is not None and matches > EXACT_ROWS and matches / live >= EXACT_FRACTION


@pytest.mark.parametrize("s", [0.001, 0.05, 0.3, 0.8])
def test_forced_plans_run_as_named_whatever_the_selectivity(graph, ivf, s):
    live, width = 1_000_000, 10
    matches = round(s * live)
    for index in (graph, ivf):
        for kind in ("filtered", "postfilter"):
            plan = choose(matches, live, width, index, force=PlanKind(kind))
            assert plan.kind == kind and knob_of(plan) is not None
            assert (plan.fallback is not None) == (kind == "postfilter" and index is graph)
        assert choose(matches, live, width, index, force=PlanKind.EXACT).kind == "exact"
        assert choose(matches, live, width, index, force=PlanKind.SCAN).kind == "scan"
        assert choose(matches, live, width, index, clustered=True, force=PlanKind.CLUSTERS).kind == "clusters"
    ef = graph.default_search_param(width)  # a forced plan widens ef by the same rules as a chosen one
    assert choose(matches, live, width, graph, force=PlanKind.FILTERED).ef == walk_ef(ef, s)
    assert choose(matches, live, width, graph, force=PlanKind.POSTFILTER).ef == post_ef(ef, width, s)


def test_forced_exact_or_scan_without_a_filter_scans_every_code(graph):
    for force in (PlanKind.EXACT, PlanKind.SCAN):
        plan = choose(None, 5_000, 10, graph, force=force)
        assert plan.kind == "scan" and plan.matches == 5_000 and plan.ef is None and plan.fallback is None
    assert choose(0, 5_000, 10, graph, force=PlanKind.POSTFILTER).kind == "none"  # nothing to search


@pytest.mark.parametrize(("index_name", "matches", "clustered", "force", "message"), [
    ("none", 100, False, PlanKind.FILTERED, "has none holding rows yet"),
    ("empty", 100, False, PlanKind.POSTFILTER, "has none holding rows yet"),
    ("graph", None, False, PlanKind.FILTERED, "a filter or a tenant"),
    ("graph", 100, False, PlanKind.CLUSTERS, "multi-tenant"),
    ("graph", 100, False, PlanKind.ALL, "plan must be one of"),
])
def test_a_plan_that_cannot_run_is_refused(index_name, matches, clustered, force, message):
    with pytest.raises(InvalidInput, match=message):
        choose(matches, 5_000, 10, make_index(index_name), clustered=clustered, force=force)


def test_thresholds_move_the_choices(graph, ivf):
    """Lower exact thresholds send mid-size filters to the index: exact below 50 rows, then by selectivity."""
    low = Thresholds(exact_rows=50, exact_fraction=0.005, rows_per_ef=0, post_rows_per_ef=0)
    live, width = 3_000, 10
    for index in (graph, ivf):
        assert choose(30, live, width, index, thresholds=low).kind == "exact"
        assert choose(30, live, width, index).kind == "exact"
        assert choose(1_800, live, width, index, thresholds=low).kind == "postfilter"
        assert choose(1_800, live, width, index).kind == "exact"  # 1,800 <= DEFAULT.exact_rows
    s, ef = 0.1, graph.default_search_param(width)
    plan = choose(round(s * live), live, width, graph, thresholds=low)
    post, walk = post_ef(ef, width, s), walk_ef(ef, s)
    assert plan.kind == "postfilter" and plan.ef == post
    assert plan.fallback == (max(width, math.ceil(s * post / 2)), walk)
    wide = 40  # a beam of post_depth * k / s outgrows post_beam times the walk's: the walk is chosen
    assert POST_DEPTH * wide / s > POST_BEAM * walk_ef(graph.default_search_param(wide), s)
    assert choose(round(s * live), live, wide, graph, thresholds=low).kind == "filtered"
    assert choose(round(s * live), live, width, ivf, thresholds=low).kind == "filtered"
