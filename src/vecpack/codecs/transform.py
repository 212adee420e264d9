"""Transforms: learned or fixed maps applied to vectors before a codec (``"pca192,int8"``).

A transform maps float32 rows (n, dim_in) to (n, dim_out). Data rows and query
rows may be mapped differently (LeanVec's out-of-distribution projections);
by default both use ``apply``. Transforms keep the codec metric: an ``"ip"``
chain ranks by inner products of the mapped vectors, an ``"l2"`` chain by their
distances. ``codecs.chain.ChainCodec`` composes transforms with a codec.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from vecpack.errors import InvalidInput


class Transform(ABC):
    """Maps float32 (n, dim_in) -> float32 (n, dim_out); ``fit`` on a sample first when it learns."""

    family: ClassVar[str]
    #: fewest rows ``fit`` accepts
    min_train_rows: ClassVar[int] = 1
    #: True when distances after the map equal those before it (a rotation)
    lossless: ClassVar[bool] = False

    def __init__(self, dim_in: int, metric: str, spec: str, dim_out: int) -> None:
        if not 1 <= dim_out <= dim_in:
            raise InvalidInput(f"transform {spec!r}: output dimension {dim_out} must be in 1..{dim_in} (the input's)")
        self.dim_in = dim_in
        self.dim_out = dim_out
        self.metric = metric
        self.spec = spec

    def fit(self, x: np.ndarray, queries: np.ndarray | None = None) -> Transform:
        """Learn from data rows x (n, dim_in) and, for query-aware maps, sample queries; returns self."""
        return self

    @abstractmethod
    def apply(self, x: np.ndarray) -> np.ndarray:
        """Data rows (n, dim_in) mapped to float32 (n, dim_out)."""

    def apply_query(self, q: np.ndarray) -> np.ndarray:
        """Query rows mapped like data rows unless the transform is query-aware."""
        return self.apply(q)

    @abstractmethod
    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Approximate data rows (n, dim_in) back from mapped rows (n, dim_out)."""

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def set_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore parameters produced by ``state()``."""


class PCATransform(Transform):
    """``pca<d>``: projection on the top-d principal directions (LeanVec in-distribution).

    For ip the directions are the top eigenvectors of the second-moment matrix X^T X
    (inner products need no centring: <Pq, Px> approximates <q, x>); for l2 of the
    covariance (distances are translation invariant, so rows are projected uncentred).
    """

    family = "pca"
    min_train_rows = 2

    def fit(self, x, queries=None):
        x64 = x.astype(np.float64)
        if self.metric == "l2":
            x64 -= x64.mean(axis=0)
        eigvals, eigvecs = np.linalg.eigh(x64.T @ x64)
        self.components = np.ascontiguousarray(eigvecs[:, ::-1][:, : self.dim_out], dtype=np.float32)
        self.explained = float(eigvals[::-1][: self.dim_out].sum() / max(eigvals.sum(), 1e-30))
        return self

    def apply(self, x):
        return np.ascontiguousarray(x @ self.components, dtype=np.float32)

    def inverse(self, y):
        return np.ascontiguousarray(y @ self.components.T, dtype=np.float32)

    def state(self):
        return {"components": self.components}

    def set_state(self, arrays):
        self.components = np.ascontiguousarray(arrays["components"], dtype=np.float32)


class MatryoshkaTransform(Transform):
    """``mrl<d>``: keep the first d dimensions (for models trained with Matryoshka loss).

    When the fitted rows have unit norm (cosine collections) the truncated rows are
    renormalised, as Matryoshka models are meant to be compared.
    """

    family = "mrl"

    def fit(self, x, queries=None):
        norms = np.einsum("ij,ij->i", x[:1000], x[:1000])
        self.renormalise = bool(self.metric == "ip" and np.all(np.abs(norms - 1.0) < 1e-3))
        return self

    def apply(self, x):
        y = np.ascontiguousarray(x[:, : self.dim_out], dtype=np.float32)
        if self.renormalise:
            norms = np.sqrt(np.einsum("ij,ij->i", y, y))
            y /= np.where(norms > 0, norms, 1.0)[:, None]
        return y

    def inverse(self, y):
        x = np.zeros((y.shape[0], self.dim_in), dtype=np.float32)
        x[:, : self.dim_out] = y
        return x

    def state(self):
        return {"renormalise": np.array([self.renormalise])}

    def set_state(self, arrays):
        self.renormalise = bool(arrays["renormalise"][0])
