"""Score one prepared query against one code row: the inner step of index traversals.

Flat scans score whole blocks (``Scorer``); graph hops and IVF lists score
scattered rows one at a time. A codec describes a query for this with a
*probe* (``codecs.base.Probe``): a ``kind``, float32 parameters ``qf`` and
uint64 parameters ``qw``. ``score_row`` dispatches on the kind to the kind's
``score_<kind>_row``, which lives next to its encoder; index kernels call it and stay
codec-agnostic (as FAISS's DistanceComputer). Flat scans and re-scoring over a probe
(``probe_scan``, ``probe_rescore``, ``refine_rows``) are here too. Scores are similarities (larger is better), like the
codecs' scorers: <q, x> for ip, -||q - x||^2 for l2.

Kinds (x reconstructed from code c, d dimensions):

* ``AFFINE_IP``: x_j = lo_j + step_j * c_j; qf = [q * step (d), <q, lo>].
* ``AFFINE_L2``: same x; qf = [(q - lo) / step (d), step^2 (d)]; score = -sum_j qf[d+j] * (qf[j] - c_j)^2.
* ``BITS``: 1-bit codes (W uint64 words) against a query quantised to nbits planes;
  qw = planes [w * nbits + p], qf = [qa, qb, qc]; score = qa * popcount(c) + qb * sum_p 2^p popcount(c & plane_p) + qc.
* ``LUT``: product quantisation; qf = [tables (M * 256), bias]; score = bias + sum_m qf[256 m + c_m].
* ``LVQ``: primary level of LVQ rows [scale fp16, bias fp16, codes] (``codecs.lvq``), x = mu + bias + scale * c
  with c bytes (B = 8) or split-halves nibbles (B = 4: byte j holds dims j, h + j; h = ceil(d/2));
  qw = [d, B, l2]; ip: qf = [q (n_q), <q, mu>, sum q], score = qf[n_q] + scale <q, c> + bias qf[n_q+1];
  l2: qf = [q - mu (n_q)], score = -sum_j (qf[j] - bias - scale c_j)^2; n_q = d or 2h, zero padded.
* ``LVQ_FULL``: both levels of 4-bit LVQ rows [.., residual u (nibbles, or 2h bytes for B2 = 8)]:
  w = c * 2^B2 + u, x = mu + bias - delta 2^(B2-1) + delta w with delta = scale / 2^B2; qw = [d, B2, l2], qf as LVQ.
* ``NIBBLE_AFFINE``: split-halves 4-bit codes, x_j = lo_j + step_j c_j; qw = [l2]; ip: qf = [q * step (2h),
  <q, lo>]; l2: qf = [(q - lo) / step (2h), step^2 (2h)] (zero padded), score = -sum_j qf[2h+j] (qf[j] - c_j)^2.
* ``RBIN``: residual binarization, B levels of W uint64 words (``kernels.rbin`` asymmetric terms);
  qw = [B, planes [(t * W + w) * nbits + p]], qf = [qa (T), qb (T), qc];
  score = qc + sum_t qa_t * popcount(v_t) + qb_t * sum_p 2^p popcount(v_t & plane_tp).
* ``RABITQ``: 1-bit RaBitQ rows [W sign words, factor words] (``kernels.rabitq`` layout); qw = planes
  [w * nbits + p] of the rotated query's levels u, qf = [lo, delta, sum u, g, ..] (``rabitq.prepare_queries``);
  score = F_add + F_rescale * (lo (2 popcount(c) - 64 W) + delta (2 <c, u> - sum u)) + g.
* ``RABITQ_EX``: extended RaBitQ rows [B planes of W words (sign plane first), factor words]; qf = [lo, delta,
  sum u, g, B, ..], qw as RABITQ; x = the B-bit levels, M = 2^B - 1;
  score = F_add + F_rescale_ex * (lo (2 sum x - 64 W M) + delta (2 <x, u> - M sum u)) + g.
* ``LUT4``: 4-bit product quantisation, byte b = c_2b | c_(2b+1) << 4 (``codecs.pqfs``);
  qf = [tables (B * 32: 16 per low, 16 per high nibble), bias]; score = bias + sum_b qf[32 b + lo] + qf[32 b + 16 + hi].

Code element types: float32 (exact), uint16 (float16 bit patterns), int16 (bfloat16 bit
patterns), uint8, uint64 (bits).

Loops read offset parts of a row through slices (``weight = qf[d:]``, then ``weight[j]``), never as
``qf[d + j]``: numba wraps negative indices, and an offset LLVM cannot prove non-negative keeps
that check in the loop and stops it vectorising (measured: AFFINE_L2 at d = 784, 581 vs 75 ns per row).

Kernels receive the kind as ``kind_token(kind)``, a tuple whose *length* is the
kind: numba then compiles one specialisation per kind, LLVM folds the branches
away and the scoring loop vectorises (measured: 2x faster than a runtime kind).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.extending import overload

from vecpack.kernels.binary import score_bits_row
from vecpack.kernels.kinds import (
    AFFINE_IP,
    AFFINE_L2,
    BITS,
    LUT,
    LUT4,
    LVQ,
    LVQ_FULL,
    NIBBLE_AFFINE,
    RABITQ,
    RABITQ_EX,
    RBIN,
    kind_token,
)
from vecpack.kernels.lvq import score_lvq_full_row, score_lvq_row, score_nibble_row
from vecpack.kernels.pq import score_lut_row
from vecpack.kernels.pq4 import score_lut4_row
from vecpack.kernels.rabitq import score_rabitq_row
from vecpack.kernels.rbin import score_rbin_row
from vecpack.kernels.scalar import score_affine_ip_row, score_affine_l2_row
from vecpack.kernels.topk import QUERY_CHUNK, buffer_size, merge_row

__all__ = ["AFFINE_IP", "AFFINE_L2", "BITS", "LUT", "LUT4", "LVQ", "LVQ_FULL", "NIBBLE_AFFINE", "RABITQ", "RABITQ_EX",
           "RBIN", "bytes_read", "kind_token", "probe_rescore", "probe_scan", "refine_rows", "score_row"]

ROW_CHUNK = 4096  # rows scored per merge in probe_scan: codes stay in cache for the queries of one task


@njit(cache=True, nogil=True, inline="always")
def bytes_read(kind_tok, qw, row_bytes):
    """How many leading bytes of a ``row_bytes`` code row ``score_row`` reads: the primary level of
    LVQ rows (their residual is for re-scoring), the whole row for every other kind. Traversals
    prefetch only these: a 4-bit LVQ row of 384 dims is 580 bytes, of which the walk reads 196."""
    if len(kind_tok) == LVQ:
        d = np.int64(qw[0])
        return 4 + (d if np.int64(qw[1]) == 8 else (d + 1) // 2)
    return row_bytes


def score_row(kind_tok, qf, qw, code):
    """Similarity (float32) of the query described by (kind_token(kind), qf, qw) to one code row ``code``.

    Called from Python it dispatches at run time; inside a kernel the overload below picks the kind's
    scorer while numba types the call, so a kernel compiles only that kind's code (typing all eleven and
    leaving LLVM to drop ten made a kernel's first compile 3-4x slower).
    """
    return _scorer(len(kind_tok))(kind_tok, qf, qw, code)


def _scorer(kind: int):
    """The kind's scorer with ``score_row``'s arguments."""
    if kind == AFFINE_IP:
        return lambda kind_tok, qf, qw, code: score_affine_ip_row(qf, code)
    if kind == AFFINE_L2:
        return lambda kind_tok, qf, qw, code: score_affine_l2_row(qf, code)
    if kind == BITS:
        return lambda kind_tok, qf, qw, code: score_bits_row(qf, qw, code)
    if kind == RBIN:
        return lambda kind_tok, qf, qw, code: score_rbin_row(qf, qw, code)
    if kind == LVQ:
        return lambda kind_tok, qf, qw, code: score_lvq_row(qf, qw, code)
    if kind == LVQ_FULL:
        return lambda kind_tok, qf, qw, code: score_lvq_full_row(qf, qw, code)
    if kind == NIBBLE_AFFINE:
        return lambda kind_tok, qf, qw, code: score_nibble_row(qf, qw, code)
    if kind == LUT4:
        return lambda kind_tok, qf, qw, code: score_lut4_row(qf, code)
    if kind in (RABITQ, RABITQ_EX):
        return lambda kind_tok, qf, qw, code: score_rabitq_row(kind_tok, qf, qw, code)
    return lambda kind_tok, qf, qw, code: score_lut_row(qf, code)  # LUT


@overload(score_row)
def _score_row_typed(kind_tok, qf, qw, code):
    return _scorer(len(kind_tok))  # kind_tok is a numba tuple type here: its length is the kind


@njit(cache=True, nogil=True, fastmath=True)
def _scan_queries(q0, q1, kind_tok, qf, qw, codes, row0, allowed, heap_s, heap_r):
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
        chunk_allowed = np.ascontiguousarray(allowed[c0 : c0 + b])
        for i in range(q0, q1):
            f = qf[i]
            w = qw[i]
            for r in range(b):
                scores[r] = score_row(kind_tok, f, w, codes[c0 + r])
            merge_row(scores, row0 + c0, chunk_allowed, heap_s[i], heap_r[i], bs, bj, br, 0.0, -1.0, no_ids)


@njit(cache=True, nogil=True, parallel=True)
def _scan_parallel(kind_tok, qf, qw, codes, row0, allowed, heap_s, heap_r):
    m = qf.shape[0]
    for task in prange((m + QUERY_CHUNK - 1) // QUERY_CHUNK):
        q0 = task * QUERY_CHUNK
        _scan_queries(q0, min(m, q0 + QUERY_CHUNK), kind_tok, qf, qw, codes, row0, allowed, heap_s, heap_r)


def probe_scan(kind, qf, qw, codes, row0, allowed, heap_s, heap_r):
    """Score every code row with ``score_row`` and merge into the heaps (a flat scan over a probe).

    kind: a ``kernels.probe`` kind; qf float32 (m, F), qw uint64 (m, W): its per-query parameters.
    codes (n, ...) rows row0 .. row0+n-1 in the kind's element type; allowed uint8 (n,), 0 = skip.
    heap_s float32 / heap_r int64 (m, k) updated in place. A batch runs in parallel over queries.
    """
    m, k = heap_s.shape
    if codes.shape[0] == 0 or m == 0 or k == 0:
        return
    tok = kind_token(kind)
    if m <= QUERY_CHUNK // 4:
        _scan_queries(0, m, tok, qf, qw, codes, row0, allowed, heap_s, heap_r)
    else:
        _scan_parallel(tok, qf, qw, codes, row0, allowed, heap_s, heap_r)


@njit(cache=True, nogil=True, fastmath=True)
def _rescore_rows(i0, i1, kind_tok, qf, qw, codes, out):
    """probe_rescore for queries i0..i1-1, into out float32 (m, r)."""
    for i in range(i0, i1):
        for t in range(codes.shape[1]):
            out[i, t] = score_row(kind_tok, qf[i], qw[i], codes[i, t])


@njit(cache=True, nogil=True, parallel=True)
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


@njit(cache=True, nogil=True, fastmath=True)
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


@njit(cache=True, nogil=True)
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
