"""Residual binarization ``rbin<B>``: reconstruction, asymmetric / symmetric scorers, probe, state, bad specs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from vecpack.codecs import load_codec, make_codec, save_codec
from vecpack.errors import InvalidInput, UnknownSpec
from vecpack.kernels.probe import kind_token, score_row
from vecpack.kernels.topk import new_heaps, sort_heaps

LEVELS = [1, 2, 3, 4]


@njit(cache=True)
def probe_scores(kind_tok, qf, qw, code_rows):
    """score_row of every query against every code row: float32 (m, n)."""
    out = np.empty((qf.shape[0], code_rows.shape[0]), dtype=np.float32)
    for i in range(qf.shape[0]):
        for r in range(code_rows.shape[0]):
            out[i, r] = score_row(kind_tok, qf[i], qw[i], code_rows[r])
    return out


def scan(scorer, codes, k, live=None):
    """Top-k (scores, rows) of a flat scan, best first."""
    heaps = new_heaps(scorer.qc.shape[0], k)
    scorer.scan(codes, 0, np.ones(len(codes), np.uint8) if live is None else live, *heaps)
    sort_heaps(*heaps)
    return heaps


def all_scores(scorer, codes):
    """Scores float32 (m, n) of every row, through a full-width scan."""
    s, rows = scan(scorer, codes, len(codes))
    out = np.empty_like(s)
    np.put_along_axis(out, rows, s, axis=1)
    return out


def reference(q, x_hat, metric):
    return q @ x_hat.T if metric == "ip" else -((q[:, None] - x_hat[None]) ** 2).sum(-1)


@pytest.fixture
def queries(data, rng):
    return (data[rng.choice(len(data), 100)] + 0.1 * rng.normal(size=(100, data.shape[1]))).astype(np.float32)


def test_code_size_and_bad_specs():
    assert [make_codec(f"rbin{b}", 384, "ip").code_size for b in LEVELS] == [48, 96, 144, 192]
    assert make_codec("rbin3", 65, "l2").code_size == 3 * 16
    for spec in ["rbin0", "rbin5"]:
        with pytest.raises(UnknownSpec, match=r"rbin<B> needs 1 <= B <= 4"):
            make_codec(spec, 32, "ip")
    for spec in ["rbin", "rbinx", "rbin-1"]:
        with pytest.raises(UnknownSpec, match="unknown codec spec"):
            make_codec(spec, 32, "ip")


def test_reconstruction_error_strictly_decreases_with_levels(data):
    errors = []
    for b in LEVELS:
        codec = make_codec(f"rbin{b}", data.shape[1], "ip").fit(data)
        errors.append(float(np.linalg.norm(data - codec.decode(codec.encode(data)))))
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    centred = np.linalg.norm(data - data.mean(0))
    assert errors[0] < 0.7 * centred and errors[-1] < 0.15 * centred, (errors, centred)


def reference_rbin(x, levels):
    """Plain numpy, no rotation: mean, per-level least-squares scales float32 (B, d), reconstruction (n, d)."""
    mu = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    r = x - mu
    scales = np.empty((levels, x.shape[1]), dtype=np.float32)
    for i in range(levels):
        scales[i] = np.abs(r).mean(axis=0, dtype=np.float64)
        r = r - np.where(r > 0, scales[i], -scales[i])
    return mu, scales, x - r


@pytest.mark.parametrize("levels", LEVELS)
def test_encoding_matches_reference_and_learned_rotation_helps(data, levels):
    codec = make_codec(f"rbin{levels}", data.shape[1], "ip").fit(data)
    np.testing.assert_allclose(codec.rotation @ codec.rotation.T, np.eye(data.shape[1]), atol=1e-5)
    mu, scales, x_ref = reference_rbin(data, levels)
    plain = make_codec(f"rbin{levels}", data.shape[1], "ip")
    plain.set_state({"mu": mu, "rotation": np.eye(data.shape[1], dtype=np.float32), "scales": scales})
    np.testing.assert_allclose(plain.decode(plain.encode(data)), x_ref, rtol=1e-5, atol=1e-5)
    learned = np.linalg.norm(data - codec.decode(codec.encode(data)))
    assert learned < 0.97 * np.linalg.norm(data - x_ref)


def test_rbin1_without_rotation_is_binary(data, queries):
    """Level 0 is binary's code: the same mean, sign and least-squares scale, so the same codes and scores."""
    binary = make_codec("binary", data.shape[1], "ip").fit(data)
    rbin = make_codec("rbin1", data.shape[1], "ip").fit(data)
    rbin.set_state({"mu": binary.mu, "rotation": np.eye(data.shape[1], dtype=np.float32), "scales": binary.sigma[None]})
    np.testing.assert_array_equal(rbin.encode(data), binary.encode(data))
    codes = binary.encode(data)
    np.testing.assert_allclose(
        all_scores(rbin.scorer(queries), codes), all_scores(binary.scorer(queries), codes), rtol=1e-5, atol=1e-4
    )


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_rbin1_ranks_like_binary_and_every_level_adds_recall(data, queries, metric):
    """recall@10 of a flat scan (no re-rank): rbin1 at least binary's, then strictly better with every level."""
    truth = np.argsort(-reference(queries, data, metric), axis=1)[:, :10]

    def recall(spec):
        codec = make_codec(spec, data.shape[1], metric).fit(data)
        rows = scan(codec.scorer(queries), codec.encode(data), 10)[1]
        return np.mean([len(set(t) & set(r)) / 10 for t, r in zip(truth, rows, strict=True)])

    got = [recall(f"rbin{b}") for b in LEVELS]
    assert got[0] >= recall("binary") - 0.02, got
    assert all(b >= a + 0.02 for a, b in itertools.pairwise(got)), got
    assert got[-1] >= 0.7, got


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("levels", LEVELS)
def test_scorer_equals_probe_equals_decoded_scores(data, queries, levels, metric):
    codec = make_codec(f"rbin{levels}", data.shape[1], metric).fit(data)
    codes = codec.encode(data)
    scorer = codec.scorer(queries)
    got = all_scores(scorer, codes)
    probe = codec.probe(queries)
    via_probe = probe_scores(kind_token(probe.kind), probe.qf, probe.qw, probe.view(codes))
    np.testing.assert_allclose(via_probe, got, rtol=1e-5, atol=1e-3)
    # every term's weights are quantised to 4-bit levels: at most half a level (qb / 2) off per dimension
    want = reference(queries, codec.decode(codes), metric)
    bound = scorer.qb.sum(axis=1) * data.shape[1] / 2
    err = np.abs(got - want)
    assert np.all(err <= bound[:, None] + 1e-3)
    assert err.mean() <= 0.1 * bound.mean()


def unpack_signs(codec, codes):
    """sigma in {-1, 1}, float64 (B, n, dim), of codes."""
    w = 8 * codec.words
    levels = [
        np.unpackbits(codes[:, w * i : w * (i + 1)], axis=1, bitorder="little")[:, : codec.dim]
        for i in range(codec.levels)
    ]
    return 2.0 * np.stack(levels).astype(np.float64) - 1.0


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("levels", [1, 3])
def test_symmetric_scorer_equals_its_definition(data, queries, levels, metric):
    """sum_{i,k} w_i w_k <sigma_i^q, sigma_k^x> (+ <q, mu>) for ip; -||sum_i w_i (sigma_i^q - sigma_i^x)||^2 for l2."""
    codec = make_codec(f"rbin{levels}", data.shape[1], metric).fit(data)
    codes = codec.encode(data[:200])
    w = codec.scales.mean(axis=1, dtype=np.float64)
    sx = unpack_signs(codec, codes)
    # the query binarized the same way: its own bits for l2; for ip the bits of q R (encode centres by mu)
    sq = unpack_signs(codec, codec.encode(queries if metric == "l2" else queries + codec.mu))
    xq, xx = np.einsum("i,ind->nd", w, sq), np.einsum("i,ind->nd", w, sx)
    want = xq @ xx.T + (queries @ codec.mu)[:, None] if metric == "ip" else -((xq[:, None] - xx[None]) ** 2).sum(-1)
    got = all_scores(codec.symmetric_scorer(queries), codes)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3 * np.abs(want).max())


def test_deleted_rows_are_never_returned(data, queries):
    codec = make_codec("rbin2", data.shape[1], "l2").fit(data)
    codes = codec.encode(data)
    live = np.ones(len(data), np.uint8)
    live[::2] = 0
    for scorer in (codec.scorer(queries), codec.symmetric_scorer(queries)):
        rows = scan(scorer, codes, 20, live)[1]
        assert np.all(rows % 2 == 1)


def test_save_load_round_trip(data, queries):
    codec = make_codec("rbin3", data.shape[1], "l2").fit(data)
    again = load_codec(save_codec(codec))
    assert (again.spec, again.dim, again.metric, again.code_size) == ("rbin3", codec.dim, "l2", codec.code_size)
    codes = codec.encode(data)
    np.testing.assert_array_equal(again.encode(data), codes)
    np.testing.assert_array_equal(all_scores(again.scorer(queries), codes), all_scores(codec.scorer(queries), codes))


def test_bad_state_and_untrained(data):
    codec = make_codec("rbin2", data.shape[1], "ip")
    with pytest.raises(InvalidInput, match="not trained"):
        codec.encode(data)
    state = make_codec("rbin3", data.shape[1], "ip").fit(data).state()
    with pytest.raises(InvalidInput, match="scales"):
        codec.set_state(state)
    with pytest.raises(InvalidInput, match=r"expects shape \(n, 40\)"):
        codec.fit(data[:, :10])


@settings(max_examples=25, deadline=None)
@given(
    levels=st.sampled_from(LEVELS),
    metric=st.sampled_from(["ip", "l2"]),
    n=st.integers(1, 40),
    d=st.integers(1, 70),
    seed=st.integers(0, 2**16),
)
def test_shapes_and_dtypes_property(levels, metric, n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    codec = make_codec(f"rbin{levels}", d, metric).fit(x)
    codes = codec.encode(x)
    assert codes.shape == (n, codec.code_size) and codes.dtype == np.uint8
    x_hat = codec.decode(codes)
    assert x_hat.shape == (n, d) and x_hat.dtype == np.float32
    k = min(5, n)
    for scorer in (codec.scorer(x[:3]), codec.symmetric_scorer(x[:3])):
        scores, rows = scan(scorer, codes, k)
        assert rows.shape == (min(3, n), k) and set(rows.ravel()) <= set(range(n))
        assert np.all(np.diff(scores, axis=1) <= 0)
