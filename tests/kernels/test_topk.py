"""Top-k heaps (kernels/topk.py) against plain-numpy references on small seeded data."""

from __future__ import annotations

import numpy as np
import pytest

from vecpack.kernels.topk import (
    QUERY_CHUNK,
    RANK_SORT_MAX_K,
    heap_replace_top,
    merge_candidates,
    merge_scores,
    new_heaps,
    sort_heaps,
)


def reference_topk(scores: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Per query, the k best scores (descending) of float32 (m, n) among entries with rows >= 0, -inf padded."""
    out = np.full((scores.shape[0], k), -np.inf, dtype=np.float32)
    for i in range(scores.shape[0]):
        kept = np.sort(scores[i][rows[i] >= 0])[::-1][:k]
        out[i, : len(kept)] = kept
    return out


def assert_heaps_match(heap_s, heap_r, truth_s, score_of_row):
    """Sorted heaps hold the reference scores, each row once, each with its own score; empty slots are (-inf, -1)."""
    np.testing.assert_array_equal(heap_s, truth_s)
    for i in range(heap_s.shape[0]):
        filled = heap_r[i] >= 0
        assert np.all(heap_s[i][~filled] == -np.inf)
        rows = heap_r[i][filled]
        assert len(set(rows.tolist())) == len(rows)
        np.testing.assert_array_equal(heap_s[i][filled], [score_of_row[i][r] for r in rows])


def assert_valid_heaps(heap_s):
    for row in heap_s:
        for j in range(1, len(row)):
            assert row[(j - 1) // 2] <= row[j]


def merge_in_blocks(scores, live, k, block):
    heap_s, heap_r = new_heaps(scores.shape[0], k)
    for a in range(0, scores.shape[1], block):
        merge_scores(np.ascontiguousarray(scores[:, a : a + block]), a, live[a : a + block], heap_s, heap_r)
        assert_valid_heaps(heap_s)
    return heap_s, heap_r


@pytest.mark.parametrize("k", [1, 5, 10, 33, RANK_SORT_MAX_K + 1, 150])
@pytest.mark.parametrize("block", [50, 700, 2048])
def test_merge_scores_matches_numpy(k, block):
    rng = np.random.default_rng(k * 1000 + block)
    m, n = QUERY_CHUNK + 5, 1500  # a partial query chunk; blocks with a ragged tail
    scores = rng.normal(size=(m, n)).astype(np.float32)
    live = (rng.random(n) > 0.1).astype(np.uint8)
    heap_s, heap_r = merge_in_blocks(scores, live, k, block)
    sort_heaps(heap_s, heap_r)
    rows = np.where(live[None, :] > 0, np.arange(n)[None, :], -1).repeat(m, axis=0)
    assert_heaps_match(heap_s, heap_r, reference_topk(scores, rows, k), scores)
    assert not np.isin(heap_r, np.flatnonzero(live == 0)).any()


def test_k_larger_than_rows_leaves_empty_slots():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(3, 7)).astype(np.float32)
    live = np.array([1, 1, 0, 1, 1, 1, 1], np.uint8)
    heap_s, heap_r = merge_in_blocks(scores, live, 10, 4)
    sort_heaps(heap_s, heap_r)
    assert np.all(heap_r[:, 6:] == -1) and np.all(heap_s[:, 6:] == -np.inf)
    rows = np.where(live[None, :] > 0, np.arange(7)[None, :], -1).repeat(3, axis=0)
    assert_heaps_match(heap_s, heap_r, reference_topk(scores, rows, 10), scores)


def test_all_rows_deleted_and_empty_block():
    heap_s, heap_r = new_heaps(4, 5)
    merge_scores(np.ones((4, 40), np.float32), 0, np.zeros(40, np.uint8), heap_s, heap_r)
    merge_scores(np.ones((4, 0), np.float32), 40, np.zeros(0, np.uint8), heap_s, heap_r)
    sort_heaps(heap_s, heap_r)
    assert np.all(heap_r == -1) and np.all(heap_s == -np.inf)


@pytest.mark.parametrize("k", [3, 20, 100])
def test_ties_keep_exactly_k(k):
    """Integer scores with many ties, and a constant block (no usable threshold: the buffer overflows)."""
    rng = np.random.default_rng(k)
    m, n = 5, 1300
    scores = rng.integers(0, 6, size=(m, n)).astype(np.float32)
    scores[2] = 1.0
    live = np.ones(n, np.uint8)
    heap_s, heap_r = merge_in_blocks(scores, live, k, 1000)
    sort_heaps(heap_s, heap_r)
    rows = np.broadcast_to(np.arange(n), (m, n))
    assert_heaps_match(heap_s, heap_r, reference_topk(scores, rows, k), scores)


@pytest.mark.parametrize("k", [12, 30, 38])
def test_signed_zeros_and_infinities(k):
    scores = np.array([[0.0, -0.0, 1.0, -np.inf, np.inf, -0.0, 0.0, 2.0] * 5], np.float32)
    heap_s, heap_r = merge_in_blocks(scores, np.ones(40, np.uint8), k, 40)
    sort_heaps(heap_s, heap_r)
    # -inf never beats an empty slot, so k = 38 leaves three (-inf, -1) slots, as the reference has -inf there
    assert_heaps_match(heap_s, heap_r, reference_topk(scores, np.arange(40)[None, :], k), scores)


def test_merge_candidates_skips_negative_rows_and_keeps_existing_entries():
    rng = np.random.default_rng(7)
    m, c, k = QUERY_CHUNK + 3, 60, 10
    cand_s = rng.normal(size=(m, c)).astype(np.float32)
    cand_r = rng.permutation(5000)[: m * c].reshape(m, c).astype(np.int64)
    cand_r[rng.random((m, c)) < 0.2] = -1
    heap_s, heap_r = new_heaps(m, k)
    merge_candidates(cand_s[:, :20], cand_r[:, :20], heap_s, heap_r)  # a first batch into the same heaps
    merge_candidates(cand_s[:, 20:], cand_r[:, 20:], heap_s, heap_r)
    assert_valid_heaps(heap_s)
    sort_heaps(heap_s, heap_r)
    score_of_row = [dict(zip(cand_r[i].tolist(), cand_s[i].tolist(), strict=True)) for i in range(m)]
    assert_heaps_match(heap_s, heap_r, reference_topk(cand_s, cand_r, k), score_of_row)


@pytest.mark.parametrize("k", [4, 150])
def test_merge_candidates_with_fewer_candidates_than_k(k):
    cand_s = np.array([[0.5, 0.25, 0.75], [1.0, 1.0, 1.0]], np.float32)
    cand_r = np.array([[3, -1, 9], [4, 5, 6]], np.int64)
    heap_s, heap_r = new_heaps(2, k)
    merge_candidates(cand_s, cand_r, heap_s, heap_r)
    sort_heaps(heap_s, heap_r)
    np.testing.assert_array_equal(heap_s[0, :3], [0.75, 0.5, -np.inf])
    np.testing.assert_array_equal(heap_r[0, :3], [9, 3, -1])
    assert sorted(heap_r[1, :3].tolist()) == [4, 5, 6] and np.all(heap_r[:, 3:] == -1)


@pytest.mark.parametrize("k", [7, RANK_SORT_MAX_K + 36])
def test_sort_heaps_after_heap_replace_top_and_mixed_merges(k):
    """Heaps filled one score at a time (as the PQ scan does) are valid inputs to the bulk merges and the sort."""
    rng = np.random.default_rng(k)
    m, n = 3, 400
    scores = rng.normal(size=(m, n)).astype(np.float32)
    heap_s, heap_r = new_heaps(m, k)
    for i in range(m):
        for j in range(200):
            if scores[i, j] > heap_s[i, 0]:
                heap_replace_top(heap_s[i], heap_r[i], scores[i, j], j)
    assert_valid_heaps(heap_s)
    merge_scores(np.ascontiguousarray(scores[:, 200:]), 200, np.ones(200, np.uint8), heap_s, heap_r)
    sort_heaps(heap_s, heap_r)
    assert_heaps_match(heap_s, heap_r, reference_topk(scores, np.broadcast_to(np.arange(n), (m, n)), k), scores)
    again_s, again_r = heap_s.copy(), heap_r.copy()
    sort_heaps(again_s, again_r)  # sorting sorted heaps keeps them sorted
    np.testing.assert_array_equal(again_s, heap_s)


def test_non_contiguous_inputs():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(6, 600)).astype(np.float32)[:, ::2]
    live = np.ones(600, np.uint8)[::2]
    truth = reference_topk(scores, np.broadcast_to(np.arange(300), (6, 300)), 9)
    for block in (scores, np.asfortranarray(scores)):
        heap_s, heap_r = new_heaps(6, 9)
        merge_scores(block, 0, live, heap_s, heap_r)
        sort_heaps(heap_s, heap_r)
        assert_heaps_match(heap_s, heap_r, truth, scores)
