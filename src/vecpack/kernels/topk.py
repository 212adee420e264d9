"""Top-k selection with per-query min-heaps stored as parallel arrays.

A heap row holds the k best (score, row) pairs seen so far for one query;
slot 0 is the worst kept score. Empty slots hold score -inf and row -1.
Scores are similarities: larger is better.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


def new_heaps(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty heaps for ``m`` queries: scores float32 (m, k) = -inf, rows int64 (m, k) = -1."""
    return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)


@njit(cache=True, inline="always")
def heap_replace_top(hs, hr, score, row):
    """Replace the worst entry of one heap (hs float32 (k,), hr int64 (k,)) and sift down."""
    k = hs.shape[0]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= k:
            break
        right = left + 1
        child = left
        if right < k and hs[right] < hs[left]:
            child = right
        if hs[child] >= score:
            break
        hs[i] = hs[child]
        hr[i] = hr[child]
        i = child
    hs[i] = score
    hr[i] = row


@njit(cache=True, parallel=True)
def merge_scores(scores, row0, live, heap_s, heap_r):
    """Push a block of scores into the heaps.

    scores float32 (m, b): query i against rows row0 .. row0+b-1.
    live uint8 (b,): 0 marks a deleted row, which is skipped.
    heap_s float32 (m, k), heap_r int64 (m, k): updated in place.
    """
    m, b = scores.shape
    for i in prange(m):
        hs = heap_s[i]
        hr = heap_r[i]
        worst = hs[0]
        for j in range(b):
            s = scores[i, j]
            if s > worst and live[j]:
                heap_replace_top(hs, hr, s, row0 + j)
                worst = hs[0]


@njit(cache=True, parallel=True)
def merge_candidates(cand_s, cand_r, heap_s, heap_r):
    """Push per-query candidate lists float32/int64 (m, c) into the heaps; rows < 0 are skipped."""
    m, c = cand_s.shape
    for i in prange(m):
        hs = heap_s[i]
        hr = heap_r[i]
        for j in range(c):
            if cand_r[i, j] >= 0 and cand_s[i, j] > hs[0]:
                heap_replace_top(hs, hr, cand_s[i, j], cand_r[i, j])


@njit(cache=True, parallel=True)
def sort_heaps(heap_s, heap_r):
    """Sort every heap row in place, best (largest score) first; empty slots go last."""
    m, k = heap_s.shape
    for i in prange(m):
        order = np.argsort(-heap_s[i])
        s = heap_s[i][order]
        r = heap_r[i][order]
        heap_s[i] = s
        heap_r[i] = r
