"""The background warm-up (``kernels.warm``) and the numpy twins that answer while it runs (``kernels.twins``):
each twin against its kernel, a collection answering through the twins as through the kernels, and a fresh
process with an empty numba cache answering its first calls at once, then switching to the kernels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import vecpack
from vecpack.codecs.pq import PQCodec
from vecpack.kernels import exact, kmeans, pq, scalar, topk, twins, warm

M, B, K = 20, 300, 10


@pytest.fixture
def heaps_and_scores(rng):
    scores = rng.normal(size=(M, B)).astype(np.float32)
    allowed = (rng.random(B) > 0.3).astype(np.uint8)
    return scores, allowed


def kernel_vs_twin(merge, scores, allowed, k=K):
    """(scores, rows) of two merges into the same heaps, sorted by the kernel."""
    out = []
    half = scores.shape[1] // 2
    for fn in (getattr(topk, merge), getattr(twins, merge)):
        hs, hr = topk.new_heaps(scores.shape[0], k)
        if merge == "merge_scores":
            fn(scores[:, :half], 0, allowed[:half], hs, hr)  # two blocks, as a scan merges them
            fn(scores[:, half:], half, allowed[half:], hs, hr)
        else:
            rows = np.where(allowed > 0, np.arange(scores.shape[1]), -1)
            fn(scores, np.broadcast_to(rows, scores.shape).copy(), hs, hr)
        topk.sort_heaps(hs, hr)
        out.append((hs, hr))
    return out


@pytest.mark.parametrize("merge", ["merge_scores", "merge_candidates"])
def test_twin_merges_keep_the_kernels_top_k(heaps_and_scores, merge):
    scores, allowed = heaps_and_scores
    (ks, kr), (ts, tr) = kernel_vs_twin(merge, scores, allowed)
    np.testing.assert_array_equal(kr, tr)
    np.testing.assert_array_equal(ks, ts)
    want = np.argsort(-np.where(allowed > 0, scores, -np.inf), axis=1, kind="stable")[:, :K]
    np.testing.assert_array_equal(kr, want)


def test_twin_merge_leaves_missing_slots_empty_and_a_valid_heap(rng):
    scores = rng.normal(size=(3, 4)).astype(np.float32)
    hs, hr = topk.new_heaps(3, K)
    twins.merge_scores(scores, 7, np.array([1, 0, 1, 1], np.uint8), hs, hr)
    assert np.all(hs[:, :-1] <= hs[:, 1:])  # ascending rows: the min-heap the kernels expect
    assert (hr == -1).sum(axis=1).tolist() == [K - 3] * 3 and set(hr[hr >= 0].tolist()) == {7, 9, 10}
    topk.merge_scores(scores + 10, 20, np.ones(4, np.uint8), hs, hr)  # the kernel goes on from the twin's heaps
    topk.sort_heaps(hs, hr)
    assert hr[:, :4].tolist() == [sorted(range(20, 24), key=lambda r: -scores[i, r - 20]) for i in range(3)]


def test_twin_sort_matches_the_kernel(rng):
    hs, hr = topk.new_heaps(M, K)
    topk.merge_scores(rng.normal(size=(M, 5)).astype(np.float32), 0, np.ones(5, np.uint8), hs, hr)
    a, b = (hs.copy(), hr.copy()), (hs.copy(), hr.copy())
    topk.sort_heaps(*a)
    twins.sort_heaps(*b)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("metric", [exact.IP, exact.COSINE, exact.L2])
def test_twin_rescore_matches_the_kernel(rng, metric):
    x = rng.normal(size=(500, 24)).astype(np.float32)
    x[3] = 0  # a zero row scores 0 under cosine
    q = rng.normal(size=(70, 24)).astype(np.float32)
    cand = rng.integers(-1, 500, size=(70, 30))
    cand[:, 0] = 3
    np.testing.assert_allclose(twins.rescore(x, q, cand, metric), exact.rescore(x, q, cand, metric),
                               rtol=1e-5, atol=1e-4)


def test_twin_int8_codes_match_the_kernel(rng):
    x = rng.normal(size=(200, 24)).astype(np.float32) * 3
    lo, step = np.full(24, -2, np.float32), np.full(24, 4 / 255, np.float32)
    codes = scalar.u8_encode(x, lo, (1 / step).astype(np.float32))
    np.testing.assert_array_equal(twins.u8_encode(x, lo, (1 / step).astype(np.float32)), codes)
    np.testing.assert_allclose(twins.u8_decode(codes, lo, step), scalar.u8_decode(codes, lo, step), rtol=1e-6)


def test_twin_kmeans_and_pq_codes_match_the_kernels(monkeypatch, rng):
    x = rng.normal(size=(3000, 8)).astype(np.float32)
    centroids = x[:64].copy()
    labels, dist = kmeans.assign(x, centroids)  # the numba loop
    with monkeypatch.context() as patch:
        patch.setattr(warm, "ready", lambda group: False)  # the BLAS products
        twin_labels, twin_dist = kmeans.assign(x, centroids)
    assert np.mean(twin_labels == labels) > 0.999  # a near-tie may round the other way
    np.testing.assert_allclose(twin_dist, dist, rtol=1e-4, atol=1e-4)
    means, counts = kmeans._update(x, labels, 64)
    twin_means, twin_counts = twins.cluster_means(x, labels, 64)
    np.testing.assert_array_equal(twin_counts, counts)
    np.testing.assert_allclose(twin_means, means, rtol=1e-6, atol=1e-7)
    cb = np.stack([kmeans.kmeans(x[:, 4 * s : 4 * s + 4], 32, seed=s) for s in range(2)])  # (M, K, ds)
    codec = PQCodec(8, "l2", "pq2", 2)
    codec.centroids, codec.trained = cb, True
    codes = pq.pq_encode(x, cb)
    np.testing.assert_array_equal(codec.encode(x), codes)
    np.testing.assert_array_equal(twins.pq_decode(codes, cb), pq.pq_decode(codes, cb))
    monkeypatch.setattr(warm, "ready", lambda group: False)  # the whole k-means and PQ encode in numpy
    assert np.mean(codec.encode(x) == codes) > 0.999
    twin_cb = kmeans.kmeans(x[:, :4], 32, seed=0)
    assert np.abs(twin_cb - cb[0]).max() < 0.05  # a flipped near-tie moves the centroids a little


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_twin_binary_scan_scores_as_the_kernel(rng, metric):
    from vecpack.codecs.binary import BinaryCodec, BinaryScorer

    x = rng.normal(size=(3000, 100)).astype(np.float32)
    codec = BinaryCodec(100, metric, "binary").fit(x)
    codes, q = codec.encode(x), rng.normal(size=(7, 100)).astype(np.float32)
    allowed = (rng.random(3000) > 0.2).astype(np.uint8)
    found = []
    for kernels in (True, False):
        heaps = topk.new_heaps(7, 50)
        BinaryScorer(codec, q, kernels=kernels).scan(codes, 5, allowed, *heaps)
        topk.sort_heaps(*heaps)
        found.append(heaps)
    np.testing.assert_allclose(found[1][0], found[0][0], rtol=1e-5, atol=1e-3)
    assert np.mean(found[1][1] == found[0][1]) > 0.97  # equal up to float rounding: near-ties may swap


@pytest.mark.parametrize("codec", ["float32", "int8", "float16", "binary", "pq8"])
def test_a_collection_answers_the_same_through_the_twins(monkeypatch, rng, codec):
    """Every search kind on growing and sealed rows, with the kernels, then with every group not ready."""
    x = rng.normal(size=(400, 24)).astype(np.float32)
    q = rng.normal(size=(20, 24)).astype(np.float32)
    with vecpack.connect() as db:
        col = db.create_collection("c", dim=24, codec=codec)
        col.add(list(range(400)), x[:400], [{"g": i % 3} for i in range(400)])

        def answers():
            return [[[h.id for h in hs] for hs in col.search(q[:m], K, where=where, rerank=rerank)]
                    for m in (1, 20) for where in (None, {"g": 1}) for rerank in (None, 30)]

        growing = answers()
        col.optimize()
        sealed = answers()
        monkeypatch.setattr(warm, "ready", lambda group: False)
        assert answers() == sealed
        col.add(list(range(400, 410)), rng.normal(size=(10, 24)).astype(np.float32))
        col.delete(list(range(400, 410)))
        assert answers() == sealed  # sealed rows plus (deleted) growing ones, through the twins
    assert growing[0] == sealed[0] or codec != "float32"  # float32 codes are exact


CHILD = """
import json, time, numpy as np, vecpack
from vecpack.kernels import warm
x = np.random.default_rng(0).normal(size=(1500, 32)).astype(np.float32)
t = time.perf_counter()
db = vecpack.connect(); col = db.create_collection("c", dim=32, codec="int8"); col.add(list(range(1500)), x)
first = [h.id for h in col.search(x[5], 3)]
col.optimize()
sealed = [h.id for h in col.search(x[6], 3)]
took = time.perf_counter() - t
waited = 0.0
while not warm.ready("int8") and waited < {timeout}:
    time.sleep(0.2); waited += 0.2
print(json.dumps({{"first": first, "sealed": sealed, "took": took, "ready": warm.ready("int8"),
                  "kernel": [h.id for h in col.search(x[6], 3)]}}))
"""


@pytest.mark.slow
def test_a_fresh_install_answers_at_once_and_warms_the_cache(tmp_path):
    """A process with an empty numba cache answers through the twins while its warm-up child compiles, then
    through the kernels; the child leaves a stamp, so the next process starts no warm-up."""
    env = os.environ | {"VECPACK_WARMUP": "1", "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
                        "VECPACK_CACHE": str(tmp_path / "vecpack")}
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD.format(timeout=600))], env=env,
                         capture_output=True, text=True, check=True, timeout=900)
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["first"][0] == "5" and out["sealed"][0] == "6" and out["kernel"] == out["sealed"]
    assert out["ready"]
    # the stamp, not warm.lock or warm.log beside it
    stamp = [p for p in (tmp_path / "vecpack" / "warm").glob("*") if not p.name.startswith("warm.")]
    for _ in range(1200):  # the child outlives its parent and finishes the other groups (minutes on 2 cores)
        stamp = stamp or [p for p in (tmp_path / "vecpack" / "warm").glob("*") if not p.name.startswith("warm.")]
        if stamp:
            break
        time.sleep(0.5)
    assert stamp and any((tmp_path / "numba").rglob("*.nbc"))
    again = subprocess.run([sys.executable, "-c", "import vecpack; from vecpack.kernels import warm; "
                            "vecpack.connect(); print(warm.ready('pq'), warm._status.everything)"],
                           env=env, capture_output=True, text=True, check=True, timeout=120)
    assert again.stdout.split() == ["True", "True"]  # the stamp: every group ready, no child started


def test_warm_up_is_off_with_vecpack_warmup_0(monkeypatch):
    assert os.environ["VECPACK_WARMUP"] == "0"  # conftest: the suite compiles on first use
    vecpack.connect().close()
    assert warm.ready("graph") and not warm._status.enabled


@pytest.mark.parametrize("index", ["graph", "ivf"])
def test_an_index_compiling_in_the_background_is_bypassed_by_a_flat_scan(monkeypatch, rng, index):
    """While an index's group is not ready, a collection of up to FLAT_ROWS rows is scanned flat (through the
    twins): the exact plan's answers, filtered or not."""
    x = rng.normal(size=(1_200, 24)).astype(np.float32)
    q = rng.normal(size=(5, 24)).astype(np.float32)
    with vecpack.connect() as db:
        col = db.create_collection("c", dim=24, codec="int8", index=index)
        col.add(list(range(1_200)), x, [{"g": i % 3} for i in range(1_200)])
        col.optimize()
        assert col.stats()["indexed_rows"] == 1_200
        exact = [[[h.id for h in hs] for hs in col.search(q, K, where=w, plan="exact")] for w in (None, {"g": 1})]
        monkeypatch.setattr(warm, "ready", lambda group: False)
        assert [[[h.id for h in hs] for hs in col.search(q, K, where=w)] for w in (None, {"g": 1})] == exact


def test_twin_merge_breaks_ties_as_the_kernel_does():
    """Integer-valued scores (binary codes, duplicate rows) tie often: the twin keeps the same rows."""
    scores = np.array([[3, 1, 3, 2, 3, 3, 1, 2] * 4], np.float32)
    for k in (1, 3, 5):
        (ks, kr), (ts, tr) = kernel_vs_twin("merge_scores", np.repeat(scores, 2, axis=0),
                                            np.ones(scores.shape[1], np.uint8), k=k)
        np.testing.assert_array_equal(kr, tr)
        np.testing.assert_array_equal(ks, ts)
        hs, hr = topk.new_heaps(2, k)  # and the twins alone, merge then sort, order them as the kernels do
        twins.merge_scores(np.repeat(scores, 2, axis=0), 0, np.ones(scores.shape[1], np.uint8), hs, hr)
        twins.sort_heaps(hs, hr)
        np.testing.assert_array_equal(kr, hr)


def test_twin_rescore_of_no_candidates_reads_nothing():
    out = twins.rescore(np.zeros((0, 8), np.float32), np.ones((2, 8), np.float32), np.full((2, 3), -1), exact.IP)
    assert out.shape == (2, 3) and np.all(out == -np.inf)
