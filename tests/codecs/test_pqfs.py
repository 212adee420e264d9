"""4-bit fast-scan PQ (``pq<M>x4fs``): packing, quantised scores against float tables, probe, kernels, specs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from vecpack.codecs import load_codec, make_codec, save_codec
from vecpack.errors import InvalidInput, UnknownSpec
from vecpack.kernels.pq4 import (
    BLOCK,
    ROW_CHUNK,
    fastscan,
    make_lookup_block,
    quantize_tables,
    shuffle_width,
    transpose_chunk,
)
from vecpack.kernels.probe import kind_token, score_row
from vecpack.kernels.topk import new_heaps, sort_heaps


def float_adc(codec, q, codes):
    """Reference ADC similarities (m, n) in float64: <q, x_hat> for ip, -||q - x_hat||^2 for l2."""
    x_hat = codec.decode(codes).astype(np.float64)
    q = q.astype(np.float64)
    if codec.metric == "ip":
        return q @ x_hat.T
    return -((q[:, None] - x_hat[None]) ** 2).sum(-1)


def scan_all(codec, codes, q, k=None, live=None):
    """The scorer's top-k (default: every row) scores / rows, best first."""
    n = len(codes)
    heaps = new_heaps(len(q), n if k is None else k)
    codec.scorer(q).scan(codes, 0, np.ones(n, np.uint8) if live is None else live, *heaps)
    sort_heaps(*heaps)
    return heaps


def queries_near(data, rng, m=13):
    return (data[rng.choice(len(data), m)] + 0.2 * rng.normal(size=(m, data.shape[1]))).astype(np.float32)


@pytest.mark.parametrize("spec", ["pq10x4fs", "pq5x4fs", "pq40x4fs"])
def test_round_trip_and_packing(data, spec):
    codec = make_codec(spec, data.shape[1], "ip").fit(data)
    codes = codec.encode(data)
    m = codec.n_sub
    assert codes.shape == (len(data), (m + 1) // 2) and codes.dtype == np.uint8
    if m % 2:
        assert np.all(codes[:, -1] >> 4 == 0)  # the padding nibble is zero
    x_hat = codec.decode(codes)
    assert x_hat.shape == data.shape and x_hat.dtype == np.float32
    # each sub-vector decodes to its nearest of the 16 centroids
    ds = codec.sub_dim
    for s in range(m):
        sub = data[:, s * ds : (s + 1) * ds]
        dist = ((sub[:, None] - codec.centroids[s][None]) ** 2).sum(-1)
        chosen = ((sub - x_hat[:, s * ds : (s + 1) * ds]) ** 2).sum(-1)
        np.testing.assert_allclose(chosen, dist.min(1), rtol=1e-4, atol=1e-5)
    centred = np.linalg.norm(data - data.mean(0))
    assert np.linalg.norm(data - x_hat) < 0.8 * centred


def test_code_sizes():
    assert make_codec("pq96x4fs", 384, "ip").code_size == 48
    assert make_codec("pq5x4fs", 40, "l2").code_size == 3
    assert make_codec("pq384x4fs", 384, "ip").code_size == 192


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("spec", ["pq10x4fs", "pq5x4fs"])
def test_scores_within_quantisation_of_float_tables(data, rng, spec, metric):
    """Fast-scan scores differ from float ADC scores by at most S * scale / 2 and rank alike."""
    codec = make_codec(spec, data.shape[1], metric).fit(data)
    codes = codec.encode(data)
    q = queries_near(data, rng)
    scores, rows = scan_all(codec, codes, q)
    adc = float_adc(codec, q, codes)
    scorer = codec.scorer(q)
    bound = codec.code_size * 2 * scorer.scale / 2  # S table entries, each within half a step
    got = np.take_along_axis(adc, rows, axis=1)
    err = np.abs(scores - got)
    assert np.all(err <= bound[:, None] * (1 + 1e-4) + 1e-4 * np.abs(got))
    assert err.mean() < 0.5 * bound.mean()  # rounding errors mostly cancel
    # ranking: the fast scan's top 10 are within 2 bounds of the float top 10 (codes share values, so sets tie)
    tenth = -np.sort(-adc, axis=1)[:, 9]
    assert np.all(got[:, :10] >= tenth[:, None] - 2 * bound[:, None] - 1e-5)
    assert min(np.corrcoef(scores[i], got[i])[0, 1] for i in range(len(q))) > 0.99


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_probe_equals_float_tables_and_scorer(data, rng, metric):
    codec = make_codec("pq5x4fs", data.shape[1], metric).fit(data)
    codes = codec.encode(data)
    q = queries_near(data, rng, 5)
    probe = codec.probe(q)
    view = probe.view(codes)
    tok = kind_token(probe.kind)
    got = np.array([[score_row(tok, probe.qf[i], probe.qw[i], view[r]) for r in range(len(codes))] for i in range(5)])
    adc = float_adc(codec, q, codes)
    np.testing.assert_allclose(got, adc, rtol=1e-4, atol=1e-4 * np.abs(adc).max())
    scores, rows = scan_all(codec, codes, q)
    bound = codec.code_size * codec.scorer(q).scale
    assert np.all(np.abs(scores - np.take_along_axis(got, rows, axis=1)) <= bound[:, None])


def reference_scan_scores(scorer, codes):
    """The fast scan's scores float32 (m, n) by numpy: offset + scale * (sum of the uint8 table entries)."""
    lo, hi = (codes & 15).astype(np.intp), (codes >> 4).astype(np.intp)
    cols = np.arange(codes.shape[1])
    sums = scorer.luts[:, cols, lo].sum(-1, dtype=np.int64) + scorer.luts[:, cols, 16 + hi].sum(-1, dtype=np.int64)
    return scorer.offset[:, None] + scorer.scale[:, None] * sums.astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(16, 700),
    shape=st.sampled_from([(8, 1), (9, 3), (12, 6), (21, 7), (40, 20), (30, 15), (64, 32), (68, 34), (100, 100)]),
    k=st.integers(1, 40),
    metric=st.sampled_from(["ip", "l2"]),
    seed=st.integers(0, 2**16),
)
def test_scan_matches_numpy_reference(n, shape, k, metric, seed):
    """Any row count (partial blocks), odd/even M, deleted rows: the heap holds the reference top-k."""
    d, m = shape
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    codec = make_codec(f"pq{m}x4fs", d, metric).fit(x)
    codes = codec.encode(x)
    q = rng.normal(size=(3, d)).astype(np.float32)
    live = (rng.random(n) > 0.2).astype(np.uint8)
    scores, rows = scan_all(codec, codes, q, k, live)
    ref = reference_scan_scores(codec.scorer(q), codes)
    ref[:, live == 0] = -np.inf
    top = np.full((3, k), -np.inf, dtype=np.float32)
    top[:, : min(k, n)] = -np.sort(-ref, axis=1)[:, :k]
    found = rows >= 0
    assert np.array_equal(found, np.isfinite(top))
    tol = 1e-5 * max(1.0, np.abs(ref[np.isfinite(ref)]).max())  # float32 rounding of offset + scale * sum
    np.testing.assert_allclose(scores[found], top[found], rtol=0, atol=tol)
    np.testing.assert_allclose(np.take_along_axis(ref, np.where(found, rows, 0), 1)[found], scores[found], atol=tol)


def scan_both_ways(codec, codes, layout, q, k, live):
    """(heaps of the row scan, heaps of the layout scan), sorted."""
    out = []
    for blocked in (False, True):
        heaps = new_heaps(len(q), k)
        scorer = codec.scorer(q)
        if blocked:
            scorer.scan_layout(layout, 5, live, *heaps)
        else:
            scorer.scan(codes, 5, live, *heaps)
        sort_heaps(*heaps)
        out.append(heaps)
    return out


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 400),
    first=st.integers(0, 400),
    m_sub=st.sampled_from([1, 5, 8, 40]),
    n_queries=st.sampled_from([1, 3, 40]),
    seed=st.integers(0, 2**16),
)
def test_scan_layout_equals_row_scan(n, first, m_sub, n_queries, seed):
    """The blocked copy (built for a first part of the rows, then extended) scans exactly like the rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 40)).astype(np.float32)
    codec = make_codec(f"pq{m_sub}x4fs", 40, "ip").fit(x if n >= 16 else np.tile(x, (16, 1)))
    codes = codec.encode(x)
    first = min(first, n)
    done = (codec.scan_layout(codes[:first]), first) if first else None
    layout = codec.scan_layout(codes, done)
    assert layout.shape[1:] == (codec.code_size, BLOCK) and layout.shape[0] >= -(-n // BLOCK)
    for r in (0, n // 2, n - 1):  # row r is column r % 64 of block r // 64
        assert np.array_equal(layout[r // BLOCK, :, r % BLOCK], codes[r])
    live = (rng.random(n) > 0.2).astype(np.uint8)
    rows_way, blocked_way = scan_both_ways(codec, codes, layout, rng.normal(size=(n_queries, 40)).astype(np.float32),
                                           7, live)
    assert np.array_equal(rows_way[1], blocked_way[1]) and np.array_equal(rows_way[0], blocked_way[0])


def test_scan_layout_over_several_chunks(data, rng):
    """More rows than one scan chunk: the layout's chunks line up with the rows' (row numbers from row0)."""
    x = np.tile(data, (ROW_CHUNK // len(data) + 2, 1))[: ROW_CHUNK + 77]
    x = x + 0.01 * rng.normal(size=x.shape).astype(np.float32)
    codec = make_codec("pq10x4fs", 40, "l2").fit(data)
    codes = codec.encode(x)
    layout = codec.scan_layout(codes)
    live = np.ones(len(x), np.uint8)
    live[ROW_CHUNK - 3 : ROW_CHUNK + 3] = 0
    rows_way, blocked_way = scan_both_ways(codec, codes, layout, queries_near(x, rng, 3), 50, live)
    assert np.array_equal(rows_way[1], blocked_way[1])
    chain = make_codec("opq10,pq10x4fs", 40, "l2").fit(data)
    assert chain.scan_layout(chain.encode(x)).shape == (-(-len(x) // BLOCK) * 5 // 4, 5, BLOCK)
    assert make_codec("pq10", 40, "l2").fit(data).scan_layout(codes) is None  # codecs that scan rows as stored


def test_sums_reach_uint16_range_without_overflow(rng):
    """With many sub-spaces the top level shrinks so that S * top <= 65535; the kernel then sums exactly."""
    s = 600  # byte columns S/2 = 300
    luts = rng.normal(size=(1, s, 16)).astype(np.float32)
    lut_u8 = quantize_tables(luts, np.zeros(1, np.float32))[0]
    top = 65535 // s
    assert lut_u8.max() == top and s * top <= 65535
    full = np.full((1, s // 2, 32), top, dtype=np.uint8)
    codes = rng.integers(0, 256, size=(100, s // 2), dtype=np.uint8)
    heaps = new_heaps(1, 5)
    fastscan(codes, 0, np.ones(100, np.uint8), full, np.ones(1, np.float32), np.zeros(1, np.float32), *heaps)
    assert np.all(heaps[0] == s * top)


def test_table_quantisation_bounds(rng):
    luts = rng.normal(size=(4, 10, 16)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    lut_u8, scale, offset = quantize_tables(luts, bias)
    low = luts.min(2)
    back = low[:, :, None] + scale[:, None, None] * lut_u8
    assert np.all(np.abs(back - luts) <= scale[:, None, None] / 2 * (1 + 1e-5))
    np.testing.assert_allclose(offset, bias + low.sum(1), rtol=1e-5)
    assert lut_u8.max() == 255  # the widest sub-space spans the full range


def _lookup_reference(codes_t, r0, lut):
    c = codes_t[:, r0 : r0 + BLOCK].astype(np.intp)
    cols = np.arange(codes_t.shape[0])[:, None]
    return (lut[cols, c & 15].astype(np.int64) + lut[cols, 16 + (c >> 4)]).sum(0)


@pytest.mark.parametrize("width", [0, 16, 32, 64])
def test_lookup_block_every_shuffle_width(rng, width):
    """The portable IR and each x86 shuffle width give the same sums (widths the host lacks are skipped)."""
    if width > shuffle_width():
        pytest.skip(f"host has no {width}-byte shuffle")
    lookup = make_lookup_block(width)

    @njit
    def run(codes_t, r0, lut, out):
        lookup(codes_t, r0, lut, out)

    codes_t = rng.integers(0, 256, size=(7, 3 * BLOCK), dtype=np.uint8)
    lut = rng.integers(0, 256, size=(7, 32), dtype=np.uint8)
    out = np.zeros(BLOCK, dtype=np.uint16)
    for r0 in (0, 5, 2 * BLOCK):
        run(codes_t, r0, lut, out)
        np.testing.assert_array_equal(out, _lookup_reference(codes_t, r0, lut))


@pytest.mark.parametrize("n_cols", [1, 15, 16, 17, 33, 48, 64, 100, 130])
def test_transpose_chunk(rng, n_cols):
    """Register-transposed 16 x 16 blocks plus byte-loop edges equal numpy's transpose, for any row/column count."""
    codes = rng.integers(0, 256, size=(300, n_cols), dtype=np.uint8)
    for c0, c1 in ((0, 300), (7, 7 + 16), (5, 300), (290, 299)):
        out = np.zeros((n_cols, 310), dtype=np.uint8)
        transpose_chunk(codes, c0, c1, out)
        np.testing.assert_array_equal(out[:, : c1 - c0], codes[c0:c1].T)
        assert not out[:, c1 - c0 :].any()


def test_save_load_round_trip(data, rng):
    codec = make_codec("pq5x4fs", data.shape[1], "l2").fit(data)
    loaded = load_codec(save_codec(codec))
    assert loaded.spec == "pq5x4fs" and loaded.code_size == 3
    codes = codec.encode(data)
    assert np.array_equal(loaded.encode(data), codes)
    q = queries_near(data, rng, 4)
    a, b = scan_all(codec, codes, q, 20), scan_all(loaded, codes, q, 20)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_default_rerank_is_positive():
    codec = make_codec("pq8x4fs", 32, "ip")
    assert not codec.exact and codec.default_rerank(10) >= 100


@pytest.mark.parametrize("spec", ["pq7x4fs", "pq0x4fs", "pq41x4fs"])
def test_bad_specs(spec):
    with pytest.raises(UnknownSpec, match="divisible"):
        make_codec(spec, 40, "ip")


@pytest.mark.parametrize("spec", ["pq8x4", "pq8x8fs", "pqx4fs"])
def test_unknown_specs(spec):
    with pytest.raises(UnknownSpec, match="unknown codec spec"):
        make_codec(spec, 40, "ip")


def test_needs_training_and_rows(data):
    codec = make_codec("pq8x4fs", 40, "ip")
    with pytest.raises(InvalidInput, match="not trained"):
        codec.encode(data)
    with pytest.raises(InvalidInput, match="at least 16"):
        codec.fit(data[:10])
    with pytest.raises(InvalidInput, match="centroids of shape"):
        codec.set_state({"centroids": np.zeros((8, 16, 4), np.float32)})
