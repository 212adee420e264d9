"""ANN peers (hnswlib, usearch, FAISS HNSW / IVF, ScaNN, SVS Vamana): shapes, row ranges, recall, memory, skips."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from vecpack.bench import ann_peers
from vecpack.bench.ann_peers import (
    ALL_PEERS,
    SCANN_REORDER,
    SVS_DEGREES,
    build_ann_peers,
    default_nlist,
    leaves_sweep,
    nprobe_sweep,
    scann_num_leaves,
)
from vecpack.search import prepare

N, D, M, K = 2000, 32, 100, 10
HAVE = {name: importlib.util.find_spec(name) is not None for name in ("hnswlib", "usearch", "faiss", "scann", "svs")}
KNOBS = {"graph": ("ef", "search_window_size"), "ivf": ("nprobe", "leaves_to_search")}
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


def lvq_refused(skipped: list[str]) -> bool:
    """SVS refuses LVQ builds on non-Intel CPUs; the LVQ peers are then skipped with its reason."""
    return any(why.startswith("svs-vamana-lvq8 skipped: SVS refused") for why in skipped)


def test_every_available_library_is_built(built):
    _, peers, skipped, _ = built
    missing = [why for why in skipped if "not importable" in why]
    assert len(missing) == sum(not ok for ok in HAVE.values())  # one reason per missing library
    assert len(skipped) == len(missing) + lvq_refused(skipped)  # and no other reason but an LVQ refusal
    families = {p.name.split()[0] for p in peers}
    assert families == {name for name, ok in HAVE.items() if ok}
    if not peers:
        pytest.skip("no ANN library importable")
    svs = len(SVS_DEGREES) * (3 - lvq_refused(skipped))  # float32, float16 and (unless refused) LVQ8, per degree
    assert len(peers) == (
        HAVE["hnswlib"] + HAVE["usearch"] + 4 * HAVE["faiss"] + len(SCANN_REORDER) * HAVE["scann"] + svs * HAVE["svs"]
    )


def test_rows_and_recall(built, corpus):
    metric, peers, _, truth = built
    q = corpus[1]
    if not peers:
        pytest.skip("no ANN library importable")
    for p in peers:
        assert p.family in KNOBS and p.knob in KNOBS[p.family], p.name
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
    leaves = scann_num_leaves(N)
    assert leaves == N // 100 == 20 and scann_num_leaves(100_000) == scann_num_leaves(10**7) == 1000
    assert scann_num_leaves(60) == 1 and leaves_sweep(1) == [1]
    assert leaves_sweep(20) == [1, 2, 3, 4, 6, 8, 12, 16, 20]
    for p in peers:
        if p.knob == "nprobe":
            assert p.knob_values == nprobe_sweep(nlist) and f"nlist={nlist}" in p.name
        elif p.knob == "leaves_to_search":
            assert p.knob_values == leaves_sweep(leaves) and f"leaves={leaves}" in p.name


def test_small_corpus_pads_and_skips_pq():
    """k > n pads with -1; too few rows to train 256 PQ centroids skips pq with a reason; ef < k is clamped."""
    if not any(HAVE.values()):
        pytest.skip("no ANN library importable")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 16)).astype(np.float32)
    peers, skipped = build_ann_peers(x, "ip", threads=1, nlist=4, search_threads=2)
    if HAVE["faiss"]:
        faiss_skips = [why for why in skipped if why.startswith("faiss")]
        assert len(faiss_skips) == 1 and "faiss-ivf-pq<m>" in faiss_skips[0] and "256" in faiss_skips[0]
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
    for name in ("hnswlib", "usearch", "usearch.index", "faiss", "scann", "svs"):
        monkeypatch.setitem(sys.modules, name, None)  # import -> ImportError
    x = np.random.default_rng(3).normal(size=(300, 8)).astype(np.float32)
    peers, skipped = build_ann_peers(x, "cosine", threads=1)
    assert peers == []
    assert len(skipped) == 5  # svs once for svs-vamana and svs-vamana-lvq8
    assert any(s.startswith("hnswlib peer skipped") for s in skipped)
    assert any(s.startswith("usearch peer skipped") for s in skipped)
    assert any("faiss is not importable" in s for s in skipped)
    assert any(s.startswith("scann peer skipped") for s in skipped)
    assert any(s.startswith("svs peer skipped") and "svs-vamana-lvq8" in s for s in skipped)


def test_bad_arguments():
    x = np.zeros((10, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="metric"):
        build_ann_peers(x, "dot", threads=1)
    with pytest.raises(ValueError, match="unknown peer"):
        build_ann_peers(x, "l2", threads=1, which=("annoy",))
    with pytest.raises(ValueError, match="unknown IVF code"):
        build_ann_peers(x, "l2", threads=1, which=("faiss-ivf",), ivf_codes=("opq",))
    assert set(ALL_PEERS) == {"hnswlib", "usearch", "faiss-hnsw", "faiss-ivf", "scann", "svs-vamana", "svs-vamana-lvq8"}


def test_one_query_per_call_matches_the_batch(built, corpus):
    """ScaNN searches one query with ``search`` and several with ``search_batched``; SVS takes both alike."""
    _, peers, _, _ = built
    q = corpus[1][:20]
    new = [p for p in peers if p.name.split()[0] in ("scann", "svs")]
    if not new:
        pytest.skip("neither scann nor svs importable")
    for p in new:
        knob = p.knob_values[len(p.knob_values) // 2]
        one = np.concatenate([p.search(q[i : i + 1], K, knob) for i in range(len(q))])
        np.testing.assert_array_equal(one, p.search(q, K, knob), err_msg=p.name)


@pytest.mark.skipif(not HAVE["svs"], reason="svs not importable")
def test_svs_lvq_refusal_is_a_skip(monkeypatch):
    """Where SVS refuses LVQ (non-Intel CPUs), the LVQ peers are skipped with its message; the others still build."""
    why = "exit status 1: LVQ and Leanvec functionality of SVS is not supported on non-Intel hardware."
    monkeypatch.setattr(ann_peers, "svs_lvq_refusal", lambda: why)
    x = np.random.default_rng(4).normal(size=(200, 8)).astype(np.float32)
    peers, skipped = build_ann_peers(x, "l2", threads=1, which=("svs-vamana", "svs-vamana-lvq8"))
    assert skipped == [f"svs-vamana-lvq8 skipped: SVS refused the LVQ build ({why})"]
    assert [p.name.split()[-1] for p in peers] == ["float32"] * len(SVS_DEGREES) + ["float16"] * len(SVS_DEGREES)


def test_svs_lvq_probe_reports_the_childs_last_error_line(monkeypatch):
    monkeypatch.setattr(ann_peers, "_LVQ_PROBE", "import sys; print('log', file=sys.stderr); sys.exit('refused here')")
    assert ann_peers.svs_lvq_refusal.__wrapped__() == "exit status 1: refused here"
    monkeypatch.setattr(ann_peers, "_LVQ_PROBE", "pass")
    assert ann_peers.svs_lvq_refusal.__wrapped__() is None
