"""Asymmetric scoring of float queries against 1-bit codes with popcounts.

A query is quantised to ``nbits`` unsigned levels u_j and split into bit
planes; then sum_j u_j * b_j = sum_p 2^p * popcount(b AND plane_p).

The scan works on chunks of rows. Each chunk's codes are transposed once to
word-major order (W, rows) so that, for one query, the loop over rows reads
contiguous words and vectorises to SIMD popcounts (vpopcntq) with the query's
W * nbits plane words held in registers. The word and plane counts are
compile-time constants: they are passed as the lengths of two tuples
(``shape_token``), so numba compiles (and caches) one kernel per code width
and query precision, with the inner loops fully unrolled. Each query's chunk
of scores then goes through ``topk.merge_row`` (a threshold pass, then the
few survivors into the heap) while it is still in L1/L2.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from vecpack.kernels.simd import popcount64, prefer_512_bit_vectors
from vecpack.kernels.topk import QUERY_CHUNK, buffer_size, merge_row

ROW_CHUNK = 8192  # rows per chunk: word-major codes 8192 * W * 8 bytes, scores 32 KiB per query


def shape_token(n: int) -> tuple[int, ...]:
    """A tuple of length n, passed to kernels whose loop bound n must be a compile-time constant."""
    return (0,) * n


@njit(cache=True, nogil=True)
def _quantize_rows(q0, q1, q, shift, scale, planes, lo, delta, total, bits_token):
    """quantize_queries for rows q0..q1-1."""
    d = q.shape[1]
    n_words = planes.shape[1]
    n_bits = len(bits_token)
    top = np.float32(2**n_bits - 1)
    qs = np.empty(d, dtype=np.float32)
    levels = np.zeros(n_words * 64, dtype=np.uint64)
    for i in range(q0, q1):
        row = q[i]
        for j in range(d):
            qs[j] = (row[j] - shift[j]) * scale[j]
        low = qs[0]
        high = qs[0]
        acc = np.float32(0.0)
        for j in range(d):
            low = min(low, qs[j])
            high = max(high, qs[j])
            acc += qs[j]
        step = (high - low) / top
        if not step > 0:
            step = np.float32(1.0)
        for j in range(d):
            levels[j] = np.uint64(min(max(np.rint((qs[j] - low) / step), np.float32(0.0)), top))
        lo[i] = low
        delta[i] = step
        total[i] = acc
        for w in range(n_words):
            chunk = levels[w * 64 : (w + 1) * 64]
            for p in range(n_bits):
                word = np.uint64(0)
                for b in range(64):
                    word |= ((chunk[b] >> np.uint64(p)) & np.uint64(1)) << np.uint64(b)
                planes[i, w, p] = word


@njit(cache=True, nogil=True, parallel=True)
def quantize_queries(q, shift, scale, n_words, bits_token):
    """Bit planes for ``binary_scan`` of the scaled queries qs = (q - shift) * scale.

    q float32 (m, d); shift, scale float32 (d,). Per query qs ~ lo + delta * u with
    u = rint((qs - lo) / delta) in 0 .. 2^nbits - 1, lo = min(qs), delta = (max(qs) - lo) / (2^nbits - 1)
    (1 where that is 0). Returns planes uint64 (m, n_words, nbits): bit b of [i, w, p] is bit p of u[i, 64w + b],
    and lo, delta and sum(qs), float32 (m,) each.
    """
    m = q.shape[0]
    planes = np.zeros((m, n_words, len(bits_token)), dtype=np.uint64)
    lo = np.empty(m, dtype=np.float32)
    delta = np.empty(m, dtype=np.float32)
    total = np.empty(m, dtype=np.float32)
    if m <= QUERY_CHUNK:  # one task: skip the parallel region (waking the threads costs ~90 us)
        _quantize_rows(0, m, q, shift, scale, planes, lo, delta, total, bits_token)
        return planes, lo, delta, total
    for task in prange((m + QUERY_CHUNK - 1) // QUERY_CHUNK):
        q0 = task * QUERY_CHUNK
        _quantize_rows(q0, min(m, q0 + QUERY_CHUNK), q, shift, scale, planes, lo, delta, total, bits_token)
    return planes, lo, delta, total


@njit(cache=True, nogil=True, inline="always")
def _transpose_codes(codes, c0, c1, codes_t, pcs, words_token):
    """Rows c0..c1-1 of codes uint64 (n, W) into codes_t uint64 (W, >= c1-c0); their popcounts into pcs float32."""
    n_words = len(words_token)
    for r in range(c1 - c0):
        row = codes[c0 + r]
        c = 0
        for w in range(n_words):
            v = row[w]
            codes_t[w, r] = v
            c += popcount64(v)
        pcs[r] = c


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def score_chunk(codes_t, pcs, b, plane, qa, qb, qc, out, words_token, bits_token):
    """Scores float32 out[:b] of one query against b word-major codes codes_t uint64 (W, >= b).

    plane uint64 (W, nbits); pcs float32 (>= b,) the codes' popcounts;
    score(r) = qa * popcount(b_r) + qb * sum_p 2^p popcount(b_r & plane_p) + qc.
    Returns the sum and the sum of squares of the scores (for a first threshold guess).
    """
    prefer_512_bit_vectors()
    n_words = len(words_token)
    n_bits = len(bits_token)
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    for r in range(b):
        acc = 0
        for p in range(n_bits):
            acc_p = 0
            for w in range(n_words):
                acc_p += popcount64(codes_t[w, r] & plane[w, p])
            acc += acc_p << p
        s = qa * pcs[r] + qb * np.float32(acc) + qc
        out[r] = s
        s1 += s
        s2 += s * s
    return s1, s2


@njit(cache=True, nogil=True)
def _scan_queries(task, codes_t, pcs, b, row0, allowed, planes, qa, qb, qc, heap_s, heap_r, words_token, bits_token):
    """Score the queries of one task (QUERY_CHUNK of them) against a chunk of b word-major codes; merge into heaps."""
    q0 = task * QUERY_CHUNK
    q1 = min(heap_s.shape[0], q0 + QUERY_CHUNK)
    k = heap_s.shape[1]
    cap = buffer_size(k)
    scores = np.empty(b, dtype=np.float32)
    bs = np.empty(cap, dtype=np.float32)
    bj = np.empty(cap, dtype=np.int32)
    br = np.empty(cap, dtype=np.int64)
    no_ids = np.empty(0, dtype=np.int64)
    for i in range(q0, q1):
        s1, s2 = score_chunk(codes_t, pcs, b, planes[i], qa[i], qb[i], qc[i], scores, words_token, bits_token)
        mu = s1 / b
        sd = np.sqrt(max(s2 / b - mu * mu, 0.0))
        merge_row(scores, row0, allowed, heap_s[i], heap_r[i], bs, bj, br, mu, sd, no_ids)


@njit(cache=True, nogil=True, parallel=True)
def binary_scan(codes, row0, allowed, planes, qa, qb, qc, heap_s, heap_r, words_token, bits_token):
    """Score 1-bit codes against quantised queries and merge into heaps.

    codes uint64 (n, W); allowed uint8 (n,); planes uint64 (m, W, nbits) from ``quantize_queries``;
    score(query i, row r) = qa[i] * popcount(b_r) + qb[i] * sum_j u_ij b_rj + qc[i] (qa, qb, qc float32 (m,)).
    heap_s float32 (m, k) / heap_r int64 (m, k) updated in place.
    words_token / bits_token: ``shape_token(W)`` / ``shape_token(nbits)``.
    """
    n = codes.shape[0]
    m, k = heap_s.shape
    if n == 0 or m == 0 or k == 0:
        return
    chunk = min(n, ROW_CHUNK)
    codes_t = np.empty((len(words_token), chunk), dtype=np.uint64)
    pcs = np.empty(chunk, dtype=np.float32)
    n_tasks = (m + QUERY_CHUNK - 1) // QUERY_CHUNK
    for c0 in range(0, n, chunk):
        c1 = min(n, c0 + chunk)
        _transpose_codes(codes, c0, c1, codes_t, pcs, words_token)
        b, r0, chunk_allowed = c1 - c0, row0 + c0, np.ascontiguousarray(allowed[c0:c1])
        if n_tasks == 1:  # skip the parallel region: waking the threads per chunk costs ~90 us
            _scan_queries(0, codes_t, pcs, b, r0, chunk_allowed, planes, qa, qb, qc, heap_s, heap_r, words_token,
                          bits_token)
            continue
        for task in prange(n_tasks):
            _scan_queries(
                task, codes_t, pcs, b, r0, chunk_allowed, planes, qa, qb, qc, heap_s, heap_r, words_token, bits_token
            )


@njit(cache=True, nogil=True, inline="always")
def score_bits_row(qf, qw, code):
    """Probe kind BITS: a 1-bit code row against the query's bit planes."""
    n_words = code.shape[0]
    n_bits = qw.shape[0] // n_words
    ones = 0
    dot = 0
    for w in range(n_words):
        c = np.uint64(code[w])
        ones += popcount64(c)
        for p in range(n_bits):
            dot += popcount64(c & qw[w * n_bits + p]) << p
    return qf[0] * np.float32(ones) + qf[1] * np.float32(dot) + qf[2]
