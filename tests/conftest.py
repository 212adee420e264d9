"""Shared fixtures: small seeded data (with a near-zero row and a duplicate), fresh databases."""

from __future__ import annotations

import os

import numpy as np
import pytest

# the suite compiles kernels on first use, as numba does: a background warm-up (``kernels.warm``) would make
# results depend on when its groups became ready; tests/kernels/test_warm.py tests it, and the twins, directly
os.environ["VECPACK_WARMUP"] = "0"
# ... and background maintenance would change stats() and plans at arbitrary times: tests that want it ask
# connect(maintenance=True) (tests/storage/test_background.py)
os.environ["VECPACK_MAINTENANCE"] = "0"

import vecpack


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def data(rng) -> np.ndarray:
    """600 x 40 float32 with clusters, one near-zero row (1e-6 of a typical norm: the shortest a cosine collection
    takes is 1e-15) and one duplicated row (d not divisible by 8... or 64)."""
    centers = rng.normal(size=(12, 40))
    x = centers[rng.integers(0, 12, size=600)] + 0.5 * rng.normal(size=(600, 40))
    x[7] *= 1e-6
    x[8] = x[9]
    return x.astype(np.float32)


@pytest.fixture
def db(tmp_path):
    with vecpack.connect(tmp_path / "db") as database:
        yield database

