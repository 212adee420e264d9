"""Nearest-centroid assignment (numba loop for small dimensions, BLAS above) and PQ encoding against brute force."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vecpack.kernels import kmeans as kmeans_module
from vecpack.kernels.kmeans import SMALL_DIM, assign, kmeans
from vecpack.kernels.pq import pq_encode


def brute_force(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d2 = ((x[:, None, :].astype(np.float64) - centroids[None, :, :]) ** 2).sum(-1)
    return d2.argmin(axis=1), d2.min(axis=1)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), k=st.integers(1, 300), d=st.integers(1, SMALL_DIM + 4), seed=st.integers(0, 2**16))
def test_assign_finds_the_nearest_centroid(n, k, d, seed):
    """Both paths (d <= SMALL_DIM: numba lanes; above: BLAS), k below, at and above the lane count."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    centroids = rng.standard_normal((k, d)).astype(np.float32)
    labels, dist = assign(x, centroids)
    _, want_dist = brute_force(x, centroids)
    assert labels.dtype == np.int64 and dist.dtype == np.float32 and labels.shape == dist.shape == (n,)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-4, atol=1e-4)
    # the chosen centroid is as near as the best (it may differ only on a near-tie)
    np.testing.assert_allclose(want_dist, ((x - centroids[labels]) ** 2).sum(1), rtol=1e-4, atol=1e-4)


def test_assign_breaks_ties_towards_the_first_centroid():
    centroids = np.zeros((40, 4), np.float32)
    labels, dist = assign(np.ones((3, 4), np.float32), centroids)
    assert labels.tolist() == [0, 0, 0] and np.allclose(dist, 4.0)


def test_pq_encode_picks_each_subspace_nearest_centroid(rng):
    x = rng.standard_normal((500, 24)).astype(np.float32)
    centroids = rng.standard_normal((6, 256, 4)).astype(np.float32)
    codes = pq_encode(x, centroids)
    for m in range(6):
        want, _ = brute_force(x[:, 4 * m : 4 * m + 4], centroids[m])
        assert (codes[:, m] == want).mean() > 0.999


def test_kmeans_is_the_same_on_either_assignment_path(rng, monkeypatch):
    """The numba loop replaces the BLAS product for small dimensions without changing k-means' result."""
    x = rng.standard_normal((3000, 4)).astype(np.float32)
    looped = kmeans(x, 64, iters=8, seed=1)
    monkeypatch.setattr(kmeans_module, "SMALL_DIM", 0)
    blas = kmeans(x, 64, iters=8, seed=1)
    np.testing.assert_allclose(looped, blas, atol=1e-4)
