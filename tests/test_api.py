"""The embedded API contract: connect, collections, add/upsert/delete/get/search, stats."""

from __future__ import annotations

import numpy as np
import pytest

import vecpack
from vecpack import Conflict, Hit, NotFound, Record


def test_connect_creates_folder_and_temporary_db(tmp_path):
    path = tmp_path / "a" / "b"
    with vecpack.connect(path) as db:
        assert path.is_dir()
        assert db.list_collections() == []
    tmp = vecpack.connect()
    folder = tmp.path
    tmp.create_collection("x", dim=2)
    assert folder.is_dir()
    tmp.close()
    assert not folder.exists()


def test_collection_lifecycle(db):
    db.create_collection("docs", dim=4, metric="ip", codec="float16")
    db.create_collection("alpha", dim=4)
    assert db.list_collections() == ["alpha", "docs"]
    col = db.get_collection("docs")
    assert (col.dim, col.metric) == (4, "ip")
    assert col.stats()["codec"] == "float16"
    with pytest.raises(Conflict, match="already exists"):
        db.create_collection("docs", dim=4)
    assert db.create_collection("docs", dim=4, exist_ok=True) is col
    db.drop_collection("docs")
    assert db.list_collections() == ["alpha"]
    with pytest.raises(NotFound, match="does not exist"):
        db.get_collection("docs")
    with pytest.raises(NotFound):
        db.drop_collection("docs")


def test_add_get_search_with_metadata(db):
    col = db.create_collection("docs", dim=3, metric="cosine", codec="float32")
    col.add(ids=["a", 2], vectors=[[1, 0, 0], [0, 1, 0]], metadata=[{"year": 2020, "tags": ["x"]}, None])
    assert len(col) == 2
    a, b = col.get(["a", "2"])
    assert isinstance(a, Record) and a.id == "a" and a.metadata == {"year": 2020, "tags": ["x"]}
    np.testing.assert_array_equal(b.vector, np.array([0, 1, 0], dtype=np.float32))
    assert b.vector.dtype == np.float32 and b.metadata is None
    hits = col.search([1, 0.1, 0], k=2)
    assert [h.id for h in hits] == ["a", "2"]
    assert isinstance(hits[0], Hit) and hits[0].metadata == {"year": 2020, "tags": ["x"]}
    assert hits[0].score == pytest.approx(1 / np.sqrt(1.01), rel=1e-5)
    batch = col.search(np.array([[1, 0, 0], [0, 1, 0]]), k=1)
    assert [[h.id for h in r] for r in batch] == [["a"], ["2"]]


def test_k_larger_than_collection_returns_all(db):
    col = db.create_collection("docs", dim=3, codec="float32")
    col.add(ids=["a", "b"], vectors=[[1, 0, 0], [0, 1, 0]])
    assert len(col.search([1, 0, 0], k=50)) == 2


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_scores_follow_the_metric(db, metric):
    col = db.create_collection("m", dim=2, metric=metric, codec="float32")
    col.add(ids=["a", "b"], vectors=[[3, 4], [1, 0]])
    hits = col.search([1, 0], k=2)
    expected = {"cosine": [1.0, 0.6], "ip": [3.0, 1.0], "l2": [0.0, np.sqrt(4 + 16)]}[metric]
    order = {"cosine": ["b", "a"], "ip": ["a", "b"], "l2": ["b", "a"]}[metric]
    assert [h.id for h in hits] == order
    np.testing.assert_allclose([h.score for h in hits], expected, rtol=1e-5)


def test_upsert_replaces_vector_and_metadata(db):
    col = db.create_collection("docs", dim=2, codec="float32")
    col.add(ids=["a", "b"], vectors=[[1, 0], [0, 1]], metadata=[{"v": 1}, {"v": 1}])
    col.upsert(ids=["a", "c"], vectors=[[0, 1], [1, 1]], metadata=[{"v": 2}, None])
    assert len(col) == 3
    a = col.get(["a"])[0]
    np.testing.assert_array_equal(a.vector, [0, 1])
    assert a.metadata == {"v": 2}
    ids = [h.id for h in col.search([0, 1], k=3)]
    assert ids[:2] in (["a", "b"], ["b", "a"]) and ids.count("a") == 1


def test_delete_hides_rows_everywhere(db, data):
    col = db.create_collection("docs", dim=data.shape[1], codec="int8", seal_rows=200)
    col.add(ids=list(range(len(data))), vectors=data)
    assert col.stats()["sealed_rows"] >= 400  # auto-sealed past seal_rows
    gone = [str(i) for i in range(0, 600, 3)]
    col.delete(gone)
    assert len(col) == 400
    with pytest.raises(NotFound):
        col.get([gone[0]])
    for hits in col.search(data[10:60], k=20):
        assert not {h.id for h in hits} & set(gone)
        assert len(hits) == 20


def test_int_ids_are_strings(db):
    col = db.create_collection("docs", dim=2, codec="float32")
    col.add(ids=[1, 2], vectors=[[1, 0], [0, 1]])
    assert col.get([1])[0].id == "1"
    assert col.search([1, 0], k=1)[0].id == "1"


def test_stats_and_sizes(db, data):
    col = db.create_collection("docs", dim=data.shape[1], codec="binary")
    col.add(ids=list(range(len(data))), vectors=data)
    before = col.stats()
    assert before["growing_rows"] == 600 and before["sealed_rows"] == 0
    col.optimize()
    s = col.stats()
    assert s["n"] == 600 and s["dim"] == 40 and s["codec"] == "binary"
    assert s["bytes_per_vector"] == 8  # 40 bits padded to one 64-bit word
    assert s["sealed_rows"] == 600 and s["growing_rows"] == 0
    assert s["memory_bytes"] < before["memory_bytes"] / 5
    assert s["disk_bytes"] > 600 * 40 * 4


def test_context_manager_closes(tmp_path):
    with vecpack.connect(tmp_path) as db:
        col = db.create_collection("docs", dim=2)
        assert col.stats()["unindexed_rows"] == 0  # a flat collection has nothing to index
    with pytest.raises(vecpack.ClosedError, match="'docs' is closed: get it again from an open database"):
        col.search([1, 0])
    with pytest.raises(vecpack.ClosedError):
        db.list_collections()


def test_a_dropped_collection_says_so(db):
    col = db.create_collection("tmp", dim=2)
    db.drop_collection("tmp")
    for call in (lambda: col.search([1, 0]), lambda: col.add(["a"], [[1, 0]]), col.count):
        with pytest.raises(vecpack.ClosedError, match="'tmp' was dropped: create it again"):
            call()


@pytest.mark.parametrize(("name", "suggested"), [("hnsw", 'index="graph"'), ("HNSW", 'index="graph"'),
                                                 ("ivf-pq", 'index="ivf"'), ("bruteforce", 'index="flat"')])
def test_other_libraries_index_names_suggest_ours(db, name, suggested):
    with pytest.raises(vecpack.InvalidInput, match=f"unknown index {name!r}; choose one of .*{suggested}"):
        db.create_collection("c", dim=2, index=name)
    with pytest.raises(vecpack.InvalidInput) as err:
        db.create_collection("c", dim=2, index="btree")
    assert "choose one of ['flat', 'ivf', 'graph']" in str(err.value) and "use" not in str(err.value)


def test_reopen_keeps_everything(tmp_path, data):
    with vecpack.connect(tmp_path) as db:
        col = db.create_collection("docs", dim=data.shape[1], metric="l2", codec="pq8")
        col.add(ids=list(range(500)), vectors=data[:500], metadata=[{"i": i} for i in range(500)])
        col.optimize()
        col.add(ids=list(range(500, 600)), vectors=data[500:])
        col.delete(["3"])
        expected = [[h.id for h in r] for r in col.search(data[:20], k=5)]
    with vecpack.connect(tmp_path) as db:
        col = db.get_collection("docs")
        assert len(col) == 599 and col.stats()["sealed_rows"] == 500
        assert [[h.id for h in r] for r in col.search(data[:20], k=5)] == expected
        assert col.get(["42"])[0].metadata == {"i": 42}
        col.verify()


def test_second_handle_sees_commits_of_the_first(tmp_path, data):
    """Two databases on one folder (as two processes would): each sees the other's commits."""
    with vecpack.connect(tmp_path) as writer_db, vecpack.connect(tmp_path) as reader_db:
        writer = writer_db.create_collection("docs", dim=data.shape[1], codec="int8", seal_rows=100)
        reader = reader_db.get_collection("docs")
        writer.add(ids=list(range(150)), vectors=data[:150])  # crosses seal_rows: trains the codec
        assert len(reader) == 150 and reader.stats()["sealed_rows"] == 150
        assert reader.search(data[20], k=1)[0].id == "20"
        reader.delete(["20"])
        reader.add(ids=["new"], vectors=data[300:301])
        assert "20" not in writer and len(writer) == 150
        assert writer.search(data[300], k=1)[0].id == "new"
