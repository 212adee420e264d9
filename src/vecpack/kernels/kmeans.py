"""Lloyd's k-means in numba (squared L2), seeded and deterministic."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True, fastmath=True)
def assign(x, centroids):
    """Nearest centroid (int64 (n,)) and squared distance (float32 (n,)) of x (n, d) to centroids (k, d)."""
    n, d = x.shape
    k = centroids.shape[0]
    c_sq = np.empty(k, dtype=np.float32)
    for c in range(k):
        acc = np.float32(0.0)
        for j in range(d):
            acc += centroids[c, j] * centroids[c, j]
        c_sq[c] = acc
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float32)
    for i in prange(n):
        x_sq = np.float32(0.0)
        for j in range(d):
            x_sq += x[i, j] * x[i, j]
        best = np.inf
        arg = 0
        for c in range(k):
            dot = np.float32(0.0)
            for j in range(d):
                dot += x[i, j] * centroids[c, j]
            dd = c_sq[c] - 2.0 * dot
            if dd < best:
                best = dd
                arg = c
        labels[i] = arg
        dist[i] = max(best + x_sq, 0.0)
    return labels, dist


@njit(cache=True)
def _update(x, labels, k):
    """Mean of each cluster (float32 (k, d)) and cluster sizes (int64 (k,))."""
    n, d = x.shape
    sums = np.zeros((k, d), dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    for i in range(n):
        c = labels[i]
        counts[c] += 1
        for j in range(d):
            sums[c, j] += x[i, j]
    out = np.zeros((k, d), dtype=np.float32)
    for c in range(k):
        if counts[c] > 0:
            for j in range(d):
                out[c, j] = sums[c, j] / counts[c]
    return out, counts


def kmeans(x: np.ndarray, k: int, iters: int = 20, seed: int = 0) -> np.ndarray:
    """Centroids float32 (k, d) of x float32 (n, d), n >= k.

    Initialised on k distinct random points; an emptied cluster is re-seeded on
    the point farthest from its centroid, so all k centroids stay in use.
    """
    rng = np.random.default_rng(seed)
    x = np.ascontiguousarray(x, dtype=np.float32)
    centroids = x[rng.choice(x.shape[0], size=k, replace=False)].copy()
    for _ in range(iters):
        labels, dist = assign(x, centroids)
        centroids, counts = _update(x, labels, k)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            far = np.argsort(-dist)[: empty.size]
            centroids[empty] = x[far]
    return centroids
