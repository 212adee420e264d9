"""LVQ codecs (lvq8, lvq4, lvq4x4, lvq4x8) and int4 against plain-numpy references of their row layouts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecpack.codecs import load_codec, make_codec, save_codec
from vecpack.codecs.lvq import DECODE_BATCH
from vecpack.errors import InvalidInput, UnknownSpec
from vecpack.kernels.probe import probe_rescore, refine_rows
from vecpack.kernels.topk import new_heaps, sort_heaps

LVQ_SPECS = ["lvq8", "lvq4", "lvq4x4", "lvq4x8"]
SPECS = [*LVQ_SPECS, "int4"]
# (primary bits, residual bits)
LEVELS = {"lvq8": (8, 0), "lvq4": (4, 0), "lvq4x4": (4, 4), "lvq4x8": (4, 8)}
# relative reconstruction error bound: ||x - decode(encode(x))|| / ||x - mean||
MAX_REL_ERROR = {"lvq8": 0.01, "lvq4": 0.12, "lvq4x4": 0.01, "lvq4x8": 0.001, "int4": 0.12}
# fraction of the exact top-10 in the scorer's top-10 (no re-rank), 100 queries
MIN_RECALL = {"lvq8": 0.97, "lvq4": 0.8, "lvq4x4": 0.96, "lvq4x8": 0.99, "int4": 0.8}


# -- numpy references of the row layout ---------------------------------------------------------
def unpack(part: np.ndarray, d: int, nibbles: bool) -> np.ndarray:
    """Codes int64 (n, d) of a byte part (n, bytes): bytes as they are, or split-halves nibbles."""
    if not nibbles:
        return part[:, :d].astype(np.int64)
    return np.concatenate([part & 15, part >> 4], axis=1)[:, :d].astype(np.int64)


def lvq_fields(codes: np.ndarray, spec: str, d: int):
    """(scale, bias) float64 (n,) from the float16 header; primary c and residual u int64 (n, d) (u None)."""
    b1, b2 = LEVELS[spec]
    h = (d + 1) // 2
    header = np.ascontiguousarray(codes[:, :4]).view(np.float16).astype(np.float64)
    p_end = 4 + (d if b1 == 8 else h)
    c = unpack(codes[:, 4:p_end], d, b1 == 4)
    u = unpack(codes[:, p_end:], d, b2 == 4) if b2 else None
    return header[:, 0], header[:, 1], c, u


def lvq_reference(codes: np.ndarray, codec, full: bool) -> np.ndarray:
    """Reconstructions float64 (n, d): primary level, or both levels with full."""
    scale, bias, c, u = lvq_fields(codes, codec.spec, codec.dim)
    x = codec.mu + bias[:, None] + scale[:, None] * c
    if full and u is not None:
        b2 = LEVELS[codec.spec][1]
        x = x + (scale / 2**b2)[:, None] * (u - 2 ** (b2 - 1))
    return x


def similarity(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    """<q, x> or -||q - x||^2, float64 (m, n)."""
    q, x = q.astype(np.float64), x.astype(np.float64)
    if metric == "ip":
        return q @ x.T
    return -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def probe_scores(probe, q_count: int, codes: np.ndarray) -> np.ndarray:
    """score_row of every query against every row, float32 (m, n), through the probe's kind."""
    rows = np.ascontiguousarray(np.broadcast_to(codes, (q_count, *codes.shape)))
    return probe_rescore(probe.kind, probe.qf, probe.qw, probe.view(rows))


def scan_top(codec, codes, q, k):
    heaps = new_heaps(len(q), k)
    codec.scorer(q).scan(codes, 0, np.ones(len(codes), np.uint8), *heaps)
    sort_heaps(*heaps)
    return heaps


def queries(rng, x: np.ndarray, m: int) -> np.ndarray:
    return (x[rng.choice(len(x), m)] + 0.1 * rng.normal(size=(m, x.shape[1]))).astype(np.float32)


@pytest.fixture(params=[40, 39], ids=["d40", "d39"])
def x(request, data):
    """The shared data, and its first 39 columns (an odd dimension)."""
    return np.ascontiguousarray(data[:, : request.param])


# -- layout and round trip ----------------------------------------------------------------------
def test_code_sizes():
    sizes = {s: make_codec(s, 384, "ip").code_size for s in SPECS}
    assert sizes == {"lvq8": 388, "lvq4": 196, "lvq4x4": 388, "lvq4x8": 580, "int4": 192}
    odd = {s: make_codec(s, 5, "ip").code_size for s in SPECS}
    assert odd == {"lvq8": 9, "lvq4": 7, "lvq4x4": 10, "lvq4x8": 13, "int4": 3}


@pytest.mark.parametrize("spec", SPECS)
def test_round_trip_error(x, spec):
    codec = make_codec(spec, x.shape[1], "ip").fit(x)
    codes = codec.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (len(x), codec.code_size)
    x_hat = codec.decode(codes)
    assert x_hat.dtype == np.float32 and x_hat.shape == x.shape
    assert np.linalg.norm(x - x_hat) <= MAX_REL_ERROR[spec] * np.linalg.norm(x - x.mean(0))
    if spec == "int4":
        return
    scale, _, _, _ = lvq_fields(codes, spec, x.shape[1])
    b2 = LEVELS[spec][1]
    # per element: half a step of the grid; a two-level residual clamped at +2^(B2-1) errs by up to a whole step
    bound = scale / 2 if b2 == 0 else scale / 2**b2
    assert np.all(np.abs(x - x_hat) <= bound[:, None] * (1 + 1e-3) + 1e-6)
    np.testing.assert_allclose(x_hat, lvq_reference(codes, codec, full=True), rtol=0, atol=1e-5)


@pytest.mark.parametrize("spec", LVQ_SPECS)
def test_fp16_header_and_codes_use_the_rounded_values(x, spec):
    """scale/bias are float16 values whose grid covers each centred vector; codes are computed from them."""
    codec = make_codec(spec, x.shape[1], "ip").fit(x)
    codes = codec.encode(x)
    scale, bias, c, u = lvq_fields(codes, spec, x.shape[1])
    b1, b2 = LEVELS[spec]
    centred = x.astype(np.float64) - codec.mu
    lo, hi = centred.min(1), centred.max(1)
    assert np.all(bias <= lo + 1e-7) and np.all(bias + (2**b1 - 1) * scale >= hi - 1e-7)
    ulp = np.spacing(np.abs(lo).astype(np.float16)).astype(np.float64)
    assert np.all(lo - bias <= 2 * ulp)  # as close as float16 allows
    assert np.all(scale <= (hi - bias) / (2**b1 - 1) * (1 + 2**-9))
    expect_c = np.clip(np.rint((centred - bias[:, None]) / scale[:, None]), 0, 2**b1 - 1)
    assert np.mean(c == expect_c) > 0.999 and np.all(np.abs(c - expect_c) <= 1)
    if b2:
        delta = scale / 2**b2
        r = centred - (bias[:, None] + scale[:, None] * c)
        expect_u = np.clip(np.rint(r / delta[:, None]), -(2 ** (b2 - 1)), 2 ** (b2 - 1) - 1) + 2 ** (b2 - 1)
        assert np.mean(u == expect_u) > 0.999 and np.all(np.abs(u - expect_u) <= 1)


def test_nibble_layout_is_split_halves():
    """d = 3, h = 2: byte 0 = c0 | c2 << 4, byte 1 = c1 (int4 and lvq4 primaries)."""
    codec = make_codec("int4", 3, "ip").fit(np.array([[0.0] * 3, [15.0] * 3], dtype=np.float32))
    np.testing.assert_array_equal(codec.encode(np.array([[15.0, 7.0, 3.0]], np.float32)), [[15 | 3 << 4, 7]])
    lvq = make_codec("lvq4", 3, "ip").fit(np.zeros((1, 3), np.float32))
    row = lvq.encode(np.array([[0.0, 1.5, 3.0]], dtype=np.float32))[0]
    scale, bias = row[:4].view(np.float16).astype(float)
    assert bias == 0.0 and 0.2 <= scale < 0.2 + float(np.spacing(np.float16(0.2)))  # 3 / 15 rounded up to float16
    np.testing.assert_array_equal(row[4:], [0 | 15 << 4, 7])  # rint(1.5 / scale) = 7


def test_constant_and_mean_rows_decode_exactly():
    x = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], dtype=np.float32)
    for spec in LVQ_SPECS:
        codec = make_codec(spec, 3, "l2").fit(x)
        mean_row = codec.mu[None, :]
        np.testing.assert_allclose(codec.decode(codec.encode(mean_row)), mean_row, atol=1e-6)


@pytest.mark.parametrize("spec", ["lvq8", "lvq4x8"])
def test_values_beyond_float16_range_saturate(spec):
    """A row whose values leave float16's range gets finite, clamped codes: encoding runs after a write's commit,
    and one such row must not make every later seal fail."""
    x = np.zeros((2, 4), dtype=np.float32)
    x[0] = [1, -2, 3, 0.5]
    x[1, 0] = -1e6
    codec = make_codec(spec, 4, "ip").fit(np.zeros((1, 4), np.float32))
    decoded = codec.decode(codec.encode(x))
    assert np.isfinite(decoded).all()
    np.testing.assert_allclose(decoded[0], x[0], atol=0.05)
    assert -1e6 <= decoded[1, 0] <= -0.99 * 65504  # saturated at float16's range (a residual level adds a little)


# -- scoring --------------------------------------------------------------------------------------
@pytest.mark.parametrize("m", [3, 12, DECODE_BATCH], ids=["kernel", "kernel-parallel", "decode"])
@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("spec", SPECS)
def test_scorer_equals_decoded_similarity(x, rng, spec, metric, m):
    """Flat scans (per-row kernel for few queries, decode + matmul for many) score <q, decode(code)>."""
    codec = make_codec(spec, x.shape[1], metric).fit(x)
    codes = codec.encode(x)
    q = queries(rng, x, m)
    scores, rows = scan_top(codec, codes, q, 50)
    approx = similarity(q, codec.decode(codes), metric)
    np.testing.assert_allclose(scores, np.take_along_axis(approx, rows, axis=1), atol=1e-4 * np.abs(approx).max())


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("spec", SPECS)
def test_scorer_recall(data, rng, spec, metric):
    codec = make_codec(spec, data.shape[1], metric).fit(data)
    q = queries(rng, data, 100)
    rows = scan_top(codec, codec.encode(data), q, 10)[1]
    truth = np.argsort(-similarity(q, data, metric), axis=1)[:, :10]
    recall = np.mean([len(set(t) & set(r)) / 10 for t, r in zip(truth, rows, strict=True)])
    assert recall >= MIN_RECALL[spec]


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("spec", LVQ_SPECS)
def test_probe_scores_primary_level_only(x, rng, spec, metric):
    codec = make_codec(spec, x.shape[1], metric).fit(x)
    codes = codec.encode(x)
    q = queries(rng, x, 5)
    got = probe_scores(codec.probe(q), len(q), codes)
    want = similarity(q, lvq_reference(codes, codec, full=False), metric)
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
    if LEVELS[spec][1]:  # the residual bytes are not read
        blanked = codes.copy()
        blanked[:, 4 + (x.shape[1] + 1) // 2 :] = 0
        np.testing.assert_array_equal(probe_scores(codec.probe(q), len(q), blanked), got)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_int4_probe_equals_decoded_similarity(x, rng, metric):
    codec = make_codec("int4", x.shape[1], metric).fit(x)
    codes = codec.encode(x)
    q = queries(rng, x, 5)
    want = similarity(q, codec.decode(codes), metric)
    np.testing.assert_allclose(probe_scores(codec.probe(q), len(q), codes), want, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("spec", LVQ_SPECS)
def test_rescore_uses_both_levels(x, rng, spec, metric):
    codec = make_codec(spec, x.shape[1], metric).fit(x)
    codes = codec.encode(x)
    q = queries(rng, x, 6)
    cand = rng.integers(0, len(x), size=(6, 25))
    got = codec.rescore(q, codes[cand])
    assert got.dtype == np.float32 and got.shape == (6, 25)
    full = similarity(q, lvq_reference(codes, codec, full=True), metric)
    want = np.take_along_axis(full, cand, axis=1)
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(full).max())
    if LEVELS[spec][1] == 0:
        primary = np.take_along_axis(probe_scores(codec.probe(q), len(q), codes), cand, axis=1)
        np.testing.assert_array_equal(got, primary)


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("spec", ["lvq4x4", "lvq4x8", "pca16,lvq4x8"])
def test_refine_rows_ranks_candidates_where_they_lie_by_both_levels(x, rng, spec, metric):
    """What search_rows does after a graph walk: refine_probe(probe(q)) scores the candidate rows in place,
    -1 candidates are skipped, and the best ``width`` come back best first, equal to ``rescore``."""
    codec = make_codec(spec, x.shape[1], metric).fit(x)
    codes = codec.encode(x)
    q = queries(rng, x, 4)
    cand = rng.permutation(len(x))[:80].reshape(4, 20)
    cand[1, 5:] = -1  # a query with only 5 candidates
    fine = codec.refine_probe(codec.probe(q))
    scores, rows = refine_rows(fine.kind, fine.qf, fine.qw, fine.view(codes), cand, 8)
    want = codec.rescore(q, codes[np.maximum(cand, 0)])
    want[cand < 0] = -np.inf
    order = np.argsort(-want, axis=1, kind="stable")[:, :8]
    np.testing.assert_array_equal(rows[[0, 2, 3]], np.take_along_axis(cand, order, axis=1)[[0, 2, 3]])
    np.testing.assert_allclose(scores[[0, 2, 3]], np.take_along_axis(want, order, axis=1)[[0, 2, 3]], rtol=1e-6)
    assert set(rows[1, :5]) == set(cand[1, :5]) and (rows[1, 5:] == -1).all() and np.isneginf(scores[1, 5:]).all()


@pytest.mark.parametrize("spec", ["lvq4", "lvq8", "int4"])
def test_one_level_codecs_have_no_refine_probe(x, spec):
    codec = make_codec(spec, x.shape[1], "ip").fit(x)
    assert codec.refine_pool(10) == 0
    with pytest.raises(NotImplementedError, match="does not refine"):
        codec.refine_probe(codec.probe(x[:2]))


def test_rescore_rejects_bad_shapes(data):
    codec = make_codec("lvq4x8", data.shape[1], "ip").fit(data)
    codes = codec.encode(data)
    with pytest.raises(InvalidInput, match="rescore expects uint8 codes"):
        codec.rescore(data[:3], codes[:4, None, :])
    with pytest.raises(InvalidInput, match="rescore expects uint8 codes"):
        codec.rescore(data[:3], codes[:3, None, :-1])


# -- specs and persistence --------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["lvq3", "lvq4x3", "lvq9", "lvq8x8", "lvq8x4", "lvq4x", "lvq", "lvq4x4x4", "int3"])
def test_bad_specs_are_rejected(spec):
    with pytest.raises(UnknownSpec):
        make_codec(spec, 32, "ip")


@pytest.mark.parametrize("spec", SPECS)
def test_save_load_round_trip(data, rng, spec):
    codec = make_codec(spec, data.shape[1], "l2").fit(data)
    again = load_codec(save_codec(codec))
    assert (again.spec, again.dim, again.metric, again.code_size) == (spec, codec.dim, "l2", codec.code_size)
    codes = codec.encode(data)
    np.testing.assert_array_equal(again.encode(data), codes)
    q = queries(rng, data, 4)
    np.testing.assert_array_equal(again.probe(q).qf, codec.probe(q).qf)


@settings(max_examples=30, deadline=None)
@given(
    spec=st.sampled_from(SPECS),
    metric=st.sampled_from(["ip", "l2"]),
    n=st.integers(1, 40),
    d=st.integers(1, 70),
    seed=st.integers(0, 2**16),
)
def test_shapes_and_dtypes_property(spec, metric, n, d, seed):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) * 10.0 ** rng.integers(-3, 3)).astype(np.float32)
    codec = make_codec(spec, d, metric).fit(x)
    codes = codec.encode(x)
    assert codes.shape == (n, codec.code_size) and codes.dtype == np.uint8
    x_hat = codec.decode(codes)
    assert x_hat.shape == (n, d) and x_hat.dtype == np.float32 and np.all(np.isfinite(x_hat))
    k = min(5, n)
    scores, rows = scan_top(codec, codes, x[:3], k)
    assert rows.shape == (min(3, n), k) and set(rows.ravel()) <= set(range(n))
    assert np.all(np.diff(scores, axis=1) <= 0)
    probe = codec.probe(x[:2])
    assert probe.qf.dtype == np.float32 and probe.qw.dtype == np.uint64 and len(probe.qf) == min(2, n)
