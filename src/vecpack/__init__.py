"""vecpack: a compression-first embedded vector database.

>>> import vecpack, numpy as np
>>> db = vecpack.connect()                       # a temporary database; pass a folder to keep it
>>> col = db.create_collection("docs", dim=3, metric="cosine", codec="float32")
>>> col.add(ids=["a", "b"], vectors=np.array([[1, 0, 0], [0, 1, 0]]), metadata=[{"year": 2020}, None])
>>> [(h.id, round(h.score, 3)) for h in col.search([1, 0.1, 0], k=2)]
[('a', 0.995), ('b', 0.1)]
"""

import os

# numba's OpenMP threads and OpenBLAS's threads alternate in every scan; with OpenMP's default
# spin-waiting they fight for the cores (2 threads measured 4x slower than 1). Must be set before
# the OpenMP runtime starts, i.e. before the first parallel kernel runs. A user's setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from vecpack.collection import Collection, Hit, Record
from vecpack.db import Database, connect
from vecpack.errors import (
    ClosedError,
    Conflict,
    ConnectionFailed,
    CorruptData,
    DimensionMismatch,
    FilterWarning,
    InvalidInput,
    NotFound,
    StorageError,
    UnknownSpec,
    VecpackError,
)

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``vecpack.Client`` is imported on first use: ``import vecpack`` never imports httpx (extra: server)."""
    if name == "Client":
        from vecpack.client import Client

        return Client
    raise AttributeError(f"module 'vecpack' has no attribute {name!r}")


__all__ = [
    "Client",
    "ClosedError",
    "Collection",
    "Conflict",
    "ConnectionFailed",
    "CorruptData",
    "Database",
    "DimensionMismatch",
    "FilterWarning",
    "Hit",
    "InvalidInput",
    "NotFound",
    "Record",
    "StorageError",
    "UnknownSpec",
    "VecpackError",
    "connect",
]
