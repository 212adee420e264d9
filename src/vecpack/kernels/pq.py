"""Product quantisation: per-subspace nearest-centroid encoding and table lookups."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from vecpack.kernels.kmeans import LANES, ROW_BLOCK, nearest_centroid
from vecpack.kernels.topk import heap_replace_top


@njit(cache=True, nogil=True, parallel=True)
def pq_encode(x, centroids):
    """Codes uint8 (n, M): nearest of the K <= 256 centroids (M, K, ds) in each subspace of x (n, M*ds)."""
    n = x.shape[0]
    n_sub, k, ds = centroids.shape
    centroids_t = np.ascontiguousarray(centroids.transpose((0, 2, 1)))  # (M, ds, K): centroids innermost
    codes = np.empty((n, n_sub), dtype=np.uint8)
    for b in prange((n + ROW_BLOCK - 1) // ROW_BLOCK):
        scratch = np.empty(k + LANES, dtype=np.float32)
        for i in range(b * ROW_BLOCK, min(n, (b + 1) * ROW_BLOCK)):
            for m in range(n_sub):
                codes[i, m] = nearest_centroid(x, i, m * ds, centroids_t[m], scratch)[0]
    return codes


@njit(cache=True, nogil=True, parallel=True)
def pq_decode(codes, centroids):
    """Float32 (n, M*ds) reconstructions of codes uint8 (n, M)."""
    n, n_sub = codes.shape
    ds = centroids.shape[2]
    out = np.empty((n, n_sub * ds), dtype=np.float32)
    for i in prange(n):
        for m in range(n_sub):
            c = codes[i, m]
            for j in range(ds):
                out[i, m * ds + j] = centroids[m, c, j]
    return out


@njit(cache=True, nogil=True, fastmath=True)
def _lut_query(i, codes, row0, allowed, luts, bias, heap_s, heap_r):
    """lut_scan for query i."""
    lut = luts[i]
    hs = heap_s[i]
    hr = heap_r[i]
    for r in range(codes.shape[0]):
        if allowed[r] == 0:
            continue
        s = bias[i]
        for j in range(codes.shape[1]):
            s += lut[j, codes[r, j]]
        if s > hs[0]:
            heap_replace_top(hs, hr, s, row0 + r)


@njit(cache=True, nogil=True, parallel=True)
def lut_scan(codes, row0, allowed, luts, bias, heap_s, heap_r):
    """Score codes uint8 (n, M) with lookup tables float32 (m, M, 256) plus bias (m,); merge into heaps.
    One query runs on the calling thread (waking the pool costs ~90 us)."""
    m = luts.shape[0]
    if m == 1:
        _lut_query(0, codes, row0, allowed, luts, bias, heap_s, heap_r)
        return
    for i in prange(m):
        _lut_query(i, codes, row0, allowed, luts, bias, heap_s, heap_r)


@njit(cache=True, nogil=True, inline="always")
def score_lut_row(qf, code):
    """Probe kind LUT: bias + the query's table entries of the row's sub-codes."""
    n_sub = code.shape[0]
    acc = qf[256 * n_sub]
    for m in range(n_sub):
        acc += qf[256 * m + np.int64(code[m])]
    return acc
