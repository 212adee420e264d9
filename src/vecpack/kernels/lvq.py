"""LVQ and 4-bit codes: encoding, decoding, and flat scans / re-scoring through ``probe.score_row``.

Nibble layout ("split halves"): with h = ceil(d / 2), byte j holds dimension j in
its low nibble and dimension h + j in its high nibble (0 when h + j = d, for odd d).
A scoring loop over the h bytes then reads the query's two halves contiguously.

LVQ code rows are [scale fp16, bias fp16, primary codes, residual codes]; the
layout and the score formulas are those of ``probe.LVQ`` / ``probe.LVQ_FULL``.
Scales and biases are computed in numpy (float16 rounding) and passed in as
float32, so these kernels never convert half floats themselves.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from vecpack.kernels.probe import kind_token, score_row
from vecpack.kernels.topk import QUERY_CHUNK, buffer_size, merge_row

ROW_CHUNK = 4096  # rows scored per merge: codes stay in cache for the queries of one task
HEADER_BYTES = 4  # scale and bias, float16 each


@njit(cache=True, inline="always")
def _put(out, i, at, j, h, value, nibbles):
    """Store code ``value`` of dimension j in row i of out, in the byte part starting at ``at``."""
    if not nibbles:
        out[i, at + j] = value
    elif j < h:
        out[i, at + j] |= value
    else:
        out[i, at + j - h] |= value << 4


@njit(cache=True, inline="always")
def _get(codes, i, at, j, h, nibbles):
    """Code of dimension j in row i of codes, from the byte part starting at ``at`` (int64)."""
    if not nibbles:
        return np.int64(codes[i, at + j])
    if j < h:
        return np.int64(codes[i, at + j] & 15)
    return np.int64(codes[i, at + j - h] >> 4)


@njit(cache=True, parallel=True, fastmath=True)
def row_ranges(x, mu):
    """Per-row minimum and maximum of x - mu: float32 (n,) each; x float32 (n, d), mu float32 (d,)."""
    n, d = x.shape
    lo = np.empty(n, dtype=np.float32)
    hi = np.empty(n, dtype=np.float32)
    for i in prange(n):
        a = np.float32(np.inf)
        b = np.float32(-np.inf)
        for j in range(d):
            v = x[i, j] - mu[j]
            a = min(a, v)
            b = max(b, v)
        lo[i] = a
        hi[i] = b
    return lo, hi


@njit(cache=True, parallel=True, fastmath=True)
def lvq_encode(x, mu, scale, bias, header, bits, residual_bits, code_size):
    """LVQ code rows uint8 (n, code_size) of x float32 (n, d).

    scale, bias float32 (n,): the float16-rounded per-row step and minimum; header uint8 (n, 4): their
    float16 bytes. Primary c = clamp(rint((x - mu - bias) / scale), 0, 2^bits - 1); with residual_bits
    B2 > 0 the residual of bias + scale * c is coded as clamp(rint(r / delta), -2^(B2-1), 2^(B2-1) - 1)
    + 2^(B2-1) with delta = scale / 2^B2.
    """
    n, d = x.shape
    h = (d + 1) // 2
    top = np.float32(2**bits - 1)
    r_at = HEADER_BYTES + (d if bits == 8 else h)
    off = np.float32(2 ** (residual_bits - 1)) if residual_bits else np.float32(0.0)
    out = np.zeros((n, code_size), dtype=np.uint8)
    for i in prange(n):
        for t in range(HEADER_BYTES):
            out[i, t] = header[i, t]
        s = scale[i]
        b = bias[i]
        inv = np.float32(1.0) / s
        inv_delta = np.float32(2**residual_bits) * inv
        for j in range(d):
            v = x[i, j] - mu[j]
            c = min(max(np.rint((v - b) * inv), np.float32(0.0)), top)
            _put(out, i, HEADER_BYTES, j, h, np.uint8(c), bits == 4)
            if residual_bits:
                e = min(max(np.rint((v - (b + s * c)) * inv_delta), -off), off - 1) + off
                _put(out, i, r_at, j, h, np.uint8(e), residual_bits == 4)
    return out


@njit(cache=True, parallel=True, fastmath=True)
def lvq_decode(codes, mu, scale, bias, d, bits, residual_bits):
    """Float32 (n, d) reconstructions of LVQ rows codes uint8 (n, code_size), both levels.

    scale, bias float32 (n,): the rows' header values. x = mu + bias + scale * c (one level), or
    mu + bias - delta * 2^(B2-1) + delta * (c * 2^B2 + u) with delta = scale / 2^B2.
    """
    n = codes.shape[0]
    h = (d + 1) // 2
    r_at = HEADER_BYTES + (d if bits == 8 else h)
    shift = np.float32(2**residual_bits)
    off = np.float32(2 ** (residual_bits - 1)) if residual_bits else np.float32(0.0)
    out = np.empty((n, d), dtype=np.float32)
    for i in prange(n):
        s = scale[i] / shift
        b = bias[i] - s * off
        for j in range(d):
            w = _get(codes, i, HEADER_BYTES, j, h, bits == 4)
            if residual_bits:
                w = w * np.int64(shift) + _get(codes, i, r_at, j, h, residual_bits == 4)
            out[i, j] = mu[j] + b + s * np.float32(w)
    return out


@njit(cache=True, parallel=True, fastmath=True)
def nibble_encode(x, lo, inv_step):
    """4-bit codes uint8 (n, ceil(d/2)), split-halves layout: clamp(rint((x - lo) * inv_step), 0, 15)."""
    n, d = x.shape
    h = (d + 1) // 2
    out = np.zeros((n, h), dtype=np.uint8)
    for i in prange(n):
        for j in range(d):
            c = min(max(np.rint((x[i, j] - lo[j]) * inv_step[j]), np.float32(0.0)), np.float32(15.0))
            _put(out, i, 0, j, h, np.uint8(c), True)
    return out


@njit(cache=True, parallel=True, fastmath=True)
def nibble_decode(codes, lo, step):
    """Float32 (n, d) = lo + step * code of split-halves 4-bit codes uint8 (n, ceil(d/2)); d = len(lo)."""
    n = codes.shape[0]
    d = lo.shape[0]
    h = (d + 1) // 2
    out = np.empty((n, d), dtype=np.float32)
    for i in prange(n):
        for j in range(d):
            out[i, j] = lo[j] + step[j] * np.float32(_get(codes, i, 0, j, h, True))
    return out


@njit(cache=True, fastmath=True)
def _scan_queries(q0, q1, kind_tok, qf, qw, codes, row0, live, heap_s, heap_r):
    """probe_scan for queries q0..q1-1: rows in chunks of ROW_CHUNK, each chunk scored then merged per query."""
    n = codes.shape[0]
    cap = buffer_size(heap_s.shape[1])
    bs = np.empty(cap, dtype=np.float32)
    bj = np.empty(cap, dtype=np.int32)
    br = np.empty(cap, dtype=np.int64)
    no_ids = np.empty(0, dtype=np.int64)
    for c0 in range(0, n, ROW_CHUNK):
        b = min(n, c0 + ROW_CHUNK) - c0
        scores = np.empty(b, dtype=np.float32)
        chunk_live = np.ascontiguousarray(live[c0 : c0 + b])
        for i in range(q0, q1):
            f = qf[i]
            w = qw[i]
            for r in range(b):
                scores[r] = score_row(kind_tok, f, w, codes[c0 + r])
            merge_row(scores, row0 + c0, chunk_live, heap_s[i], heap_r[i], bs, bj, br, 0.0, -1.0, no_ids)


@njit(cache=True, parallel=True)
def _scan_parallel(kind_tok, qf, qw, codes, row0, live, heap_s, heap_r):
    m = qf.shape[0]
    for task in prange((m + QUERY_CHUNK - 1) // QUERY_CHUNK):
        q0 = task * QUERY_CHUNK
        _scan_queries(q0, min(m, q0 + QUERY_CHUNK), kind_tok, qf, qw, codes, row0, live, heap_s, heap_r)


def probe_scan(kind, qf, qw, codes, row0, live, heap_s, heap_r):
    """Score every code row with ``score_row`` and merge into the heaps (a flat scan over a probe).

    kind: a ``kernels.probe`` kind; qf float32 (m, F), qw uint64 (m, W): its per-query parameters.
    codes (n, ...) rows row0 .. row0+n-1 in the kind's element type; live uint8 (n,), 0 = skip.
    heap_s float32 / heap_r int64 (m, k) updated in place. A batch runs in parallel over queries.
    """
    m, k = heap_s.shape
    if codes.shape[0] == 0 or m == 0 or k == 0:
        return
    tok = kind_token(kind)
    if m <= QUERY_CHUNK // 4:
        _scan_queries(0, m, tok, qf, qw, codes, row0, live, heap_s, heap_r)
    else:
        _scan_parallel(tok, qf, qw, codes, row0, live, heap_s, heap_r)


@njit(cache=True, fastmath=True)
def _rescore_rows(i0, i1, kind_tok, qf, qw, codes, out):
    """probe_rescore for queries i0..i1-1, into out float32 (m, r)."""
    for i in range(i0, i1):
        for t in range(codes.shape[1]):
            out[i, t] = score_row(kind_tok, qf[i], qw[i], codes[i, t])


@njit(cache=True, parallel=True)
def _rescore_parallel(kind_tok, qf, qw, codes, out):
    m = codes.shape[0]
    for task in prange((m + QUERY_CHUNK - 1) // QUERY_CHUNK):
        i0 = task * QUERY_CHUNK
        _rescore_rows(i0, min(m, i0 + QUERY_CHUNK), kind_tok, qf, qw, codes, out)


def probe_rescore(kind, qf, qw, codes):
    """Scores float32 (m, r) of query i against its own candidate rows codes (m, r, ...) with ``score_row``.

    A batch runs in parallel over queries; a few queries skip the thread launch.
    """
    out = np.empty(codes.shape[:2], dtype=np.float32)
    tok = kind_token(kind)
    if codes.shape[0] <= QUERY_CHUNK // 4:
        _rescore_rows(0, codes.shape[0], tok, qf, qw, codes, out)
    else:
        _rescore_parallel(tok, qf, qw, codes, out)
    return out


@njit(cache=True, fastmath=True)
def _refine_query(kind_tok, qf, qw, codes, rows, out_s, out_r):
    """refine_rows for one query: candidate rows (r,) into its best len(out_s), best first."""
    scores = np.full(rows.shape[0], -np.inf, dtype=np.float32)
    for t in range(rows.shape[0]):
        if rows[t] >= 0:
            scores[t] = score_row(kind_tok, qf, qw, codes[rows[t]])
    order = np.argsort(-scores)
    for t in range(min(out_s.shape[0], rows.shape[0])):
        if scores[order[t]] == -np.inf:
            break
        out_s[t] = scores[order[t]]
        out_r[t] = rows[order[t]]


@njit(cache=True)
def _refine_queries(kind_tok, qf, qw, codes, rows, out_s, out_r):
    for i in range(rows.shape[0]):
        _refine_query(kind_tok, qf[i], qw[i], codes, rows[i], out_s[i], out_r[i])


def refine_rows(kind, qf, qw, codes, rows, width):
    """The best ``width`` of each query's candidate rows (m, r) (-1 = none), scored with ``score_row`` on the
    rows of ``codes`` where they lie: scores float32 / rows int64 (m, width), best first, (-inf, -1) padded.

    What a two-level codec's index search ends with (``Codec.refine_probe``): one call, no gather of the
    candidates' codes, no heap merges.
    """
    m = rows.shape[0]
    out_s = np.full((m, width), -np.inf, dtype=np.float32)
    out_r = np.full((m, width), -1, dtype=np.int64)
    _refine_queries(kind_token(kind), qf, qw, codes, np.ascontiguousarray(rows, dtype=np.int64), out_s, out_r)
    return out_s, out_r
