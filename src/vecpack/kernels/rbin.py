"""Flat scans of residual-binarized codes (``codecs.rbin``): B bit levels of W uint64 words per row.

A code row is uint64 (B * W,): level i (bits x_i) holds words [i W, (i + 1) W). Two scorings:

* asymmetric (``asym_scan``): a sum of *terms*, each a weight vector quantised to nbits planes scored
  against a bit vector v: qa * popcount(v) + qb * sum_p 2^p popcount(v & plane_p). Level terms read
  v = x_i with the query's planes; l2 adds pair terms v = x_i ^ x_k (i < k, ordered (0,1), (0,2), ..,
  (B-2,B-1)) whose planes do not depend on the query. score = qc + level terms + pair terms.
* symmetric (``sym_scan``): the query is a code row too (qbits uint64 (B * W,)):
  score = qc + sum_{k,i} amat_ki popcount(q_i ^ x_k) + sum_{pairs i<k} pw_ik popcount(x_i ^ x_k).

As in ``kernels.binary``, each chunk of rows is transposed once to level-major order (B * W, rows),
with the levels' popcounts, and its pair terms are summed once for all queries. A query is then scored
one level at a time, each a vectorised pass over the chunk's rows with that level's W * nbits plane
words in registers; W, B and nbits are compile-time constants (``shape_token``) and the loops unroll.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from vecpack.kernels.simd import popcount64, prefer_512_bit_vectors
from vecpack.kernels.topk import QUERY_CHUNK, buffer_size, merge_row

ROW_CHUNK = 8192  # rows per chunk: level-major codes 8192 * B * W * 8 bytes (1.5 MiB at B = 4, d = 384)
# codes_t row padding: rows a multiple of 4 KiB apart share one L1 set, so that the transposition
# (a write to every row per code) thrashes once B * W > 12 (L1 ways); a line further apart they do not
ROW_PAD = 8


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def binarize_level(r, scale, bits):
    """One level of residual binarization, in place: bits[n, j] = r[n, j] > 0, then r -= scale * (2 bits - 1).

    r float32 (n, d) residuals; scale float32 (d,); bits bool (n, d) written.
    """
    for row in prange(r.shape[0]):
        for j in range(r.shape[1]):
            b = r[row, j] > 0
            bits[row, j] = b
            r[row, j] -= scale[j] if b else -scale[j]


@njit(cache=True, nogil=True, inline="always")
def _transpose_codes(codes, c0, c1, codes_t, pcs, words_token, levels_token):
    """Rows c0..c1-1 of codes uint64 (n, B W) into level-major codes_t uint64 (B W, >= c1-c0).

    pcs float32 (B, >= c1-c0) receives each level's popcount.
    """
    n_words = len(words_token)
    for r in range(c1 - c0):
        row = codes[c0 + r]
        for i in range(len(levels_token)):
            c = 0
            for w in range(n_words):
                v = row[i * n_words + w]
                codes_t[i * n_words + w, r] = v
                c += popcount64(v)
            pcs[i, r] = c


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _add_level(codes_t, i, pc, b, plane, qa, qb, out, words_token, bits_token):
    """out[:b] += qa * pc + qb * sum_p 2^p popcount(x_i & plane[:, p]) for the rows' level i; pc their popcounts."""
    prefer_512_bit_vectors()
    n_words = len(words_token)
    for r in range(b):
        acc = 0
        for p in range(len(bits_token)):
            acc_p = 0
            for w in range(n_words):
                acc_p += popcount64(codes_t[i * n_words + w, r] & plane[w, p])
            acc += acc_p << p
        out[r] += qa * pc[r] + qb * np.float32(acc)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _add_pair(codes_t, i, k, b, plane, qa, qb, out, words_token, bits_token):
    """out[:b] += qa * popcount(v) + qb * sum_p 2^p popcount(v & plane[:, p]) with v = x_i ^ x_k (nbits may be 0)."""
    prefer_512_bit_vectors()
    n_words = len(words_token)
    for r in range(b):
        ones = 0
        acc = 0
        for w in range(n_words):
            ones += popcount64(codes_t[i * n_words + w, r] ^ codes_t[k * n_words + w, r])
        for p in range(len(bits_token)):
            acc_p = 0
            for w in range(n_words):
                acc_p += popcount64((codes_t[i * n_words + w, r] ^ codes_t[k * n_words + w, r]) & plane[w, p])
            acc += acc_p << p
        out[r] += qa * np.float32(ones) + qb * np.float32(acc)


@njit(cache=True, nogil=True)
def _pair_base(codes_t, b, planes, qa, qb, base, words_token, levels_token, bits_token):
    """base[:b] = the pair terms of every row (query-independent): planes uint64 (pairs, W, nbits), qa, qb (pairs,)."""
    base[:b] = 0.0
    if qa.shape[0] == 0:  # no pair terms
        return
    n_lev = len(levels_token)
    t = 0
    for i in range(n_lev):
        for k in range(i + 1, n_lev):
            _add_pair(codes_t, i, k, b, planes[t], qa[t], qb[t], base, words_token, bits_token)
            t += 1


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _add_sym_level(codes_t, k, qbits, weights, b, out, words_token, levels_token):
    """out[:b] += sum_i weights[i] * popcount(q_i ^ x_k) for the rows' level k; qbits uint64 (B W,)."""
    prefer_512_bit_vectors()
    n_words = len(words_token)
    for r in range(b):
        s = np.float32(0.0)
        for i in range(len(levels_token)):
            c = 0
            for w in range(n_words):
                c += popcount64(qbits[i * n_words + w] ^ codes_t[k * n_words + w, r])
            s += weights[i] * np.float32(c)
        out[r] += s


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _moments(out, b):
    """Sum and sum of squares of out[:b]."""
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    for r in range(b):
        s1 += out[r]
        s2 += out[r] * out[r]
    return s1, s2


@njit(cache=True, nogil=True)
def asym_chunk(codes_t, pcs, base, b, planes, qa, qb, qc, out, words_token, bits_token):
    """Asymmetric scores float32 out[:b] of one query against b level-major rows; returns (sum, sum of squares).

    planes uint64 (B, W, nbits); qa, qb float32 (B,); qc float32; pcs float32 (B, >= b); base float32 (>= b,)
    the rows' pair terms. One vectorised pass over the rows per level.
    """
    out[:b] = qc + base[:b]
    for i in range(qa.shape[0]):
        _add_level(codes_t, i, pcs[i], b, planes[i], qa[i], qb[i], out, words_token, bits_token)
    return _moments(out, b)


@njit(cache=True, nogil=True)
def sym_chunk(codes_t, base, b, qbits, amat, qc, out, words_token, levels_token):
    """Symmetric scores float32 out[:b] of one query code qbits uint64 (B W,); returns (sum, sum of squares).

    amat float32 (B, B): amat[k, i] weighs popcount(q_i ^ x_k); base float32 (>= b,) the rows' pair terms.
    """
    out[:b] = qc + base[:b]
    for k in range(len(levels_token)):
        _add_sym_level(codes_t, k, qbits, amat[k], b, out, words_token, levels_token)
    return _moments(out, b)


@njit(cache=True, nogil=True)
def _merge(scores, b, s1, s2, row0, allowed, hs, hr, bs, bj, br, no_ids):
    mu = s1 / b
    sd = np.sqrt(max(s2 / b - mu * mu, 0.0))
    merge_row(scores, row0, allowed, hs, hr, bs, bj, br, mu, sd, no_ids)


@njit(cache=True, nogil=True)
def _scratch(b, k):
    """Per-task buffers: one query's scores float32 (b,) and merge_row's candidate buffers for heaps of size k."""
    cap = buffer_size(k)
    return (
        np.empty(b, dtype=np.float32),
        np.empty(cap, dtype=np.float32),
        np.empty(cap, dtype=np.int32),
        np.empty(cap, dtype=np.int64),
    )


@njit(cache=True, nogil=True)
def _asym_task(task, chunk, planes, qa, qb, qc, heap_s, heap_r, words_token, bits_token):
    """Score the queries of one task (QUERY_CHUNK of them) against a chunk of rows; merge into their heaps.

    chunk = (codes_t, pcs, base, b, row0, allowed) as prepared by the scan.
    """
    codes_t, pcs, base, b, row0, allowed = chunk
    scores, bs, bj, br = _scratch(b, heap_s.shape[1])
    no_ids = np.empty(0, dtype=np.int64)
    for i in range(task * QUERY_CHUNK, min(heap_s.shape[0], (task + 1) * QUERY_CHUNK)):
        s1, s2 = asym_chunk(codes_t, pcs, base, b, planes[i], qa[i], qb[i], qc[i], scores, words_token, bits_token)
        _merge(scores, b, s1, s2, row0, allowed, heap_s[i], heap_r[i], bs, bj, br, no_ids)


@njit(cache=True, nogil=True)
def _sym_task(task, chunk, qbits, amat, qc, heap_s, heap_r, words_token, levels_token):
    """Symmetric counterpart of ``_asym_task``."""
    codes_t, _, base, b, row0, allowed = chunk
    scores, bs, bj, br = _scratch(b, heap_s.shape[1])
    no_ids = np.empty(0, dtype=np.int64)
    for i in range(task * QUERY_CHUNK, min(heap_s.shape[0], (task + 1) * QUERY_CHUNK)):
        s1, s2 = sym_chunk(codes_t, base, b, qbits[i], amat, qc[i], scores, words_token, levels_token)
        _merge(scores, b, s1, s2, row0, allowed, heap_s[i], heap_r[i], bs, bj, br, no_ids)


@njit(cache=True, nogil=True, parallel=True)
def asym_scan(
    codes, row0, allowed, planes, qa, qb, qc, pair_planes, pair_qa, pair_qb, heap_s, heap_r,
    words_token, levels_token, bits_token,
):  # fmt: skip
    """Asymmetric scores of code rows against prepared queries, merged into the queries' top-k heaps.

    codes uint64 (n, B W); allowed uint8 (n,); level terms planes uint64 (m, B, W, nbits), qa, qb float32 (m, B),
    qc float32 (m,); pair terms (l2; query-independent, empty for ip) pair_planes uint64 (pairs, W, nbits),
    pair_qa, pair_qb float32 (pairs,); heap_s float32 / heap_r int64 (m, k) updated in place.
    Tokens: ``shape_token`` of W, B and nbits.
    """
    n = codes.shape[0]
    m, k = heap_s.shape
    if n == 0 or m == 0 or k == 0:
        return
    size = min(n, ROW_CHUNK)
    codes_t = np.empty((codes.shape[1], size + ROW_PAD), dtype=np.uint64)
    pcs = np.empty((len(levels_token), size), dtype=np.float32)
    base = np.empty(size, dtype=np.float32)
    for c0 in range(0, n, size):
        c1 = min(n, c0 + size)
        _transpose_codes(codes, c0, c1, codes_t, pcs, words_token, levels_token)
        _pair_base(codes_t, c1 - c0, pair_planes, pair_qa, pair_qb, base, words_token, levels_token, bits_token)
        b, r0, chunk_allowed = c1 - c0, row0 + c0, np.ascontiguousarray(allowed[c0:c1])
        if m <= QUERY_CHUNK:  # one task: skip the parallel region (waking the threads costs ~90 us)
            chunk = (codes_t, pcs, base, b, r0, chunk_allowed)
            _asym_task(0, chunk, planes, qa, qb, qc, heap_s, heap_r, words_token, bits_token)
            continue
        for task in prange((m + QUERY_CHUNK - 1) // QUERY_CHUNK):
            chunk = (codes_t, pcs, base, b, r0, chunk_allowed)  # built inside: parfors cannot capture tuples
            _asym_task(task, chunk, planes, qa, qb, qc, heap_s, heap_r, words_token, bits_token)


@njit(cache=True, nogil=True, parallel=True)
def sym_scan(codes, row0, allowed, qbits, amat, pw, qc, heap_s, heap_r, words_token, levels_token):
    """Symmetric scores of code rows against query codes, merged into the queries' top-k heaps.

    codes uint64 (n, B W); allowed uint8 (n,); qbits uint64 (m, B W); amat float32 (B, B); pw float32 (pairs,),
    empty without pair terms; qc float32 (m,) (see the module docstring); heap_s float32 / heap_r int64 (m, k)
    updated in place. Tokens: ``shape_token`` of W and B.
    """
    n = codes.shape[0]
    m, k = heap_s.shape
    if n == 0 or m == 0 or k == 0:
        return
    size = min(n, ROW_CHUNK)
    codes_t = np.empty((codes.shape[1], size + ROW_PAD), dtype=np.uint64)
    pcs = np.empty((len(levels_token), size), dtype=np.float32)
    base = np.empty(size, dtype=np.float32)
    no_planes = np.empty((pw.shape[0], len(words_token), 0), dtype=np.uint64)
    no_weights = np.zeros(pw.shape[0], dtype=np.float32)
    for c0 in range(0, n, size):
        c1 = min(n, c0 + size)
        _transpose_codes(codes, c0, c1, codes_t, pcs, words_token, levels_token)
        _pair_base(codes_t, c1 - c0, no_planes, pw, no_weights, base, words_token, levels_token, ())
        b, r0, chunk_allowed = c1 - c0, row0 + c0, np.ascontiguousarray(allowed[c0:c1])
        if m <= QUERY_CHUNK:
            chunk = (codes_t, pcs, base, b, r0, chunk_allowed)
            _sym_task(0, chunk, qbits, amat, qc, heap_s, heap_r, words_token, levels_token)
            continue
        for task in prange((m + QUERY_CHUNK - 1) // QUERY_CHUNK):
            chunk = (codes_t, pcs, base, b, r0, chunk_allowed)
            _sym_task(task, chunk, qbits, amat, qc, heap_s, heap_r, words_token, levels_token)


@njit(cache=True, nogil=True, inline="always")
def score_rbin_row(qf, qw, code):
    """Probe kind RBIN: the B levels of a residual-binarization row against the query's bit planes."""
    n_lev = np.int64(qw[0])
    n_words = code.shape[0] // n_lev
    n_t = (qf.shape[0] - 1) // 2
    n_bits = (qw.shape[0] - 1) // (n_t * n_words)
    acc = qf[2 * n_t]
    t_pair = n_lev
    for i in range(n_lev):
        for k in range(i, n_lev if n_t > n_lev else i + 1):  # pair terms (levels i XOR k) for l2 only
            t = i if k == i else t_pair
            ones = 0
            dot = 0
            for w in range(n_words):
                v = np.uint64(code[i * n_words + w])
                if k != i:
                    v ^= np.uint64(code[k * n_words + w])
                ones += popcount64(v)
                base = 1 + (t * n_words + w) * n_bits
                for p in range(n_bits):
                    dot += popcount64(v & qw[base + p]) << p
            acc += qf[t] * np.float32(ones) + qf[n_t + t] * np.float32(dot)
            if k != i:
                t_pair += 1
    return acc
