"""RaBitQ codecs: unbiased estimates, error bounds, scans against probes, recall, save/load, bound re-rank."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vecpack.codecs import load_codec, make_codec, save_codec
from vecpack.codecs import rabitq as rabitq_module
from vecpack.codecs.rabitq import bound_rerank
from vecpack.errors import InvalidInput, UnknownSpec
from vecpack.kernels.rabitq import best_rescale
from vecpack.kernels.topk import new_heaps, sort_heaps


def exact(x: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """Exact similarities float64 (m, n)."""
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    if metric == "ip":
        return q64 @ x64.T
    return -((q64[:, None] - x64[None]) ** 2).sum(-1)


def scan_top(codec, codes, q, k):
    heaps = new_heaps(len(q), k)
    codec.scorer(q).scan(codes, 0, np.ones(len(codes), np.uint8), *heaps)
    sort_heaps(*heaps)
    return heaps


def gaussian(rng, n, d, offset=0.0):
    return (rng.normal(size=(n, d)) + offset).astype(np.float32)


def test_code_sizes_and_specs():
    assert make_codec("rabitq", 384, "ip").code_size == 48 + 16  # sign bits + 4 float32 factors
    assert make_codec("rabitq4", 384, "ip").code_size == 4 * 48 + 24  # 4 planes + 6 factors
    assert make_codec("RaBitQ8", 40, "l2").code_size == 8 * 8 + 24  # 40 dimensions pad to 64
    assert make_codec("rabitq", 65, "ip").code_size == 16 + 16


@pytest.mark.parametrize("spec", ["rabitq0", "rabitq9", "rabitqx", "rabitq1", "rabitq-2", "rabitq 4"])
def test_bad_specs_are_rejected(spec):
    with pytest.raises(UnknownSpec, match="rabitq"):
        make_codec(spec, 32, "ip")


def test_bad_codes_are_rejected(data):
    codec = make_codec("rabitq", data.shape[1], "ip").fit(data)
    with pytest.raises(InvalidInput, match=r"codes of shape \(n, 24\)"):
        codec.decode(np.zeros((3, 20), np.uint8))


@pytest.mark.parametrize("top", [1, 3, 7, 31, 127])
def test_rescale_search_finds_the_best_grid_point(rng, top):
    """The sweep's levels are in range, it reports their cosine, and no t of a dense brute-force scan does
    better (up to a fraction of 1 - cos: the sweep covers a bracket of the coarse grid's best point)."""
    d = 64
    for _ in range(5):
        a = np.abs(rng.normal(size=d)).astype(np.float32)
        a /= np.linalg.norm(a)
        e = np.zeros(d, np.int64)
        got = best_rescale(a, top, e, np.empty(d * top, np.float64), np.empty(d * top, np.int64))
        assert e.min() >= 0 and e.max() <= top
        y = e + 0.5
        assert got == pytest.approx(float(y @ a / np.linalg.norm(y)), rel=1e-9)
        grid = np.minimum(np.floor(np.linspace(1e-3, (top + 10) / a.max(), 20000)[:, None] * a), top) + 0.5
        brute = float(np.max(grid @ a / np.linalg.norm(grid, axis=1)))
        assert 1 - got <= (1.01 if top <= 31 else 1.3) * (1 - brute) + 1e-9


@pytest.mark.parametrize("spec", ["rabitq", "rabitq3"])
def test_estimator_is_unbiased_over_rotations(rng, monkeypatch, spec):
    """For fixed pairs, the estimate averaged over random rotations is the exact score."""
    d, n, m, n_rot = 45, 60, 4, 60
    x, q = gaussian(rng, n, d, 0.3), gaussian(rng, m, d, 0.3)
    true = exact(x, q, "ip")
    runs = []
    for seed in range(n_rot):
        monkeypatch.setattr(rabitq_module, "ROTATION_SEED", seed)
        codec = make_codec(spec, d, "ip").fit(x)
        runs.append(codec.estimate(q, codec.encode(x))[0])
    est = np.array(runs, dtype=np.float64)  # (n_rot, m, n)
    err = est - true
    z = err.mean(0) / (err.std(0, ddof=1) / np.sqrt(n_rot))
    assert abs(z.mean()) < 4 / np.sqrt(z.size)  # no systematic bias across pairs
    assert np.mean(np.abs(z) > 3.5) < 0.01  # nor for single pairs
    slope = np.polyfit(true.ravel(), est.mean(0).ravel(), 1)[0]
    assert slope == pytest.approx(1.0, abs=0.02)  # the biased <y, q> alone would give ~0.8


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("spec", ["rabitq", "rabitq2", "rabitq5"])
def test_error_bound_covers_the_true_score(rng, spec, metric):
    d = 101
    x, q = gaussian(rng, 800, d, 1.0), gaussian(rng, 30, d, 1.0)
    codec = make_codec(spec, d, metric).fit(x)
    codes = codec.encode(x)
    est, bound = codec.estimate(q, codes)
    err = np.abs(est - exact(x, q, metric))
    # the error is ~ normal with sd = bound / eps0 (at most): P(|Z| > 1.9) = 5.7%, P(|Z| > 3) = 0.27%
    assert np.mean(err <= bound) >= 0.93
    assert np.mean(err <= codec.estimate(q, codes, eps0=3.0)[1]) >= 0.99
    assert np.median(bound) < 10 * np.median(err)  # and is not vacuous


def test_more_bits_estimate_better(rng):
    d = 96
    x, q = gaussian(rng, 500, d), gaussian(rng, 20, d)
    true = exact(x, q, "l2")
    errors = []
    for spec in ["rabitq", "rabitq2", "rabitq4", "rabitq8"]:
        codec = make_codec(spec, d, "l2").fit(x)
        est, _ = codec.estimate(q, codec.encode(x))
        errors.append(np.abs(est - true).mean())
    assert all(b < 0.7 * a for a, b in itertools.pairwise(errors)), errors


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("spec", ["rabitq", "rabitq3", "rabitq8"])
def test_scan_matches_probe_and_ranks_well(data, rng, spec, metric):
    """The flat scan's scores equal the probe's (score_row) for the rows it returns, and rank like exact scores."""
    codec = make_codec(spec, data.shape[1], metric).fit(data)
    codes = codec.encode(data)
    q = (data[rng.choice(len(data), 25)] + 0.1 * rng.normal(size=(25, data.shape[1]))).astype(np.float32)
    scores, rows = scan_top(codec, codes, q, 10)
    probe_scores, _ = codec.estimate(q, codes)
    got = np.take_along_axis(probe_scores, rows, axis=1)
    np.testing.assert_allclose(scores, got, rtol=1e-5, atol=1e-5 * np.abs(got).max())
    by_probe = np.argsort(-probe_scores, axis=1)[:, :10]
    same = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, by_probe, strict=True)])
    assert same >= (1.0 if spec == "rabitq" else 0.97)  # extended scans prune by the 1-bit bound
    truth = np.argsort(-exact(data, q, metric), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth, strict=True)])
    assert recall >= {"rabitq": 0.4, "rabitq3": 0.75, "rabitq8": 0.97}[spec]  # 1 bit: l2 0.48, ip 0.69 (FAISS alike)


@pytest.mark.parametrize("spec", ["rabitq", "rabitq4"])
def test_scan_skips_deleted_rows_and_handles_blocks(data, spec):
    codec = make_codec(spec, data.shape[1], "ip").fit(data)
    codes = codec.encode(data)
    live = np.ones(len(data), np.uint8)
    live[::3] = 0
    q = data[:5]
    heaps = new_heaps(5, 7)
    scorer = codec.scorer(q)
    for a in range(0, len(data), 256):  # blocks of rows, as collections scan segments
        scorer.scan(codes[a : a + 256], a, live[a : a + 256], *heaps)
    sort_heaps(*heaps)
    assert np.all(live[heaps[1]] == 1)
    est, _ = codec.estimate(q, codes)
    est[:, live == 0] = -np.inf
    np.testing.assert_array_equal(heaps[1][:, 0], est.argmax(1))
    for i in range(len(q)):  # one query reads the rows in place: the same results
        one = new_heaps(1, 7)
        codec.scorer(q[i : i + 1]).scan(codes, 0, live, *one)
        sort_heaps(*one)
        np.testing.assert_array_equal(one[1][0], heaps[1][i])
        np.testing.assert_allclose(one[0][0], heaps[0][i], rtol=1e-6)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_recall_floor_on_clustered_data(rng, metric):
    """recall@10 against exact kNN without re-ranking, and with the default re-rank of 1-bit codes."""
    d = 64
    centres = rng.normal(size=(30, d))
    x = (centres[rng.integers(0, 30, 3000)] + 0.6 * rng.normal(size=(3000, d))).astype(np.float32)
    q = (x[rng.choice(3000, 50)] + 0.3 * rng.normal(size=(50, d))).astype(np.float32)
    truth = np.argsort(-exact(x, q, metric), axis=1)[:, :10]
    floors = {"rabitq": 0.38, "rabitq4": 0.85, "rabitq8": 0.96}  # measured: ip 0.51, 0.90, 0.99; l2 0.42, 0.88, 0.98
    for spec, floor in floors.items():
        codec = make_codec(spec, d, metric).fit(x)
        codes = codec.encode(x)
        r = codec.default_rerank(10)
        _, rows = scan_top(codec, codes, q, max(r, 10))
        recall = np.mean([len(set(a[:10]) & set(b)) / 10 for a, b in zip(rows, truth, strict=True)])
        assert recall >= floor, (spec, recall)
        if r:
            cand = exact(x, q, metric)
            reranked = [c[np.argsort(-s[c])[:10]] for c, s in zip(rows, cand, strict=True)]
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(reranked, truth, strict=True)])
            assert recall >= 0.97, (spec, recall)


def test_decode_reconstructs(data):
    centred = np.linalg.norm(data - data.mean(0))
    errors = {}
    for spec in ["rabitq", "rabitq4", "rabitq8"]:
        codec = make_codec(spec, data.shape[1], "l2").fit(data)
        x_hat = codec.decode(codec.encode(data))
        assert x_hat.shape == data.shape and x_hat.dtype == np.float32
        errors[spec] = np.linalg.norm(data - x_hat) / centred
    assert errors["rabitq"] < 0.65 and errors["rabitq4"] < 0.12 and errors["rabitq8"] < 0.01, errors


def test_vectors_at_the_centre_score_exactly(rng):
    x = gaussian(rng, 50, 20)
    codec = make_codec("rabitq3", 20, "l2").fit(x)
    codes = codec.encode(codec.centre[None])  # a zero residual: no direction to code
    q = gaussian(rng, 4, 20)
    est, bound = codec.estimate(q, codes)
    np.testing.assert_allclose(est[:, 0], exact(codec.centre[None], q, "l2")[:, 0], rtol=1e-5)
    assert np.all(bound == 0)


@pytest.mark.parametrize("spec", ["rabitq", "rabitq6"])
def test_save_load_round_trip(data, spec):
    codec = make_codec(spec, data.shape[1], "l2").fit(data)
    again = load_codec(save_codec(codec))
    assert (again.spec, again.bits, again.code_size) == (spec, codec.bits, codec.code_size)
    codes = codec.encode(data)
    np.testing.assert_array_equal(again.encode(data), codes)
    np.testing.assert_array_equal(again.estimate(data[:3], codes)[0], codec.estimate(data[:3], codes)[0])


def test_bound_rerank_returns_the_exact_top_k_with_few_exact_scores(rng):
    c, k = 5000, 10
    true = rng.normal(size=c)
    bound = np.full(c, 0.05)
    est = true + rng.uniform(-0.05, 0.05, size=c)
    calls = []

    def score(pos):
        calls.append(len(pos))
        return true[pos]

    pos, scores, n_exact = bound_rerank(est, bound, score, k)
    np.testing.assert_array_equal(pos, np.argsort(-true)[:k])
    np.testing.assert_allclose(scores, np.sort(true)[::-1][:k])
    assert n_exact == sum(calls) and k <= n_exact < 60  # only the candidates within the bounds' reach
    same = bound_rerank(est, bound, true, k)
    np.testing.assert_array_equal(same[0], pos)
    assert same[2] == n_exact
    loose = bound_rerank(est, np.full(c, 10.0), true, k)  # vacuous bounds: everything is scored
    assert loose[2] == c
    np.testing.assert_array_equal(loose[0], pos)


def test_bound_rerank_small_and_bad_inputs():
    pos, scores, n = bound_rerank([0.5, 0.1], [0.1, 0.1], np.array([0.4, 0.2]), 5)
    assert pos.tolist() == [0, 1] and scores.tolist() == [0.4, 0.2] and n == 2
    with pytest.raises(InvalidInput, match="1-D of one length"):
        bound_rerank([1.0, 2.0], [0.1], [1.0, 2.0], 1)
    with pytest.raises(InvalidInput, match="k must be"):
        bound_rerank([1.0], [0.1], [1.0], 0)
    with pytest.raises(InvalidInput, match=">= 0"):
        bound_rerank([1.0], [-0.1], [1.0], 1)


@pytest.mark.parametrize("spec", ["rabitq", "rabitq3"])
def test_graph_index_scores_through_the_probe(db, rng, spec):
    """A graph index walks the codes with score_row (kinds RABITQ / RABITQ_EX) and finds what a flat scan finds."""
    centres = rng.normal(size=(20, 32))
    x = (centres[rng.integers(0, 20, 2000)] + 0.35 * rng.normal(size=(2000, 32))).astype(np.float32)
    q = (x[:50] + 0.1 * rng.normal(size=(50, 32))).astype(np.float32)
    found = {}
    for index in ("flat", "graph"):
        col = db.create_collection(index, dim=32, metric="l2", codec=spec, index=index)
        col.add(ids=list(range(len(x))), vectors=x)
        col.optimize()
        hits = col.search(q, 10, **({"ef": 200} if index == "graph" else {}))
        found[index] = [[int(h.id) for h in row] for row in hits]
    truth = np.argsort(-exact(x, q, "l2"), axis=1)[:, :10]
    recall = {i: np.mean([len(set(a) & set(b)) / 10 for a, b in zip(f, truth, strict=True)]) for i, f in found.items()}
    assert recall["flat"] >= 0.93 and recall["graph"] >= recall["flat"] - 0.01, recall
