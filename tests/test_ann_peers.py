"""ANN peers (hnswlib, usearch, FAISS HNSW / IVF): shapes, row ranges, recall, memory, skips."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from vecpack.bench.ann_peers import ALL_PEERS, build_ann_peers, default_nlist, nprobe_sweep
from vecpack.search import prepare

N, D, M, K = 2000, 32, 100, 10
HAVE = {name: importlib.util.find_spec(name) is not None for name in ("hnswlib", "usearch", "faiss")}
# pq<m> (= pq4 at d=32: 4 bytes a vector) is code-limited well below 0.9 recall; pq32 checks the same
# IndexIVFPQ plumbing with codes fine enough to be held to the 0.9 bar.
MIN_RECALL = {"IndexIVFPQ(M=4,": 0.4}


def clustered(rng: np.random.Generator, n: int, centers: np.ndarray) -> np.ndarray:
    return (centers[rng.integers(0, len(centers), n)] + 0.5 * rng.normal(size=(n, centers.shape[1]))).astype(np.float32)


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, D))
    return clustered(rng, N, centers), clustered(rng, M, centers)


@pytest.fixture(scope="module", params=["cosine", "l2"])
def built(request, corpus):
    x, q = corpus
    metric = request.param
    peers, skipped = build_ann_peers(x, metric, threads=2, ivf_codes=("sq8", "pq<m>", "pq32"))
    xp, qp = prepare(x, metric), prepare(q, metric)
    s = qp @ xp.T if metric != "l2" else 2 * qp @ xp.T - np.einsum("ij,ij->i", xp, xp)
    truth = np.argsort(-s, axis=1, kind="stable")[:, :K]
    return metric, peers, skipped, truth


def recall(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) for a, b in zip(rows, truth, strict=True)]) / K)


def test_every_available_library_is_built(built):
    _, peers, skipped, _ = built
    assert len(skipped) == sum(not ok for ok in HAVE.values())  # one reason per missing library, nothing else
    assert all("not importable" in why for why in skipped)
    families = {p.name.split()[0] for p in peers}
    assert families == {name for name, ok in HAVE.items() if ok}
    if not peers:
        pytest.skip("no ANN library importable")
    assert len(peers) == HAVE["hnswlib"] + HAVE["usearch"] + 4 * HAVE["faiss"]


def test_rows_and_recall(built, corpus):
    metric, peers, _, truth = built
    q = corpus[1]
    if not peers:
        pytest.skip("no ANN library importable")
    for p in peers:
        assert p.family in ("graph", "ivf")
        assert p.knob == ("ef" if p.family == "graph" else "nprobe")
        assert p.knob_values == sorted(set(p.knob_values)) and p.knob_values[0] >= 1
        assert p.memory_bytes > 0 and p.build_s >= 0
        for value in (p.knob_values[0], p.knob_values[-1]):
            rows = p.search(q, K, value)
            assert rows.dtype == np.int64 and rows.shape == (M, K), p.name
            assert ((rows >= -1) & (rows < N)).all(), p.name
        assert (rows >= 0).all(), p.name  # the largest knob value finds k rows for every query
        bar = next((v for key, v in MIN_RECALL.items() if p.name.split(" ", 1)[1].startswith(key)), 0.9)
        got = recall(rows, truth)
        assert got >= bar, f"{metric} {p.name}: recall@{K} {got:.3f} < {bar}"
        assert got >= recall(p.search(q, K, p.knob_values[0]), truth) - 0.02, p.name


def test_sweeps_and_nlist(built):
    _, peers, _, _ = built
    nlist = default_nlist(N)
    assert nlist == round(4 * N**0.5) == 179
    assert nprobe_sweep(nlist) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert nprobe_sweep(20) == [1, 2, 4, 8, 16, 20]
    assert default_nlist(1) == 1
    for p in peers:
        if p.family == "ivf":
            assert p.knob_values == nprobe_sweep(nlist) and f"nlist={nlist}" in p.name


def test_small_corpus_pads_and_skips_pq():
    """k > n pads with -1; too few rows to train 256 PQ centroids skips pq with a reason; ef < k is clamped."""
    if not any(HAVE.values()):
        pytest.skip("no ANN library importable")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 16)).astype(np.float32)
    peers, skipped = build_ann_peers(x, "ip", threads=1, nlist=4, search_threads=2)
    if HAVE["faiss"]:
        assert len(skipped) == 1 and "faiss-ivf-pq<m>" in skipped[0] and "256" in skipped[0]
    for p in peers:
        rows = p.search(x[:5], 70, p.knob_values[-1])
        assert rows.shape == (5, 70) and rows.dtype == np.int64, p.name
        for r in rows:
            found = r[r >= 0]
            assert (r[len(found) :] == -1).all() and len(set(found.tolist())) == len(found) <= 60, p.name
            assert len(found) >= 55, p.name  # largest ef / nprobe = nlist: (nearly) every row is reachable
        assert p.search(x[:0], 3, p.knob_values[-1]).shape == (0, 3), p.name
        if p.family == "graph":  # ef 10 < k 20 runs with ef = k
            assert (p.search(x[:5], 20, 10) >= 0).all(), p.name


@pytest.mark.skipif(not HAVE["faiss"], reason="faiss not importable")
def test_faiss_threads_restored():
    import faiss

    before = faiss.omp_get_max_threads()
    x = np.random.default_rng(2).normal(size=(300, 8)).astype(np.float32)
    peers, _ = build_ann_peers(x, "l2", threads=1, which=("faiss-hnsw", "faiss-ivf-sq8"), search_threads=1)
    assert [p.name.split()[1] for p in peers] == ["IndexHNSWFlat", "IndexIVFScalarQuantizer(QT_8bit)"]
    for p in peers:
        p.search(x[:3], 5, p.knob_values[-1])
    assert faiss.omp_get_max_threads() == before


def test_missing_libraries_are_skipped_with_reasons(monkeypatch):
    for name in ("hnswlib", "usearch", "usearch.index", "faiss"):
        monkeypatch.setitem(sys.modules, name, None)  # import -> ImportError
    x = np.random.default_rng(3).normal(size=(300, 8)).astype(np.float32)
    peers, skipped = build_ann_peers(x, "cosine", threads=1)
    assert peers == []
    assert len(skipped) == 3
    assert any(s.startswith("hnswlib peer skipped") for s in skipped)
    assert any(s.startswith("usearch peer skipped") for s in skipped)
    assert any("faiss is not importable" in s for s in skipped)


def test_bad_arguments():
    x = np.zeros((10, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="metric"):
        build_ann_peers(x, "dot", threads=1)
    with pytest.raises(ValueError, match="unknown peer"):
        build_ann_peers(x, "l2", threads=1, which=("annoy",))
    with pytest.raises(ValueError, match="unknown IVF code"):
        build_ann_peers(x, "l2", threads=1, which=("faiss-ivf",), ivf_codes=("opq",))
    assert set(ALL_PEERS) == {"hnswlib", "usearch", "faiss-hnsw", "faiss-ivf"}
