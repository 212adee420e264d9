"""Search quality through the collection, against brute force, for every codec x metric."""

from __future__ import annotations

import numpy as np
import pytest

import vecpack
from helpers import brute_force, recall

# recall@10 floors on the clustered 600 x 40 fixture: (no rerank, default rerank)
FLOORS = {
    "float32": (1.0, 1.0),
    "float16": (0.99, 0.99),
    "int8": (0.97, 0.97),
    "binary": (0.35, 0.95),
    "pq8": (0.5, 0.95),
}


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("spec", list(FLOORS))
def test_recall_against_brute_force(db, data, rng, spec, metric):
    col = db.create_collection("c", dim=data.shape[1], metric=metric, codec=spec)
    col.add(ids=list(range(len(data))), vectors=data)
    col.optimize()
    q = (data[rng.choice(np.arange(10, 600), 40)] + 0.3 * rng.normal(size=(40, data.shape[1]))).astype(np.float32)
    truth = brute_force(data, q, 10, metric)
    plain, reranked = FLOORS[spec]
    got = [[h.id for h in hits] for hits in col.search(q, k=10, rerank=0)]
    assert recall(got, truth) >= plain
    got = [[h.id for h in hits] for hits in col.search(q, k=10)]
    assert recall(got, truth) >= reranked


def test_exact_before_sealing_and_mixed_segments(db, data, rng):
    col = db.create_collection("c", dim=data.shape[1], metric="l2", codec="binary")
    col.add(ids=list(range(300)), vectors=data[:300])
    q = data[rng.choice(np.arange(10, 600), 20)]
    truth = brute_force(data[:300], q, 10, "l2")
    assert recall([[h.id for h in r] for r in col.search(q, k=10, rerank=0)], truth) == 1.0  # growing = exact
    col.optimize()
    col.add(ids=list(range(300, 600)), vectors=data[300:])  # sealed binary + growing float32
    truth = brute_force(data, q, 10, "l2")
    hits = col.search(q, k=10)
    assert recall([[h.id for h in r] for r in hits], truth) >= 0.95
    exact_d = np.sqrt(((q[0] - data[int(hits[0][0].id)]) ** 2).sum())
    assert hits[0][0].score == pytest.approx(exact_d, rel=1e-4)  # reranked scores are exact distances


def test_rerank_scores_are_exact_and_sorted(db, data):
    col = db.create_collection("c", dim=data.shape[1], metric="cosine", codec="pq8")
    col.add(ids=list(range(len(data))), vectors=data)
    col.optimize()
    queries = data[10:15]
    for q, hits in zip(queries, col.search(queries, k=8), strict=True):
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        for h in hits:
            v = data[int(h.id)]
            assert h.score == pytest.approx(float(v @ q / np.linalg.norm(v) / np.linalg.norm(q)), abs=1e-5)
    top = col.search(data[10], k=1)[0]
    assert top.id == "10" and top.score == pytest.approx(1.0, abs=1e-5)


def test_deleted_rows_never_returned_even_when_k_exceeds_live(db, data):
    col = db.create_collection("c", dim=data.shape[1], codec="int8")
    col.add(ids=list(range(100)), vectors=data[:100])
    col.optimize()
    col.delete([str(i) for i in range(90)])
    hits = col.search(data[0], k=50)
    assert sorted(int(h.id) for h in hits) == list(range(90, 100))


def test_duplicate_vectors_both_found(db, data):
    col = db.create_collection("c", dim=data.shape[1], codec="binary")
    col.add(ids=list(range(len(data))), vectors=data)
    col.optimize()
    assert {h.id for h in col.search(data[9], k=2)} == {"8", "9"}  # rows 8 and 9 are identical


def test_pread_rerank_matches_mmap_rerank(db, data, monkeypatch):
    """Large collections re-rank through pread; the results must be identical to the mmap path."""
    from vecpack.storage import segments

    col = db.create_collection("c", dim=data.shape[1], metric="l2", codec="binary")
    col.add(ids=list(range(len(data))), vectors=data)
    col.delete(["11", "12"])
    col.optimize()
    q = data[20:40]
    via_mmap = col.search(q, k=10)
    monkeypatch.setattr(segments, "PREAD_RERANK_BYTES", 0)
    via_pread = col.search(q, k=10)
    assert [[(h.id, h.score) for h in r] for r in via_pread] == [[(h.id, h.score) for h in r] for r in via_mmap]


def test_scan_layout_of_a_flat_collection(tmp_path, data, rng, monkeypatch):
    """A flat fast-scan collection scans its blocked layout: same answers as the stored rows, through
    later seals, deletes, compaction and reopening; filtered searches read the rows; stats count both."""
    from vecpack.storage.segments import Segments

    db = vecpack.connect(tmp_path / "db")
    col = db.create_collection("c", dim=data.shape[1], metric="l2", codec="pq10x4fs", seal_rows=128)
    q = (data[rng.choice(600, 20)] + 0.3 * rng.normal(size=(20, data.shape[1]))).astype(np.float32)

    def answers(**kw):
        return [[h.id for h in hits] for hits in col.search(q, k=10, rerank=0, **kw)]

    def without_layout(**kw):
        with monkeypatch.context() as m:
            m.setattr(Segments, "scan_layout", lambda self, build=True: None)
            return answers(**kw)

    col.add(ids=list(range(300)), vectors=data[:300], metadata=[{"odd": i % 2} for i in range(300)])
    assert len(col.search(q[0], k=3, where={"odd": 1})) == 3
    assert col.stats()["scan_layout_rows"] == 0  # only a full scan builds it
    for step in ("first", "more rows", "deleted", "compacted", "reopened"):
        if step == "more rows":
            col.add(ids=list(range(300, 600)), vectors=data[300:], metadata=[{"odd": i % 2} for i in range(300, 600)])
        elif step == "deleted":
            col.delete(ids=list(range(0, 600, 3)))
        elif step == "compacted":
            col.optimize(compact=True)
        elif step == "reopened":
            db.close()
            db = vecpack.connect(tmp_path / "db")
            col = db.get_collection("c")
        got = answers()
        stats = col.stats()
        assert stats["scan_layout_rows"] == stats["sealed_rows"] > 0, step
        assert got == without_layout(), step
    # unfiltered searches never copied the stored rows (5 B each) into memory; the first filtered one does
    assert answers(where={"odd": 1}) == without_layout(where={"odd": 1})
    assert col.stats()["memory_bytes"] == stats["memory_bytes"] + stats["sealed_rows"] * 5
    col.optimize()  # builds no index here (flat), so the layout stays
    assert col.stats()["scan_layout_rows"] == col.stats()["sealed_rows"]
    ivf = db.create_collection("i", dim=data.shape[1], metric="l2", codec="pq10x4fs", index="ivf")
    ivf.add(ids=list(range(1200)), vectors=np.concatenate([data, data + 0.1]))  # MIN_INDEX_ROWS (1024) or more
    ivf.optimize()
    assert len(ivf.search(q[0], k=10)) == 10 and ivf.stats()["scan_layout_rows"] == 0  # an index reads the rows
    db.close()
