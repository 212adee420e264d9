"""Metrics: recall@k, nDCG@k (incl. reproducing published MiniLM numbers), exact k-NN."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vecpack import search
from vecpack.bench.datasets import data_root, load_dataset
from vecpack.bench.metrics import ndcg_at_k, recall_at_k
from vecpack.search import exact_knn

# --------------------------------------------------------------------------- recall


def test_recall_counts_overlap_order_free():
    truth = np.array([[0, 1, 2, 9], [3, 4, 5, 9]])
    found = np.array([[2, 1, 7, 0], [5, 8, 6, 3]])
    assert recall_at_k(found, truth, 3) == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert recall_at_k(truth, truth, 4) == 1.0


def test_recall_missing_and_duplicates_never_inflate():
    truth = np.array([[0, 1, -1]])
    assert recall_at_k(np.array([[-1, -1, -1]]), truth, 3) == 0.0  # -1 never matches -1
    assert recall_at_k(np.array([[0, 0, 0]]), truth, 3) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("found", "truth", "k"),
    [
        (np.zeros((2, 3), int), np.zeros((3, 3), int), 3),  # row counts differ
        (np.zeros((2, 2), int), np.zeros((2, 3), int), 3),  # too narrow
        (np.zeros(3, int), np.zeros(3, int), 1),  # not 2-D
        (np.zeros((2, 3), int), np.zeros((2, 3), int), 0),
    ],
)
def test_recall_bad_input(found, truth, k):
    with pytest.raises(ValueError):
        recall_at_k(found, truth, k)


# --------------------------------------------------------------------------- nDCG


def test_ndcg_hand_computed_linear_and_exponential():
    qrels = {"q": {"a": 2, "b": 1, "z": 0}}
    ranking = [["b", "x", "a"]]
    dcg = 1 + 2 / math.log2(4)
    idcg = 2 + 1 / math.log2(3)
    assert ndcg_at_k(ranking, ["q"], qrels, k=3) == pytest.approx(dcg / idcg)
    dcg_e, idcg_e = 1 + 3 / math.log2(4), 3 + 1 / math.log2(3)
    assert ndcg_at_k(ranking, ["q"], qrels, k=3, gain="exponential") == pytest.approx(dcg_e / idcg_e)
    # the cutoff applies to both the ranking and the ideal list
    assert ndcg_at_k(ranking, ["q"], qrels, k=1) == pytest.approx(1 / 2)


def test_ndcg_skips_unjudged_queries_and_counts_repeats_once():
    qrels = {"q1": {"a": 1}, "q3": {"a": 0}}
    rankings = [["a"], ["a"], ["a"], ["x", "a"]]
    # q2 has no qrels, q3 has no positive grade: both skipped
    assert ndcg_at_k(rankings[:3], ["q1", "q2", "q3"], qrels) == 1.0
    assert ndcg_at_k([["a", "a"]], ["q1"], {"q1": {"a": 1, "b": 1}}, k=2) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_ndcg_bad_input():
    with pytest.raises(ValueError, match="rankings"):
        ndcg_at_k([["a"]], ["q1", "q2"], {"q1": {"a": 1}})
    with pytest.raises(ValueError, match="relevance"):
        ndcg_at_k([["a"]], ["q9"], {"q1": {"a": 1}})
    with pytest.raises(ValueError, match="gain"):
        ndcg_at_k([["a"]], ["q1"], {"q1": {"a": 1}}, gain="log")


# --------------------------------------------------------------------------- exact k-NN


def _reference(x, q, k, metric):
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if metric == "l2":
        s = -np.sqrt(((q[:, None, :].astype(np.float64) - x[None]) ** 2).sum(-1))
    else:
        s = q.astype(np.float64) @ x.T
    rows = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return rows, np.take_along_axis(s, rows, axis=1)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("block", [1 << 24, 64])  # one block, and many tiny corpus blocks
def test_exact_knn_matches_full_sort(metric, block, monkeypatch):
    monkeypatch.setattr(search, "_BLOCK_FLOATS", block)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    q = rng.normal(size=(37, 16)).astype(np.float32)
    rows, scores = exact_knn(x, q, 7, metric)
    ref_rows, ref_s = _reference(x, q, 7, metric)
    assert rows.dtype == np.int64 and scores.dtype == np.float32 and rows.shape == (37, 7)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, -ref_s if metric == "l2" else ref_s, rtol=1e-4, atol=1e-4)


def test_exact_knn_pads_when_k_exceeds_corpus():
    x = np.eye(3, dtype=np.float32)
    rows, scores = exact_knn(x, x[:2], 5, "l2")
    np.testing.assert_array_equal(rows[:, 0], [0, 1])
    assert (rows[:, 3:] == -1).all() and np.isinf(scores[:, 3:]).all() and (scores[:, 3:] > 0).all()
    rows, scores = exact_knn(x, x[:2], 5, "ip")
    assert (rows[:, 3:] == -1).all() and (scores[:, 3:] == -np.inf).all()


def test_exact_knn_ties_prefer_lower_row_and_cosine_ignores_scale():
    x = np.array([[1, 0], [2, 0], [0, 1]], dtype=np.float32)
    rows, scores = exact_knn(x, np.array([[3, 0]], dtype=np.float32), 3, "cosine")
    np.testing.assert_array_equal(rows, [[0, 1, 2]])
    np.testing.assert_allclose(scores, [[1, 1, 0]], atol=1e-6)


def test_exact_knn_bad_input():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="metric"):
        exact_knn(x, x, 1, "hamming")
    with pytest.raises(ValueError):
        exact_knn(x, np.zeros((2, 5), np.float32), 1, "ip")
    with pytest.raises(ValueError):
        exact_knn(x, x, 0, "ip")


# --------------------------------------------------------------------------- real data

PUBLISHED = [  # (dataset, gain, nDCG@10 of float32 exact search with all-MiniLM-L6-v2)
    ("scifact", "linear", 0.645),
    ("msmarco-dl19", "exponential", 0.704),  # the quoted figure uses 2**grade - 1 gains
    ("msmarco-dl19", "linear", 0.797),  # trec_eval / BEIR linear gains on the same run
]


@pytest.mark.parametrize(("name", "gain", "expected"), PUBLISHED)
def test_exact_search_reproduces_minilm_ndcg(name, gain, expected):
    if data_root() is None:
        pytest.skip("shared data folder not found")
    ds = load_dataset(name)
    rows, _ = exact_knn(ds.corpus, ds.queries, 10, ds.metric)
    ranked = [[ds.corpus_ids[r] for r in row] for row in rows]
    assert ndcg_at_k(ranked, ds.query_ids, ds.qrels, 10, gain=gain) == pytest.approx(expected, abs=0.005)
