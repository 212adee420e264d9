"""LVQ and 4-bit codes: encoding, decoding, and their probes (``score_lvq_row``, ``score_lvq_full_row``,
``score_nibble_row``).

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

from vecpack.kernels.scalar import as_f32

HEADER_BYTES = 4  # scale and bias, float16 each


@njit(cache=True, nogil=True, inline="always")
def _put(out, i, at, j, h, value, nibbles):
    """Store code ``value`` of dimension j in row i of out, in the byte part starting at ``at``."""
    if not nibbles:
        out[i, at + j] = value
    elif j < h:
        out[i, at + j] |= value
    else:
        out[i, at + j - h] |= value << 4


@njit(cache=True, nogil=True, inline="always")
def _get(codes, i, at, j, h, nibbles):
    """Code of dimension j in row i of codes, from the byte part starting at ``at`` (int64)."""
    if not nibbles:
        return np.int64(codes[i, at + j])
    if j < h:
        return np.int64(codes[i, at + j] & 15)
    return np.int64(codes[i, at + j - h] >> 4)


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
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


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
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


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
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


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
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


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
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


@njit(cache=True, nogil=True, inline="always")
def _nibbles(byte):
    """Low and high nibble of a code byte as float32 (float arithmetic keeps the vectorised loops 32 bits wide)."""
    f = np.float32(byte)
    hi = np.floor(f * np.float32(0.0625))
    return f - np.float32(16.0) * hi, hi


@njit(cache=True, nogil=True, inline="always")
def score_lvq_row(qf, qw, code):
    """Probe kind LVQ: the primary level of an LVQ row (8-bit bytes or split-halves nibbles)."""
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


@njit(cache=True, nogil=True, inline="always")
def score_lvq_full_row(qf, qw, code):
    """Probe kind LVQ_FULL: both levels of a 4-bit LVQ row (residual nibbles or bytes)."""
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


@njit(cache=True, nogil=True, inline="always")
def score_nibble_row(qf, qw, code):
    """Probe kind NIBBLE_AFFINE: a split-halves 4-bit row, x_j = lo_j + step_j c_j."""
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
