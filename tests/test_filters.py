"""Metadata filters: parsing errors, the reference semantics, and columns agreeing with it (property test)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecpack import InvalidInput
from vecpack.query.columns import Column, evaluate
from vecpack.query.filters import Cond, matches, parse, paths

DOCS = [
    {"year": 2020, "lang": "en", "tags": ["a", "b"], "score": 0.5, "ok": True, "author": {"name": "Ada"}},
    {"year": 2015, "lang": "de", "tags": [], "score": None, "ok": False},
    {"year": 2020.0, "lang": "en", "tags": ["b", 1, None], "ok": 1},
    {"year": "2020", "tags": "a", "author": {"name": "Alan", "born": 1912}},
    {},
    None,
]


def ids_matching(where) -> list[int]:
    node = parse(where)
    return [i for i, d in enumerate(DOCS) if matches(node, d)]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"year": 2020}, [0, 2]),  # 2020 == 2020.0; the string "2020" is another type
        ({"year": {"$ne": 2020}}, [1, 3, 4, 5]),  # missing fields pass $ne
        ({"year": {"$gte": 2015, "$lt": 2020}}, [1]),
        ({"year": {"$gt": "2000"}}, [3]),  # strings order only against strings
        ({"lang": {"$in": ["en", "fr"]}}, [0, 2]),
        ({"lang": {"$nin": ["en"]}}, [1, 3, 4, 5]),
        ({"lang": {"$in": []}}, []),
        ({"score": None}, [1]),  # explicit null only
        ({"score": {"$exists": False}}, [2, 3, 4, 5]),
        ({"score": {"$exists": True}}, [0, 1]),
        ({"ok": True}, [0]),  # true never equals 1
        ({"ok": 1}, [2]),
        ({"tags": {"$contains": "a"}}, [0]),  # "a" is not an array
        ({"tags": {"$contains": 1}}, [2]),
        ({"tags": {"$contains": None}}, [2]),
        ({"author.name": "Alan"}, [3]),
        ({"author.born": {"$lte": 1912}}, [3]),
        ({"$or": [{"lang": "de"}, {"author.name": "Ada"}]}, [0, 1]),
        ({"$and": [{"year": 2020}, {"ok": True}]}, [0]),
        ({"$not": {"year": 2020}}, [1, 3, 4, 5]),
        ({"year": {"$not": {"$gt": 2016}}}, [1, 3, 4, 5]),
        ({"year": 2020, "lang": "en", "ok": 1}, [2]),  # several keys: AND
        ({}, [0, 1, 2, 3, 4, 5]),
    ],
)
def test_semantics_on_records_and_columns(where, expected):
    assert ids_matching(where) == expected
    node = parse(where)
    columns = {}
    for path in paths(node):
        column = Column()
        column.extend(len(DOCS), [(i, v) for i, d in enumerate(DOCS) if (v := _lookup(d, path)) is not _MISSING])
        columns[path] = column
    assert np.flatnonzero(evaluate(node, columns, len(DOCS))).tolist() == expected


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("year", "a filter must be a dict"),
        ({"year": {"$gt": [1]}}, "where['year']['$gt']: $gt takes a number or a string"),
        ({"year": {"$gt": True}}, "takes a number or a string, got bool"),
        ({"year": {"$foo": 1}}, "unknown operator '$foo'"),
        ({"$nor": []}, "unknown operator '$nor' here"),
        ({"$or": []}, "$or takes a non-empty list"),
        ({"$and": {"a": 1}}, "$and takes a non-empty list"),
        ({"$or": [{"a": 1}, 5]}, "where['$or'][1]: a filter must be a dict"),
        ({"year": {"$in": 5}}, "$in takes a list"),
        ({"year": {"$in": [[1]]}}, "where['year']['$in'][0]: expected a string, number, bool or null"),
        ({"year": {"$exists": 1}}, "$exists takes true or false"),
        ({"year": [1, 2]}, "takes a single value; use $in"),
        ({"year": {"a": 1}}, "a dict of operators"),
        ({"year": {}}, "empty operator dict"),
        ({"year": float("nan")}, "not a finite number"),
        ({"": 1}, "a field name must be a non-empty string"),
        ({"a..b": 1}, "invalid field name"),
        ({'a"b': 1}, "invalid field name"),
        ({"tags": {"$contains": {"x": 1}}}, "expected a string, number, bool or null"),
        ({1: 2}, "keys must be strings"),
        ({"$or": [{"a": i} for i in range(1001)]}, "more than 1000 conditions"),
    ],
)
def test_malformed_filters_name_the_bad_part(where, message):
    with pytest.raises(InvalidInput) as exc:
        parse(where)
    assert message in str(exc.value)


# -- property: columns agree with the per-record reference on random documents and filters ----------------
_MISSING = object()


def _lookup(doc, path):
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return _MISSING
        doc = doc[key]
    return doc


FIELDS = ["a", "b", "n.c"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.5, -1.5, 2.0]),
    st.sampled_from(["x", "y", "", "z"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3))
docs = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {}, optional={"a": values, "b": values, "n": st.fixed_dictionaries({}, optional={"c": values})}
    ),
)


def conditions() -> st.SearchStrategy:
    field = st.sampled_from(FIELDS)
    ordered = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, "x", "y"]))
    cond = st.one_of(
        st.builds(lambda f, v: {f: v}, field, scalars),
        st.builds(lambda f, op, v: {f: {op: v}}, field, st.sampled_from(["$eq", "$ne", "$contains"]), scalars),
        st.builds(lambda f, op, v: {f: {op: v}}, field, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), ordered),
        st.builds(
            lambda f, op, v: {f: {op: v}}, field, st.sampled_from(["$in", "$nin"]), st.lists(scalars, max_size=3)
        ),
        st.builds(lambda f, v: {f: {"$exists": v}}, field, st.booleans()),
    )
    return st.recursive(
        cond,
        lambda inner: st.one_of(
            st.builds(lambda p: {"$and": p}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda p: {"$or": p}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda p: {"$not": p}, inner),
        ),
        max_leaves=6,
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(docs, min_size=1, max_size=30), conditions(), st.integers(0, 29))
def test_columns_agree_with_reference(records, where, split):
    node = parse(where)
    expected = [i for i, d in enumerate(records) if matches(node, d)]
    columns = {}
    split = min(split, len(records))
    for path in paths(node):  # built in two appends, as a field index grows
        column = Column()
        for lo, hi in ((0, split), (split, len(records))):
            column.extend(hi, [(i, v) for i in range(lo, hi) if (v := _lookup(records[i], path)) is not _MISSING])
        columns[path] = column
    assert np.flatnonzero(evaluate(node, columns, len(records))).tolist() == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(docs, min_size=1, max_size=30), conditions(), st.integers(0, 29))
def test_sorted_rows_agree_with_reference(records, where, split):
    """The binary-search path of an indexed field (single conditions) finds the same rows, also after appends."""
    node = parse(where)
    if not isinstance(node, Cond):
        return
    column = Column()
    split = min(split, len(records))
    for lo, hi in ((0, split), (split, len(records))):
        column.extend(hi, [(i, v) for i in range(lo, hi) if (v := _lookup(records[i], node.path)) is not _MISSING])
        rows = column.sorted_rows(node.op, node.value)
        if rows is not None:
            expected = [i for i in range(hi) if matches(node, records[i])]
            assert sorted(rows.tolist()) == expected
            # past max_rows matches it declines (the caller takes the mask path), and only then
            if expected:
                assert column.sorted_rows(node.op, node.value, max_rows=len(expected) - 1) is None
            assert sorted(column.sorted_rows(node.op, node.value, max_rows=len(expected)).tolist()) == expected
