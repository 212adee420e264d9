"""Score one prepared query against one code row: the inner step of index traversals.

Flat scans score whole blocks (``Scorer``); graph hops and IVF lists score
scattered rows one at a time. A codec describes a query for this with a
*probe* (``codecs.base.Probe``): a ``kind``, float32 parameters ``qf`` and
uint64 parameters ``qw``. ``score_row`` is the one place that knows every
kind; index kernels call it and stay codec-agnostic (as FAISS's
DistanceComputer). Scores are similarities (larger is better), like the
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
from numba import njit, types
from numba.extending import overload

from vecpack.kernels.simd import _i32_as_f32, popcount64

AFFINE_IP = 0
AFFINE_L2 = 1
BITS = 2
LUT = 3
LVQ = 4
NIBBLE_AFFINE = 5
LVQ_FULL = 6
RABITQ = 7
RABITQ_EX = 8
RBIN = 9
LUT4 = 10

_HALF_SCALE = np.float32(2.0**112)  # rebias float16's exponent (15) to float32's (127)


def kind_token(kind: int) -> tuple[int, ...]:
    """The kind as a compile-time constant for the kernels: a tuple of that length."""
    return (0,) * kind


def as_f32(x):
    """A code element as float32 (uint16 elements are float16 bit patterns, int16 bfloat16 ones)."""
    raise NotImplementedError  # numba-only: see the overload below


@overload(as_f32, inline="always")
def _as_f32_impl(x):
    if x == types.uint16:

        def half(x):
            # the 15 magnitude bits shifted into float32's exponent/mantissa place, times 2^112, give the
            # magnitude exactly for normal and subnormal halves (no inf/nan in codes); then the sign
            bits = np.int32(x)
            mag = _i32_as_f32(np.int32((bits & 0x7FFF) << 13)) * _HALF_SCALE
            return mag * np.float32(1 - ((bits >> 14) & 2))

        return half
    if x == types.int16:

        def bfloat(x):
            return _i32_as_f32(np.int32(x) << 16)  # the sign-extended high bits shift out

        return bfloat
    return lambda x: np.float32(x)


@njit(cache=True, inline="always")
def _nibbles(byte):
    """Low and high nibble of a code byte as float32 (float arithmetic keeps the vectorised loops 32 bits wide)."""
    f = np.float32(byte)
    hi = np.floor(f * np.float32(0.0625))
    return f - np.float32(16.0) * hi, hi


@njit(cache=True, inline="always")
def bytes_read(kind_tok, qw, row_bytes):
    """How many leading bytes of a ``row_bytes`` code row ``score_row`` reads: the primary level of
    LVQ rows (their residual is for re-scoring), the whole row for every other kind. Traversals
    prefetch only these: a 4-bit LVQ row of 384 dims is 580 bytes, of which the walk reads 196."""
    if len(kind_tok) == LVQ:
        d = np.int64(qw[0])
        return 4 + (d if np.int64(qw[1]) == 8 else (d + 1) // 2)
    return row_bytes


@njit(cache=True, inline="always")
def score_row(kind_tok, qf, qw, code):
    """Similarity (float32) of the query described by (kind_token(kind), qf, qw) to one code row ``code``."""
    kind = len(kind_tok)
    if kind == AFFINE_IP:
        d = code.shape[0]
        acc = qf[d]
        for j in range(d):
            acc += qf[j] * as_f32(code[j])
        return acc
    if kind == AFFINE_L2:
        d = code.shape[0]
        weight = qf[d:]
        acc = np.float32(0.0)
        for j in range(d):
            diff = qf[j] - as_f32(code[j])
            acc += weight[j] * diff * diff
        return -acc
    if kind == BITS:
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
    if kind == RBIN:
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
    if kind == LVQ:
        d = np.int64(qw[0])
        scale = as_f32(np.uint16(np.int32(code[0]) | (np.int32(code[1]) << 8)))
        bias = as_f32(np.uint16(np.int32(code[2]) | (np.int32(code[3]) << 8)))
        c = code[4:]
        acc = np.float32(0.0)
        n_q = d
        if np.int64(qw[1]) == 8:
            if qw[2]:
                for j in range(d):
                    diff = qf[j] - bias - scale * np.float32(c[j])
                    acc += diff * diff
                return -acc
            for j in range(d):
                acc += qf[j] * np.float32(c[j])
        else:
            h = (d + 1) // 2
            n_q = 2 * h
            q_hi = qf[h:]
            if qw[2]:
                for j in range(h):
                    c_lo, c_hi = _nibbles(c[j])
                    lo = qf[j] - bias - scale * c_lo
                    hi = q_hi[j] - bias - scale * c_hi
                    acc += lo * lo + hi * hi
                return np.float32(d & 1) * bias * bias - acc  # the padding dimension added bias^2
            for j in range(h):
                c_lo, c_hi = _nibbles(c[j])
                acc += qf[j] * c_lo + q_hi[j] * c_hi
        return qf[n_q] + scale * acc + bias * qf[n_q + 1]
    if kind == LVQ_FULL:
        d = np.int64(qw[0])
        h = (d + 1) // 2
        b2 = np.int64(qw[1])
        delta = as_f32(np.uint16(np.int32(code[0]) | (np.int32(code[1]) << 8))) / np.float32(1 << b2)
        bias = as_f32(np.uint16(np.int32(code[2]) | (np.int32(code[3]) << 8))) - delta * np.float32(1 << (b2 - 1))
        c = code[4:]
        u = code[4 + h :]
        q_hi = qf[h:]
        acc = np.float32(0.0)
        if b2 == 8:  # w = 256 c + u, u a byte
            u_hi = u[h:]
            if qw[2]:
                for j in range(h):
                    c_lo, c_hi = _nibbles(c[j])
                    lo = qf[j] - bias - delta * (np.float32(256.0) * c_lo + np.float32(u[j]))
                    hi = q_hi[j] - bias - delta * (np.float32(256.0) * c_hi + np.float32(u_hi[j]))
                    acc += lo * lo + hi * hi
                return np.float32(d & 1) * bias * bias - acc
            for j in range(h):
                c_lo, c_hi = _nibbles(c[j])
                acc += qf[j] * (np.float32(256.0) * c_lo + np.float32(u[j]))
                acc += q_hi[j] * (np.float32(256.0) * c_hi + np.float32(u_hi[j]))
        else:  # w = 16 c + u, u a nibble
            if qw[2]:
                for j in range(h):
                    c_lo, c_hi = _nibbles(c[j])
                    u_lo, u_hi = _nibbles(u[j])
                    lo = qf[j] - bias - delta * (np.float32(16.0) * c_lo + u_lo)
                    hi = q_hi[j] - bias - delta * (np.float32(16.0) * c_hi + u_hi)
                    acc += lo * lo + hi * hi
                return np.float32(d & 1) * bias * bias - acc
            for j in range(h):
                c_lo, c_hi = _nibbles(c[j])
                u_lo, u_hi = _nibbles(u[j])
                acc += qf[j] * (np.float32(16.0) * c_lo + u_lo) + q_hi[j] * (np.float32(16.0) * c_hi + u_hi)
        return qf[2 * h] + delta * acc + bias * qf[2 * h + 1]
    if kind == NIBBLE_AFFINE:
        h = code.shape[0]
        q_hi = qf[h:]
        acc = np.float32(0.0)
        if qw[0]:
            w_lo = qf[2 * h :]
            w_hi = qf[3 * h :]
            for j in range(h):
                c_lo, c_hi = _nibbles(code[j])
                lo = qf[j] - c_lo
                hi = q_hi[j] - c_hi
                acc += w_lo[j] * lo * lo + w_hi[j] * hi * hi
            return -acc
        for j in range(h):
            c_lo, c_hi = _nibbles(code[j])
            acc += qf[j] * c_lo + q_hi[j] * c_hi
        return qf[2 * h] + acc
    if kind == LUT4:
        n_bytes = code.shape[0]
        acc = qf[32 * n_bytes]
        for b in range(n_bytes):
            c = np.int64(code[b])
            acc += qf[32 * b + (c & 15)] + qf[32 * b + 16 + (c >> 4)]
        return acc
    if kind == RABITQ or kind == RABITQ_EX:
        n_planes = 1 if kind == RABITQ else np.int64(qf[4])
        n_words = (code.shape[0] - (2 if kind == RABITQ else 3)) // n_planes
        n_bits = qw.shape[0] // n_words
        total = 0
        dot = 0
        for w in range(n_words):
            for p in range(n_planes):
                c = np.uint64(code[p * n_words + w])
                weight = n_planes - 1 if p == 0 else p - 1  # the sign plane holds the top bit
                acc = 0
                for t in range(n_bits):
                    acc += popcount64(c & qw[w * n_bits + t]) << t
                total += popcount64(c) << weight
                dot += acc << weight
        top = (1 << n_planes) - 1
        f = n_words * n_planes
        f_add = _i32_as_f32(np.int32(np.int64(np.uint64(code[f]) & np.uint64(0xFFFFFFFF))))
        if kind == RABITQ:
            f_rescale = _i32_as_f32(np.int32(np.int64(np.uint64(code[f]) >> np.uint64(32))))
        else:
            f_rescale = _i32_as_f32(np.int32(np.int64(np.uint64(code[f + 2]) & np.uint64(0xFFFFFFFF))))
        ax = np.float32(2 * total - 64 * n_words * top)
        bx = np.float32(2 * dot - top * np.int64(qf[2]))
        return f_add + f_rescale * (qf[0] * ax + qf[1] * bx) + qf[3]
    # LUT
    n_sub = code.shape[0]
    acc = qf[256 * n_sub]
    for m in range(n_sub):
        acc += qf[256 * m + np.int64(code[m])]
    return acc
