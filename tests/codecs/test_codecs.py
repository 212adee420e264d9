"""Every codec: round trip, estimator accuracy against exact scores, config round trip, bad specs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecpack.codecs import load_codec, make_codec, save_codec
from vecpack.errors import CorruptData, InvalidInput, UnknownSpec
from vecpack.kernels.topk import new_heaps, sort_heaps

SPECS = ["float32", "float16", "bf16", "int8", "int4", "lvq8", "lvq4", "lvq4x4", "lvq4x8", "binary", "pq8"]
# relative reconstruction error bound (||x - decode(encode(x))|| / ||x - mean||) per codec
MAX_REL_ERROR = {"float32": 0.0, "float16": 1e-3, "bf16": 0.01, "int8": 0.02, "int4": 0.12, "lvq8": 0.01,
                 "lvq4": 0.12, "lvq4x4": 0.01, "lvq4x8": 0.001, "binary": 0.9, "pq8": 0.6}
# minimum Spearman-like agreement: fraction of the exact top-10 found in the codec's top-50 (no rerank)
MIN_TOP_OVERLAP = {"float32": 1.0, "float16": 1.0, "bf16": 0.99, "int8": 0.99, "int4": 0.95, "lvq8": 0.99,
                   "lvq4": 0.95, "lvq4x4": 0.99, "lvq4x8": 0.99, "binary": 0.6, "pq8": 0.75}


@pytest.fixture
def trained(data):
    def make(spec, metric="ip"):
        return make_codec(spec, data.shape[1], metric).fit(data)

    return make


@pytest.mark.parametrize("spec", SPECS)
def test_round_trip(trained, data, spec):
    codec = trained(spec)
    codes = codec.encode(data)
    assert codes.dtype == np.uint8 and codes.shape == (len(data), codec.code_size)
    x_hat = codec.decode(codes)
    assert x_hat.dtype == np.float32 and x_hat.shape == data.shape
    centred = np.linalg.norm(data - data.mean(0))
    assert np.linalg.norm(data - x_hat) <= MAX_REL_ERROR[spec] * centred + 1e-6


def test_code_sizes():
    d = 384
    sizes = {s: make_codec(s, d, "ip").code_size for s in ["float32", "float16", "int8", "binary", "pq48"]}
    assert sizes == {"float32": 1536, "float16": 768, "int8": 384, "binary": 48, "pq48": 48}
    assert make_codec("binary", 65, "ip").code_size == 16  # padded to whole 64-bit words


def scan_top(codec, codes, q, k):
    heaps = new_heaps(len(q), k)
    codec.scorer(q).scan(codes, 0, np.ones(len(codes), np.uint8), *heaps)
    sort_heaps(*heaps)
    return heaps


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("spec", SPECS)
def test_scores_estimate_exact_similarity(trained, data, rng, spec, metric):
    """The scorer's scores equal <q, decode(code)> (or -||q - decode||^2), and rank like exact scores."""
    codec = trained(spec, metric)
    codes = codec.encode(data)
    q = (data[rng.choice(len(data), 17)] + 0.1 * rng.normal(size=(17, data.shape[1]))).astype(np.float32)
    scores, rows = scan_top(codec, codes, q, 50)
    x_hat = codec.decode(codes)
    approx = q @ x_hat.T if metric == "ip" else -((q[:, None] - x_hat[None]) ** 2).sum(-1)
    got = np.take_along_axis(approx, rows, axis=1)
    if spec == "binary":
        # the query is quantised to 4-bit levels of q * sigma: each dimension errs by at most
        # half a level, and the score weighs the error by 2 (ip) or 4 (l2)
        qs = (q - codec.mu if metric == "l2" else q) * codec.sigma
        level = (qs.max(1) - qs.min(1)) / 15
        bound = (2 if metric == "ip" else 4) * data.shape[1] * level / 2
        assert np.all(np.abs(scores - got) <= bound[:, None] + 1e-4)
        assert np.abs(scores - got).mean() <= 0.1 * bound.mean()
    else:
        scale = np.abs(approx).max()
        np.testing.assert_allclose(scores, got, atol=1e-4 * scale)
    exact = q @ data.T if metric == "ip" else -((q[:, None] - data[None]) ** 2).sum(-1)
    truth = np.argsort(-exact, axis=1)[:, :10]
    overlap = np.mean([len(set(t) & set(r)) / 10 for t, r in zip(truth, rows, strict=True)])
    assert overlap >= MIN_TOP_OVERLAP[spec]


@pytest.mark.parametrize("spec", SPECS)
def test_save_load_round_trip(trained, data, spec):
    codec = trained(spec)
    again = load_codec(save_codec(codec))
    assert (again.spec, again.dim, again.metric, again.code_size) == (codec.spec, codec.dim, "ip", codec.code_size)
    np.testing.assert_array_equal(again.encode(data), codec.encode(data))


def test_damaged_codec_file_is_reported(trained):
    blob = bytearray(save_codec(trained("int8")))
    with pytest.raises(CorruptData, match="unreadable"):
        load_codec(bytes(blob[: len(blob) // 2]))


@pytest.mark.parametrize("spec", ["", "pq", "pq0", "int9", "binary2", "float64", "rabitqx", "lvq3"])
def test_bad_specs_are_rejected(spec):
    with pytest.raises((UnknownSpec, InvalidInput)):
        make_codec(spec, 32, "ip")


def test_untrained_and_undersized_training(data):
    codec = make_codec("pq8", data.shape[1], "ip")
    with pytest.raises(InvalidInput, match="not trained"):
        codec.encode(data)
    with pytest.raises(InvalidInput, match="at least 256 training vectors"):
        codec.fit(data[:100])
    with pytest.raises(InvalidInput, match=r"expects shape \(n, 40\)"):
        make_codec("int8", 40, "ip").fit(data[:, :10])


@settings(max_examples=25, deadline=None)
@given(
    spec=st.sampled_from(["float32", "float16", "int8", "binary"]),
    n=st.integers(1, 40),
    d=st.integers(1, 70),
    seed=st.integers(0, 2**16),
)
def test_shapes_and_dtypes_property(spec, n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    codec = make_codec(spec, d, "ip").fit(x)
    codes = codec.encode(x)
    assert codes.shape == (n, codec.code_size) and codes.dtype == np.uint8
    assert codec.decode(codes).shape == (n, d)
    k = min(5, n)
    scores, rows = scan_top(codec, codes, x[:3], k)
    assert rows.shape == (min(3, n), k) and set(rows.ravel()) <= set(range(n))
    assert np.all(np.diff(scores, axis=1) <= 0)


# -- extreme rows (issue 19) -------------------------------------------------------------------------------------
EXTREME_SPECS = [*SPECS, "pq8x4fs", "rbin2", "rabitq", "rabitq4", "pca16,int8", "opq8,pq8"]


def extreme_rows(d: int) -> np.ndarray:
    """Rows at the accepted limits: +-1e15 everywhere, mixed signs, one huge dimension, zero, tiny."""
    rows = np.zeros((5, d), np.float32)
    rows[0] = 1e15
    rows[1, ::2], rows[1, 1::2] = -1e15, 1e15
    rows[2, 3] = -1e15
    rows[4] = 1e-12
    return rows


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("spec", EXTREME_SPECS)
def test_extreme_rows_encode_to_finite_scores(data, spec, metric):
    """Encoding runs after a write's commit: a row at the accepted limits must encode (float16 and LVQ raised, and
    every later seal failed) and score finitely, without changing how the other rows score."""
    codec = make_codec(spec, data.shape[1], metric).fit(data)
    codes = codec.encode(np.vstack([data, extreme_rows(data.shape[1])]))
    np.testing.assert_array_equal(codes[: len(data)], codec.encode(data))
    q = data[:8]
    heap_s, heap_r = new_heaps(len(q), 10)
    codec.scorer(q).scan(codes, 0, np.ones(len(codes), np.uint8), heap_s, heap_r)
    assert np.isfinite(heap_s).all() and (heap_r >= 0).all()


@pytest.mark.parametrize("spec", ["int8", "binary", "pq8", "lvq8", "pca16,int8"])
def test_fitting_on_inliers_keeps_an_outlier_from_setting_the_codec(data, spec):
    """One row of huge values in the sample: fitted on ``inliers`` the codec ranks the other rows as without it."""
    from vecpack.codecs.base import inliers

    sample = np.vstack([data, np.full((1, data.shape[1]), 1e14, np.float32)])
    keep = inliers(sample)
    assert keep.tolist() == list(range(len(data)))  # exactly the outlier is left out (the near-zero row stays)
    clean = make_codec(spec, data.shape[1], "l2").fit(data)
    robust = make_codec(spec, data.shape[1], "l2").fit(sample[keep])
    np.testing.assert_array_equal(robust.encode(data), clean.encode(data))
