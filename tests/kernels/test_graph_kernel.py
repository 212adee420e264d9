"""The Vamana kernels on tiny inputs where the right answer is known."""

from __future__ import annotations

import numpy as np

from vecpack.kernels.graph import graph_search
from vecpack.kernels.probe import AFFINE_IP


def _probe(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AFFINE_IP parameters for float32 codes: qf = [q, 0], no words."""
    qf = np.concatenate([q, np.zeros((q.shape[0], 1), np.float32)], axis=1)
    return qf, np.zeros((q.shape[0], 1), np.uint64)


def test_complete_graph_search_is_exact():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    q = rng.standard_normal((5, 8)).astype(np.float32)
    graph = np.array([[j for j in range(60) if j != i] for i in range(60)], dtype=np.int32)
    scores, rows = graph_search(AFFINE_IP, *_probe(q), x, graph, np.array([0]), 10, np.ones(60, np.uint8), 10)
    np.testing.assert_array_equal(rows, np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10])
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_more_entries_than_the_visited_table_starts_with():
    # regression: entries were added to the visited hash table without growing it, so a search
    # seeded with many rows and a small beam filled the table and probed forever
    n = 5000
    graph = np.full((n, 4), -1, dtype=np.int32)
    graph[:, 0] = (np.arange(n) + 1) % n
    x = np.random.default_rng(1).standard_normal((n, 4)).astype(np.float32)
    q = x[:2] * 3
    _, rows = graph_search(AFFINE_IP, *_probe(q), x, graph, np.arange(4000), 4, np.ones(n, np.uint8), 4)
    assert np.all(rows >= 0)
    np.testing.assert_array_equal(rows[:, 0], np.argmax(q @ x[:4000].T, axis=1))
