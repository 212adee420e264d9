"""Every kind of bad input raises a clear vecpack error and leaves the collection exactly as before."""

from __future__ import annotations

import numpy as np
import pytest

from vecpack import Conflict, DimensionMismatch, InvalidInput, NotFound, UnknownSpec, VecpackError


@pytest.fixture
def col(db):
    c = db.create_collection("docs", dim=3, codec="float32")
    c.add(ids=["a", "b"], vectors=[[1, 0, 0], [0, 1, 0]], metadata=[{"k": 1}, None])
    return c


def snapshot(c):
    recs = c.get(["a", "b"]) if len(c) == 2 else []
    return len(c), [(r.id, r.vector.tolist(), r.metadata) for r in recs], c.stats()["rows"]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda c: c.add(["x"], [[1, 2]]), DimensionMismatch, "dimension 2, collection expects 3"),
        (lambda c: c.add(["x"], [[1, np.nan, 0]]), InvalidInput, "NaN or inf"),
        (lambda c: c.add(["x"], [[1, np.inf, 0]]), InvalidInput, "NaN or inf"),
        (lambda c: c.add([], np.zeros((0, 3))), InvalidInput, "empty batch"),
        (lambda c: c.add(["x", "y"], [[1, 0, 0]]), InvalidInput, "1 vectors for 2 ids"),
        (lambda c: c.add(["x"], [[1, 0, 0]], metadata=[{}, {}]), InvalidInput, "2 metadata entries for 1 ids"),
        (lambda c: c.add(["x", "x"], [[1, 0, 0], [0, 0, 1]]), InvalidInput, "duplicate ids in one call"),
        (lambda c: c.add(["a"], [[1, 0, 0]]), Conflict, "ids already exist"),
        (lambda c: c.add(["x", "b"], [[1, 0, 0], [0, 0, 1]]), Conflict, r"ids already exist: \['b'\]"),
        (lambda c: c.add(["x"], [[1, 0, 0]], metadata=[{"f": object()}]), InvalidInput, "not JSON-serialisable"),
        (lambda c: c.add(["x"], [[1, 0, 0]], metadata=[{"f": float("nan")}]), InvalidInput, "not JSON-serialisable"),
        (lambda c: c.add(["x"], [[1, 0, 0]], metadata=["text"]), InvalidInput, "must be a dict or None"),
        (lambda c: c.add(["x"], [[1, 0, 0]], metadata=[{"f": "x" * 70000}]), InvalidInput, "the limit is"),
        (lambda c: c.add([1.5], [[1, 0, 0]]), InvalidInput, "ids must be str or int"),
        (lambda c: c.add([True], [[1, 0, 0]]), InvalidInput, "ids must be str or int"),
        (lambda c: c.add([""], [[1, 0, 0]]), InvalidInput, "1..512 characters"),
        (lambda c: c.add("abc", [[1, 0, 0]]), InvalidInput, "ids must be a list"),
        (lambda c: c.add(["x"], [["a", "b", "c"]]), InvalidInput, "not numeric"),
        (lambda c: c.add(["x"], np.zeros((1, 3, 1))), InvalidInput, "must be 2-D"),
        (lambda c: c.upsert(["x"], [[1, 2]]), DimensionMismatch, "expects 3"),
        (lambda c: c.upsert(["a", "a"], [[1, 0, 0], [0, 0, 1]]), InvalidInput, "duplicate ids"),
        (lambda c: c.delete(["a", "nope"]), NotFound, r"unknown ids: \['nope'\]"),
        (lambda c: c.delete([]), InvalidInput, "empty batch"),
        (lambda c: c.get(["nope"]), NotFound, "unknown ids"),
        (lambda c: c.search([1, 0]), DimensionMismatch, "dimension 2, collection expects 3"),
        (lambda c: c.search([np.nan, 0, 0]), InvalidInput, "NaN or inf"),
        (lambda c: c.search(np.zeros((0, 3))), InvalidInput, "empty query batch"),
        (lambda c: c.search([0, 0, 0]), InvalidInput, "query 0 has norm 0; under cosine"),
        (lambda c: c.search([1, 0, 0], k=0), InvalidInput, "k must be an integer"),
        (lambda c: c.search([1, 0, 0], k=10**9), InvalidInput, "k must be an integer"),
        (lambda c: c.search([1, 0, 0], k=2.5), InvalidInput, "k must be an integer"),
        (lambda c: c.search([1, 0, 0], rerank=-1), InvalidInput, "rerank must be"),
    ],
)
def test_bad_input_is_rejected_and_changes_nothing(col, call, error, message):
    before = snapshot(col)
    with pytest.raises(error, match=message):
        call(col)
    assert snapshot(col) == before


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"name": "../evil", "dim": 3}, InvalidInput, "invalid collection name"),
        ({"name": ".hidden", "dim": 3}, InvalidInput, "invalid collection name"),
        ({"name": "a/b", "dim": 3}, InvalidInput, "invalid collection name"),
        ({"name": "", "dim": 3}, InvalidInput, "invalid collection name"),
        ({"name": "x" * 65, "dim": 3}, InvalidInput, "invalid collection name"),
        ({"name": "ok", "dim": 0}, InvalidInput, "dim must be"),
        ({"name": "ok", "dim": "3"}, InvalidInput, "dim must be"),
        ({"name": "ok", "dim": 3, "metric": "hamming"}, InvalidInput, "unknown metric 'hamming'"),
        ({"name": "ok", "dim": 3, "codec": "zstd"}, UnknownSpec, "unknown codec spec 'zstd'"),
        ({"name": "ok", "dim": 10, "codec": "pq3"}, InvalidInput, "not divisible by 3"),
        ({"name": "ok", "dim": 3, "codec": 8}, UnknownSpec, "must be a string"),
    ],
)
def test_bad_collection_arguments(db, kwargs, error, message):
    with pytest.raises(error, match=message):
        db.create_collection(**kwargs)
    assert db.list_collections() == []


def test_all_errors_share_one_hierarchy_and_builtins():
    assert issubclass(DimensionMismatch, ValueError) and issubclass(DimensionMismatch, VecpackError)
    assert issubclass(NotFound, KeyError) and issubclass(Conflict, VecpackError)


def test_unknown_collection(db):
    with pytest.raises(NotFound, match="'nope' does not exist"):
        db.get_collection("nope")
    with pytest.raises(InvalidInput):
        db.get_collection("../etc")


def test_oversized_batch_is_rejected(col, monkeypatch):
    from vecpack import validate

    monkeypatch.setattr(validate, "MAX_BATCH", 4)
    before = snapshot(col)
    with pytest.raises(InvalidInput, match="batch of 5 exceeds the limit of 4"):
        col.add([f"n{i}" for i in range(5)], np.ones((5, 3)))
    assert snapshot(col) == before


# -- hostile input (issue 19) --------------------------------------------------------------------------------------
def _nested(depth: int) -> dict:
    doc: dict = {"leaf": 1}
    for _ in range(depth - 1):
        doc = {"n": doc}
    return doc


def _not_nested(depth: int) -> dict:
    where: dict = {"k": 1}
    for _ in range(depth):
        where = {"$not": where}
    return where


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda c: c.delete(where={}), InvalidInput, "has no condition"),
        (lambda c: c.delete(where={"$and": [{}]}), InvalidInput, "has no condition"),
        (lambda c: c.delete(where={"$not": {"$not": {}}}), InvalidInput, "has no condition"),
        (lambda c: c.delete(where={"$or": [{}, {"k": 1}]}), InvalidInput, "has no condition"),
        (lambda c: c.delete(["a"], delete_all=True), InvalidInput, "give it no ids or where"),
        (lambda c: c.delete(delete_all="yes"), InvalidInput, "delete_all must be True or False"),
        (lambda c: c.delete(), InvalidInput, "delete_all=True deletes every record"),
        (lambda c: c.add(["x"], [[0, 0, 0]]), InvalidInput, r"vector at row 0 has norm 0; under cosine"),
        (lambda c: c.upsert(["a", "x"], [[1, 0, 0], [1e-30, 0, 0]]), InvalidInput, r"vector at row 1 has norm 1e-30"),
        (lambda c: c.add(["x"], [[3e38, 0, 0]]), InvalidInput, r"vector at row 0 holds a value of magnitude 3e\+38"),
        (lambda c: c.search([3e38] * 3), InvalidInput, r"query 0 holds a value of magnitude 3e\+38; the limit"),
        (lambda c: c.search([1e-30, 0, 0]), InvalidInput, "query 0 has norm 1e-30"),
        (lambda c: c.add(["x"], [[1, 0, 0]], metadata=[_nested(33)]), InvalidInput, "deeper than 32 levels"),
        (lambda c: c.add(["x"], [[1, 0, 0]], metadata=[_nested(1000)]), InvalidInput, "deeper than 32 levels"),
        (lambda c: c.upsert(["a"], [[1, 0, 0]], metadata=[{"l": [[[[1]]]] * 3, "d": _nested(40)}]), InvalidInput,
         "deeper than 32 levels"),
        (lambda c: c.search([1, 0, 0], where=_not_nested(400)), InvalidInput, "where nests deeper than 32"),
        (lambda c: c.search([[1, 0, 0]] * 2, where=[None, _not_nested(400)]), InvalidInput, r"where\[1\]"),
        (lambda c: c.get(where={"k": _nested(5000)}), InvalidInput, "where nests deeper than 32"),
        (lambda c: c.delete(where=_not_nested(400)), InvalidInput, "where nests deeper than 32"),
        (lambda c: c.count(where=_not_nested(400)), InvalidInput, "where nests deeper than 32"),
    ],
)
def test_hostile_input_is_rejected_and_changes_nothing(col, call, error, message):
    before = snapshot(col)
    with pytest.raises(error, match=message):
        call(col)
    assert snapshot(col) == before


def test_metadata_at_the_nesting_limit_round_trips(col):
    col.add(["deep"], [[0, 0, 1]], metadata=[_nested(32)])
    assert col.get(["deep"])[0].metadata == _nested(32)
    assert col.search([0, 0, 1], k=1)[0].metadata == _nested(32)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_zero_and_huge_vectors_are_stored_under_ip_and_l2(db, metric):
    c = db.create_collection("raw", dim=3, metric=metric, codec="float32")
    c.add(["zero", "huge"], [[0, 0, 0], [1e15, -1e15, 1e15]])
    assert np.array_equal(c.get(["zero"])[0].vector, np.zeros(3, np.float32))
    assert len(c.search([1, 0, 0], k=2)) == 2


def test_delete_all_deletes_every_record_and_only_the_tenants(db):
    c = db.create_collection("docs", dim=3, codec="float32")
    c.add(["a", "b"], [[1, 0, 0], [0, 1, 0]])
    assert c.delete(delete_all=True) == 2 and len(c) == 0
    mt = db.create_collection("mt", dim=3, codec="float32", multi_tenant=True)
    mt.add(["a", "b"], [[1, 0, 0], [0, 1, 0]], tenant="acme")
    mt.add(["a"], [[1, 0, 0]], tenant="globex")
    assert mt.delete(delete_all=True, tenant="acme") == 2
    assert mt.count(tenant="acme") == 0 and mt.count(tenant="globex") == 1
