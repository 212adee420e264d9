"""Per-dimension 8-bit scalar quantisation: x ~ lo + step * code; the affine probes of scalar codes (float32,
float16, bfloat16, int8) and ``as_f32``, which reads any of their elements as float32."""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from vecpack.kernels.simd import _i32_as_f32


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def u8_encode(x, lo, inv_step):
    """Codes uint8 (n, d) = clamp(round((x - lo) * inv_step), 0, 255); x float32 (n, d)."""
    n, d = x.shape
    out = np.empty((n, d), dtype=np.uint8)
    for i in prange(n):
        for j in range(d):
            v = np.rint((x[i, j] - lo[j]) * inv_step[j])
            if v < 0.0:
                v = 0.0
            elif v > 255.0:
                v = 255.0
            out[i, j] = np.uint8(v)
    return out


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def u8_decode(codes, lo, step):
    """Float32 (n, d) reconstruction lo + step * codes of uint8 codes (n, d)."""
    n, d = codes.shape
    out = np.empty((n, d), dtype=np.float32)
    for i in prange(n):
        for j in range(d):
            out[i, j] = lo[j] + step[j] * np.float32(codes[i, j])
    return out


_HALF_SCALE = np.float32(2.0**112)  # rebias float16's exponent (15) to float32's (127)


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


@njit(cache=True, nogil=True, inline="always")
def score_affine_ip_row(qf, code):
    """Probe kind AFFINE_IP: <q, x> of the row x = lo + step * code."""
    d = code.shape[0]
    acc = qf[d]
    for j in range(d):
        acc += qf[j] * as_f32(code[j])
    return acc


@njit(cache=True, nogil=True, inline="always")
def score_affine_l2_row(qf, code):
    """Probe kind AFFINE_L2: -||q - x||^2 of the row x = lo + step * code."""
    d = code.shape[0]
    weight = qf[d:]
    acc = np.float32(0.0)
    for j in range(d):
        diff = qf[j] - as_f32(code[j])
        acc += weight[j] * diff * diff
    return -acc
