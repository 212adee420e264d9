"""Plain-numpy references shared by the tests."""

from __future__ import annotations

import numpy as np


def brute_force(x: np.ndarray, q: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Exact top-k row numbers (m, k) by plain numpy."""
    if metric == "l2":
        s = -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    else:
        s = q @ x.T
        if metric == "cosine":
            norms = np.linalg.norm(x, axis=1)
            s = s / np.where(norms > 0, norms, np.inf) / np.linalg.norm(q, axis=1, keepdims=True)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def recall(found_ids: list[list[str]], truth_rows: np.ndarray) -> float:
    k = truth_rows.shape[1]
    pairs = zip(found_ids, truth_rows, strict=True)
    return float(np.mean([len({int(i) for i in f} & set(t.tolist())) / k for f, t in pairs]))


def flip_byte(path, offset: int) -> None:
    """Invert the byte at ``offset`` of the file ``path`` (simulated disk damage; calling twice repairs it)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def manifest(col):
    """The collection's manifest as committed on disk, read through a connection of its own (another process's view)."""
    from vecpack.storage.catalog import Catalog
    from vecpack.storage.manifest import Manifest

    catalog = Catalog(col.path / "catalog.sqlite")
    try:
        return Manifest.read(catalog)
    finally:
        catalog.close()
