"""Shared fixtures: small seeded data (with a zero row and a duplicate), fresh databases."""

from __future__ import annotations

import numpy as np
import pytest

import vecpack


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def data(rng) -> np.ndarray:
    """600 x 40 float32 with clusters, one zero row and one duplicated row (d not divisible by 8... or 64)."""
    centers = rng.normal(size=(12, 40))
    x = centers[rng.integers(0, 12, size=600)] + 0.5 * rng.normal(size=(600, 40))
    x[7] = 0.0
    x[8] = x[9]
    return x.astype(np.float32)


@pytest.fixture
def db(tmp_path):
    with vecpack.connect(tmp_path / "db") as database:
        yield database

