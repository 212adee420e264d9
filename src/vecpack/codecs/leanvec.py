"""``leanvec<d>``: query-aware dimension reduction (LeanVec out-of-distribution, Tepper et al.).

Data rows are mapped by B^T, queries by A^T (both D x d), chosen to keep inner
products: minimise ||Q A B^T X^T - Q X^T||_F^2 over sample queries Q and data X.
Only the second-moment matrices K_Q = Q^T Q and K_X = X^T X enter, so the cost
does not grow with the number of rows. Optimised by Frank-Wolfe over the
spectral-norm ball, alternating A and B; the linear step is U V^T from the SVD of
the negative gradient. Two departures from the paper's recipe, both measured to
matter less than they cost: it starts from the PCA solution (the in-distribution
LeanVec, so it can only improve on ``pca<d>``) instead of zeros, and each step
size comes from an exact line search (the loss is quadratic along the step)
instead of 1/(t+1), so the loss never rises.

Without sample queries it is ``pca<d>`` (``query_aware`` is False). Inner
product only: an l2 ranking also needs ||x||^2, which the map does not keep.
"""

from __future__ import annotations

import numpy as np

from vecpack.codecs.transform import Transform
from vecpack.errors import InvalidInput

MAX_STEPS = 500
#: stop when one A+B round lowers the loss by less than this fraction
TOLERANCE = 1e-3
MAX_TRAIN_ROWS = 100_000


class LeanVecTransform(Transform):
    family = "leanvec"
    min_train_rows = 2

    def __init__(self, dim_in: int, metric: str, spec: str, dim_out: int) -> None:
        if metric != "ip":
            raise InvalidInput(f"transform {spec!r} keeps inner products only; for l2 use 'pca{dim_out}'")
        super().__init__(dim_in, metric, spec, dim_out)

    def fit(self, x, queries=None):
        rng = np.random.default_rng(0)
        x = x[rng.permutation(x.shape[0])[:MAX_TRAIN_ROWS]].astype(np.float64)
        k_x = x.T @ x / x.shape[0]
        eigvecs = np.linalg.eigh(k_x)[1]
        pca = eigvecs[:, ::-1][:, : self.dim_out]
        self.query_aware = queries is not None and queries.shape[0] >= 2
        a = b = pca
        if self.query_aware:
            q = queries.astype(np.float64)
            a, b = frank_wolfe(q.T @ q / q.shape[0], k_x, pca)
        self.query_map = np.ascontiguousarray(a, dtype=np.float32)
        self.data_map = np.ascontiguousarray(b, dtype=np.float32)
        return self

    def apply(self, x):
        return np.ascontiguousarray(x @ self.data_map, dtype=np.float32)

    def apply_query(self, q):
        return np.ascontiguousarray(q @ self.query_map, dtype=np.float32)

    def inverse(self, y):
        return np.ascontiguousarray(y @ np.linalg.pinv(self.data_map), dtype=np.float32)

    def state(self):
        return {"query_map": self.query_map, "data_map": self.data_map, "query_aware": np.array([self.query_aware])}

    def set_state(self, arrays):
        self.query_map = np.ascontiguousarray(arrays["query_map"], dtype=np.float32)
        self.data_map = np.ascontiguousarray(arrays["data_map"], dtype=np.float32)
        self.query_aware = bool(arrays["query_aware"][0])


def leanvec_loss(k_q: np.ndarray, k_x: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """||Q A B^T X^T - Q X^T||_F^2 up to the constant ||Q X^T||^2, from K_Q = Q^T Q and K_X = X^T X."""
    return float(np.trace(b.T @ k_x @ b @ a.T @ k_q @ a) - 2.0 * np.trace(a.T @ k_q @ k_x @ b))


def frank_wolfe(k_q: np.ndarray, k_x: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The query and data maps (A, B), D x d, from alternating Frank-Wolfe steps with exact line search."""
    a, b = start.copy(), start.copy()
    loss = leanvec_loss(k_q, k_x, a, b)
    for _ in range(MAX_STEPS):
        before = loss
        a = _step(k_q, k_x, a, b)
        b = _step(k_x, k_q, b, a)  # the loss is symmetric in (A, K_Q) <-> (B, K_X)
        loss = leanvec_loss(k_q, k_x, a, b)
        if before - loss <= TOLERANCE * abs(before):
            break
    return a, b


def _step(k_1: np.ndarray, k_2: np.ndarray, m: np.ndarray, other: np.ndarray) -> np.ndarray:
    """One Frank-Wolfe step on m (A, with k_1 = K_Q, k_2 = K_X, other = B), the other map fixed."""
    g = other.T @ k_2 @ other  # d x d
    grad = 2.0 * (k_1 @ m @ g - k_1 @ k_2 @ other)
    u, _, vt = np.linalg.svd(-grad, full_matrices=False)
    delta = u @ vt - m
    # loss(m + t delta) - loss(m) = t * lin + t^2 * quad
    lin = float(np.sum(grad * delta))
    quad = float(np.trace(g @ delta.T @ k_1 @ delta))
    t = 1.0 if quad <= 0 else min(1.0, max(0.0, -lin / (2.0 * quad)))
    return m + t * delta
