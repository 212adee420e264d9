"""Retrieval quality metrics: recall@k against a ground truth, nDCG@k against relevance labels.

Plain numpy on purpose: this is the reference the compressed indexes are
measured against, so it shares no code with them. The ground truth itself,
exact (brute-force) search, is ``vecpack.search.exact_knn``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from vecpack.errors import InvalidInput, UnknownSpec


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of ``|found[:, :k] ∩ truth[:, :k]| / k``.

    Parameters
    ----------
    found, truth : int (m, >=k) row numbers, best first; -1 marks a missing entry
        and never matches.
    k : cutoff, >= 1.
    """
    found, truth = np.asarray(found), np.asarray(truth)
    if found.ndim != 2 or truth.ndim != 2 or len(found) != len(truth):
        raise InvalidInput(f"found and truth must be (m, k) arrays, got {found.shape} and {truth.shape}")
    if k < 1 or found.shape[1] < k or truth.shape[1] < k:
        raise InvalidInput(f"k={k} must be >= 1 and <= both widths {found.shape[1]}, {truth.shape[1]}")
    if len(found) == 0:
        raise InvalidInput("recall of zero queries is undefined")
    f, t = found[:, :k], truth[:, :k]
    hits = 0
    for a in range(0, len(f), 4096):  # (rows, k, k) comparisons, bounded memory
        eq = (f[a : a + 4096, :, None] == t[a : a + 4096, None, :]) & (t[a : a + 4096, None, :] >= 0)
        hits += int(eq.any(axis=1).sum())  # each true neighbour counted once
    return hits / (len(f) * k)


def ndcg_at_k(
    ranked_ids: Sequence[Sequence[str]],
    query_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    k: int = 10,
    *,
    gain: str = "linear",
) -> float:
    """nDCG@k averaged over the queries that have relevance labels (trec_eval ``ndcg_cut``).

    Parameters
    ----------
    ranked_ids : per query, retrieved corpus ids, best first.
    query_ids : the query id of each ranking.
    qrels : query id -> {corpus id: grade}; grades <= 0 give no gain.
    k : cutoff.
    gain : ``"linear"`` (gain = grade; trec_eval and BEIR) or ``"exponential"``
        (gain = 2**grade - 1, Burges et al.). They agree for binary labels.

    Notes
    -----
    DCG = sum over ranks r = 1..k of gain / log2(r + 1); the ideal DCG uses the
    query's k best grades from ``qrels``. Queries absent from ``qrels`` or with
    no positive grade are skipped. Repeated ids in a ranking count once.
    """
    if gain not in ("linear", "exponential"):
        raise UnknownSpec(f"gain must be 'linear' or 'exponential', got {gain!r}")
    if len(ranked_ids) != len(query_ids):
        raise InvalidInput(f"{len(ranked_ids)} rankings for {len(query_ids)} query ids")
    if k < 1:
        raise InvalidInput(f"k must be >= 1, got {k}")

    def g(grade: float) -> float:
        return max(grade, 0) if gain == "linear" else 2.0 ** max(grade, 0) - 1.0

    disc = [1.0 / math.log2(r + 2) for r in range(k)]
    scores = []
    for qid, ranking in zip(query_ids, ranked_ids, strict=True):
        rel = qrels.get(qid)
        if not rel:
            continue
        ideal = sorted((g(v) for v in rel.values()), reverse=True)[:k]
        idcg = sum(x * d for x, d in zip(ideal, disc, strict=False))
        if idcg <= 0:
            continue
        seen: set[str] = set()
        dcg = 0.0
        for r, doc in enumerate(ranking[:k]):
            if doc not in seen:
                seen.add(doc)
                dcg += g(rel.get(doc, 0)) * disc[r]
        scores.append(dcg / idcg)
    if not scores:
        raise InvalidInput("none of the query ids has a positive relevance label in qrels")
    return float(np.mean(scores))
