"""A filter that matches nothing by mistake (a misspelled field, a value of another type) says why: a
FilterWarning from search / count / get, and ``hint`` in explain(); never for a filter that simply matches
nothing, and never from another tenant's records."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import vecpack
from vecpack import FilterWarning

DIM = 4
META = [{"year": 2018 + i, "lang": "en", "tags": ["a", "b"], "author": {"name": "x"}, "ok": True} for i in range(6)]


@pytest.fixture
def col():
    with vecpack.connect() as db:
        c = db.create_collection("c", dim=DIM, codec="float32")
        c.add(ids=list(range(6)), vectors=np.random.default_rng(0).random((6, DIM)), metadata=META)
        yield c


def hints_of(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if issubclass(w.category, FilterWarning)]


@pytest.mark.parametrize(("where", "expected"), [
    ({"yaer": 2020}, "no record has field 'yaer'; did you mean 'year'?"),
    ({"author.nmae": "x"}, "no record has field 'author.nmae'; did you mean 'author.name'?"),
    ({"zzzz": 1}, "no record has field 'zzzz'"),
    ({"year": "2020"}, "field 'year' holds numbers, the filter compares them with strings ('2020')"),
    ({"year": {"$gte": "2019"}}, "field 'year' holds numbers, the filter compares them with strings"),
    ({"year": {"$in": ["2019", "2020"]}}, "compares them with strings ('2019', '2020')"),
    ({"ok": 1}, "field 'ok' holds booleans, the filter compares them with numbers (1)"),
    ({"tags": {"$contains": 1}}, "the arrays in field 'tags' hold strings, the filter compares them with numbers"),
    ({"lang": {"$contains": "en"}}, "field 'lang' holds strings; $contains looks inside arrays"),
    ({"$and": [{"lang": "en"}, {"yaer": 2020}]}, "no record has field 'yaer'"),
])
def test_a_mistaken_filter_says_why_it_matched_nothing(col, where, expected):
    q = np.ones(DIM)
    for call in (lambda: col.search(q, 3, where=where), lambda: col.count(where=where),
                 lambda: col.get(where=where)):
        found = hints_of(call)
        assert len(found) == 1 and expected in found[0], (found, expected)
        assert found[0].startswith("the filter matched no record: ")
    assert expected in col.explain(where=where)["hint"]
    batch = hints_of(lambda: col.search(np.ones((2, DIM)), 3, where=[where, None]))
    assert len(batch) == 1 and expected in batch[0]


@pytest.mark.parametrize("where", [{"year": 1990}, {"year": {"$ne": "x"}}, {"nope": {"$exists": False}},
                                   {"year": {"$gt": 3000}}, {"lang": "en"}, {"tags": {"$contains": "zz"}}])
def test_no_hint_for_a_filter_that_is_right_or_simply_matches_nothing(col, where):
    assert hints_of(lambda: col.search(np.ones(DIM), 3, where=where)) == []
    assert hints_of(lambda: col.count(where=where)) == []
    assert col.explain(where=where)["hint"] is None


def test_the_hint_follows_the_data(col):
    assert hints_of(lambda: col.count(where={"colour": "red"}))
    col.add(ids=["new"], vectors=np.ones((1, DIM)), metadata=[{"colour": "blue"}])
    assert hints_of(lambda: col.count(where={"colour": "red"})) == []  # the field exists now: no hint
    assert col.explain(where={"color": "red"})["hint"] == "no record has field 'color'; did you mean 'colour'?"


def test_hints_never_show_another_tenants_fields():
    with vecpack.connect() as db:
        mt = db.create_collection("mt", dim=DIM, codec="float32", multi_tenant=True)
        mt.add(["a"], np.ones((1, DIM)), [{"salary": 100}], tenant="acme")
        mt.add(["b"], np.ones((1, DIM)), [{"team": "x"}], tenant="globex")
        found = hints_of(lambda: mt.search(np.ones(DIM), 1, where={"salary": 100}, tenant="globex"))
        assert found == ["the filter matched no record: no record has field 'salary'"]
        assert mt.explain(where={"salari": 1}, tenant="globex")["hint"] == "no record has field 'salari'"
        assert mt.explain(where={"salari": 1}, tenant="acme")["hint"].endswith("did you mean 'salary'?")
        assert "numbers" in mt.explain(where={"salary": "100"}, tenant="acme")["hint"]
        assert mt.explain(where={"salary": "100"}, tenant="globex")["hint"] == "no record has field 'salary'"


def test_an_indexed_field_gives_the_same_hints(col):
    col.create_field_index("year")
    assert "holds numbers" in col.explain(where={"year": "2020"})["hint"]
    assert hints_of(lambda: col.count(where={"year": 1990})) == []


@pytest.mark.parametrize("where", [{"$not": {"yaer": 2020}}, {"year": {"$in": []}}])
def test_no_hint_where_the_cause_is_not_a_mistake(col, where):
    """Under $not a missing field makes the condition hold; $in: [] matches nothing whatever the types."""
    assert col.explain(where=where)["hint"] is None
