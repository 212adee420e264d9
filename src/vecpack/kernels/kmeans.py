"""Lloyd's k-means (squared L2), seeded and deterministic: BLAS assignment, numba update."""

from __future__ import annotations

import numpy as np
from numba import njit

ASSIGN_BLOCK = 16384  # rows per matrix product in ``assign`` (bounds the (block, k) score matrix)


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (int64 (n,)) and squared distance (float32 (n,)) of x (n, d) to centroids (k, d).

    Distances come from |x|^2 - 2 <x, c> + |c|^2 with the products in BLAS, block by block.
    """
    c_sq = np.einsum("ij,ij->i", centroids, centroids)
    labels = np.empty(x.shape[0], dtype=np.int64)
    dist = np.empty(x.shape[0], dtype=np.float32)
    for a in range(0, x.shape[0], ASSIGN_BLOCK):
        xb = x[a : a + ASSIGN_BLOCK]
        d = c_sq[None, :] - 2.0 * (xb @ centroids.T)
        lab = np.argmin(d, axis=1)
        labels[a : a + xb.shape[0]] = lab
        dist[a : a + xb.shape[0]] = np.maximum(d[np.arange(xb.shape[0]), lab] + np.einsum("ij,ij->i", xb, xb), 0.0)
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
