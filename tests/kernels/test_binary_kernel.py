"""Popcount scoring of 1-bit codes (kernels/binary.py) against plain-numpy references on small seeded data."""

from __future__ import annotations

import numpy as np
import pytest

from vecpack.kernels.binary import ROW_CHUNK, binary_scan, quantize_queries, shape_token
from vecpack.kernels.topk import QUERY_CHUNK, new_heaps, sort_heaps


def query_planes(u: np.ndarray, nbits: int, words: int) -> np.ndarray:
    """Reference for quantize_queries' planes: uint64 (m, words, nbits) of levels u uint8 (m, d).

    Bit b of [i, w, p] is bit p of u[i, 64w + b].
    """
    m, d = u.shape
    padded = np.zeros((m, words * 64), dtype=np.uint8)
    padded[:, :d] = u
    planes = np.empty((m, words, nbits), dtype=np.uint64)
    for p in range(nbits):
        bits = (padded >> p) & 1
        planes[:, :, p] = np.packbits(bits, axis=1, bitorder="little").view(np.uint64)
    return planes


def random_codes(rng, n, d):
    """Sign bits uint8 (n, d) and their packed words uint64 (n, ceil(d/64)), zero padded like the codec's."""
    bits = (rng.random((n, d)) < 0.5).astype(np.uint8)
    words = -(-d // 64)
    padded = np.zeros((n, words * 64), np.uint8)
    padded[:, :d] = bits
    return bits, np.packbits(padded, axis=1, bitorder="little").view(np.uint64)


def reference_scores(bits, u, qa, qb, qc):
    """score(i, r) = qa[i] * popcount(b_r) + qb[i] * sum_j u_ij b_rj + qc[i], in float64."""
    pc = bits.sum(axis=1).astype(np.float64)
    dots = u.astype(np.float64) @ bits.T.astype(np.float64)
    return qa[:, None] * pc[None, :] + qb[:, None] * dots + qc[:, None]


def scan(words, live, u, nbits, qa, qb, qc, k, row0=0):
    planes = query_planes(u, nbits, words.shape[1])
    heap_s, heap_r = new_heaps(len(u), k)
    binary_scan(words, row0, live, planes, qa, qb, qc, heap_s, heap_r, shape_token(words.shape[1]), shape_token(nbits))
    sort_heaps(heap_s, heap_r)
    return heap_s, heap_r


def assert_top_k(heap_s, heap_r, ref, live, k, row0=0):
    """Heaps hold the k best live reference scores; each row once and with its own score."""
    for i in range(ref.shape[0]):
        alive = ref[i][live > 0]
        want = np.sort(alive)[::-1][:k]
        got_rows = heap_r[i][heap_r[i] >= 0] - row0
        assert len(got_rows) == len(want) == min(k, int(live.sum()))
        assert len(set(got_rows.tolist())) == len(got_rows)
        assert np.all(live[got_rows] > 0)
        np.testing.assert_allclose(heap_s[i][: len(want)], want, rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(heap_s[i][: len(want)], ref[i][got_rows], rtol=1e-6, atol=1e-4)
        assert np.all(heap_r[i][len(want) :] == -1)


@pytest.mark.parametrize(("d", "nbits"), [(384, 4), (100, 4), (64, 2), (130, 3), (7, 1)])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_scan_matches_numpy(d, nbits, k):
    rng = np.random.default_rng(d * 10 + nbits + k)
    n, m = 700, QUERY_CHUNK + 3  # m not a multiple of the query chunk
    bits, words = random_codes(rng, n, d)
    u = rng.integers(0, 2**nbits, size=(m, d)).astype(np.uint8)
    # dyadic coefficients: float32 scores are exact, so ranks (and ties) match the reference exactly
    qa = rng.integers(-4, 4, m).astype(np.float32) / 4
    qb = rng.integers(1, 8, m).astype(np.float32) / 8
    qc = rng.integers(-64, 64, m).astype(np.float32)
    live = (rng.random(n) > 0.15).astype(np.uint8)
    heap_s, heap_r = scan(words, live, u, nbits, qa, qb, qc, k, row0=1000)
    assert_top_k(heap_s, heap_r, reference_scores(bits, u, qa, qb, qc), live, k, row0=1000)


def test_k_larger_than_rows_and_deleted_rows():
    rng = np.random.default_rng(5)
    bits, words = random_codes(rng, 9, 70)
    u = rng.integers(0, 16, size=(3, 70)).astype(np.uint8)
    ones = np.ones(3, np.float32)
    live = np.array([1, 0, 1, 1, 0, 1, 1, 1, 1], np.uint8)
    heap_s, heap_r = scan(words, live, u, 4, ones, ones, ones, 20)
    assert_top_k(heap_s, heap_r, reference_scores(bits, u, ones, ones, ones), live, 20)
    assert np.all(heap_s[:, 7:] == -np.inf)


def test_duplicate_codes_tie():
    """Identical codes score identically; exactly k of the tied rows are kept."""
    rng = np.random.default_rng(2)
    bits, words = random_codes(rng, 1, 384)
    words = np.repeat(words, 200, axis=0)
    bits = np.repeat(bits, 200, axis=0)
    u = rng.integers(0, 16, size=(2, 384)).astype(np.uint8)
    ones = np.ones(2, np.float32)
    heap_s, heap_r = scan(words, np.ones(200, np.uint8), u, 4, ones, ones, ones, 30)
    assert_top_k(heap_s, heap_r, reference_scores(bits, u, ones, ones, ones), np.ones(200, np.uint8), 30)


def test_more_rows_than_one_chunk():
    rng = np.random.default_rng(9)
    n = ROW_CHUNK + 300
    bits, words = random_codes(rng, n, 64)
    u = rng.integers(0, 16, size=(2, 64)).astype(np.uint8)
    qa, qb, qc = np.zeros(2, np.float32), np.ones(2, np.float32), np.zeros(2, np.float32)
    live = np.ones(n, np.uint8)
    live[ROW_CHUNK - 5 : ROW_CHUNK + 5] = 0
    heap_s, heap_r = scan(words, live, u, 4, qa, qb, qc, 50)
    assert_top_k(heap_s, heap_r, reference_scores(bits, u, qa, qb, qc), live, 50)


def test_scan_merges_into_existing_heaps():
    """A second scan over more rows (row0 offset) keeps the best of both, as a single scan would."""
    rng = np.random.default_rng(4)
    bits, words = random_codes(rng, 500, 128)
    u = rng.integers(0, 16, size=(5, 128)).astype(np.uint8)
    qa, qb, qc = np.full(5, 0.5, np.float32), np.ones(5, np.float32), np.zeros(5, np.float32)
    planes = query_planes(u, 4, 2)
    tokens = (shape_token(2), shape_token(4))
    heap_s, heap_r = new_heaps(5, 25)
    live = np.ones(500, np.uint8)
    binary_scan(words[:300], 0, live[:300], planes, qa, qb, qc, heap_s, heap_r, *tokens)
    binary_scan(words[300:], 300, live[300:], planes, qa, qb, qc, heap_s, heap_r, *tokens)
    sort_heaps(heap_s, heap_r)
    assert_top_k(heap_s, heap_r, reference_scores(bits, u, qa, qb, qc), live, 25)


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_quantize_queries_matches_numpy(nbits):
    rng = np.random.default_rng(nbits)
    q = rng.normal(size=(QUERY_CHUNK + 2, 100)).astype(np.float32)
    q[3] = 0.25  # a constant query: delta falls back to 1
    shift = rng.normal(size=100).astype(np.float32)
    scale = rng.random(100).astype(np.float32)
    planes, lo, delta, total = quantize_queries(q, shift, scale, 2, shape_token(nbits))
    qs = (q - shift) * scale
    ref_lo = qs.min(axis=1)
    ref_delta = (qs.max(axis=1) - ref_lo) / np.float32(2**nbits - 1)
    ref_delta[ref_delta <= 0] = 1.0
    u = np.rint((qs - ref_lo[:, None]) / ref_delta[:, None]).astype(np.uint8)
    np.testing.assert_array_equal(lo, ref_lo)
    np.testing.assert_array_equal(delta, ref_delta)
    np.testing.assert_allclose(total, qs.sum(axis=1), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(planes, query_planes(u, nbits, 2))
    # the planes reproduce the levels: sum_p 2^p bit_p
    plane_bytes = planes.view(np.uint8).reshape(len(q), 2, nbits, 8).transpose(0, 2, 1, 3).reshape(len(q), nbits, 16)
    bits = np.unpackbits(plane_bytes, axis=2, bitorder="little")
    levels = sum(bits[:, p, :100].astype(np.int64) << p for p in range(nbits))
    np.testing.assert_array_equal(levels, u)
