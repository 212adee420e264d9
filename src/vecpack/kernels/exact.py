"""Exact float32 scores of chosen rows, for re-ranking candidates."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

IP, COSINE, L2 = 0, 1, 2


@njit(cache=True, nogil=True, fastmath=True)
def _rescore_query(i, vectors, q, cand, metric, out):
    """rescore for query i."""
    d = q.shape[1]
    for t in range(cand.shape[1]):
        r = cand[i, t]
        if r < 0:
            out[i, t] = -np.inf
            continue
        dot = np.float32(0.0)
        sq = np.float32(0.0)
        if metric == L2:
            for j in range(d):
                diff = q[i, j] - vectors[r, j]
                sq += diff * diff
            out[i, t] = -sq
        else:
            for j in range(d):
                v = vectors[r, j]
                dot += q[i, j] * v
                sq += v * v
            if metric == COSINE:
                out[i, t] = dot / np.sqrt(sq) if sq > 0 else 0.0
            else:
                out[i, t] = dot


@njit(cache=True, nogil=True, parallel=True)
def rescore(vectors, q, cand, metric):
    """Exact similarities float32 (m, c) of queries q (m, d) to rows cand int64 (m, c) of vectors (N, d).

    metric: IP (<q, x>), COSINE (<q, x> / ||x||, q already unit norm) or L2 (-||q - x||^2).
    Candidates < 0 score -inf. One query runs on the calling thread (waking the pool costs ~90 us).
    """
    m = cand.shape[0]
    out = np.empty(cand.shape, dtype=np.float32)
    if m == 1:
        _rescore_query(0, vectors, q, cand, metric, out)
        return out
    for i in prange(m):
        _rescore_query(i, vectors, q, cand, metric, out)
    return out
