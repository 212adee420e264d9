"""Per-dimension 8-bit scalar quantisation: x ~ lo + step * code."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True, fastmath=True)
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


@njit(cache=True, parallel=True, fastmath=True)
def u8_decode(codes, lo, step):
    """Float32 (n, d) reconstruction lo + step * codes of uint8 codes (n, d)."""
    n, d = codes.shape
    out = np.empty((n, d), dtype=np.float32)
    for i in prange(n):
        for j in range(d):
            out[i, j] = lo[j] + step[j] * np.float32(codes[i, j])
    return out
