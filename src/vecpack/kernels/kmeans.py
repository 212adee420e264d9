"""Lloyd's k-means (squared L2), seeded and deterministic: BLAS or numba assignment, numba update (numpy twins
while the "pq" warm-up group, whose workload compiles both, is not ready: ``kernels.warm``)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from vecpack.kernels import twins, warm

ASSIGN_BLOCK = 16384  # rows per matrix product in ``assign`` (bounds the (block, k) score matrix)
#: up to this many dimensions ``assign`` loops in numba instead of a BLAS product: for PQ's sub-spaces
#: (4 dims, 256 centroids, 10k rows) the product's (n, k) temporaries and argmin cost more than the loop
SMALL_DIM = 16
ROW_BLOCK = 1024  # rows per task of the numba assignment
LANES = 16  # float32 lanes of one AVX-512 register


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def nearest_centroid(x, i, base, centroids_t, scratch):
    """(index, squared distance) of the centroid nearest x[i, base : base + ds] among centroids_t (ds, k),
    with ``scratch`` float32 (k + LANES,). Both loops over centroids vectorise: the distances run over
    centroids innermost, and the minimum is taken in LANES lanes first (a running minimum over all k
    compiles to a scalar loop that took longer than the distances)."""
    ds, k = centroids_t.shape
    dist = scratch[:k]
    dist[:] = 0.0
    for j in range(ds):
        v = x[i, base + j]
        row = centroids_t[j]
        for c in range(k):
            diff = v - row[c]
            dist[c] += diff * diff
    low = dist[0]
    c0 = 0
    if k >= 2 * LANES:
        lanes = scratch[k:]
        lanes[:] = dist[:LANES]
        for c0 in range(LANES, k - LANES + 1, LANES):
            for t in range(LANES):
                d = dist[c0 + t]
                lanes[t] = d if d < lanes[t] else lanes[t]
        c0 += LANES
        for t in range(LANES):
            low = lanes[t] if lanes[t] < low else low
    for c in range(c0, k):
        low = dist[c] if dist[c] < low else low
    for c in range(k):
        if dist[c] == low:
            return c, low
    return 0, low


@njit(cache=True, nogil=True, parallel=True)
def _assign_small(x, centroids_t):
    n = x.shape[0]
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float32)
    for b in prange((n + ROW_BLOCK - 1) // ROW_BLOCK):
        scratch = np.empty(centroids_t.shape[1] + LANES, dtype=np.float32)
        for i in range(b * ROW_BLOCK, min(n, (b + 1) * ROW_BLOCK)):
            labels[i], dist[i] = nearest_centroid(x, i, 0, centroids_t, scratch)
    return labels, dist


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (int64 (n,)) and squared distance (float32 (n,)) of x (n, d) to centroids (k, d).

    Up to SMALL_DIM dimensions, a numba loop (once the "pq" warm-up group compiled it); above, or meanwhile,
    |x|^2 - 2 <x, c> + |c|^2 with the products in BLAS, block by block (a near-tie may then go to the other
    centroid than the loop's exact differences choose).
    """
    if x.shape[1] <= SMALL_DIM and warm.ready("pq"):
        return _assign_small(np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(centroids.T))
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


@njit(cache=True, nogil=True)
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
        centroids, counts = (_update if warm.ready("pq") else twins.cluster_means)(x, labels, k)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            far = np.argsort(-dist)[: empty.size]
            centroids[empty] = x[far]
    return centroids
