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
        (lambda c: c.search([0, 0, 0]), InvalidInput, "zero query vector"),
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
