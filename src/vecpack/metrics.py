"""Retrieval quality metrics and exact (brute-force) search, the benchmarks' ground truth.

Plain numpy on purpose: this is the reference the compressed indexes are
measured against, so it shares no code with them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from vecpack.errors import InvalidInput, UnknownSpec

METRICS = ("cosine", "ip", "l2")
_BLOCK_FLOATS = 1 << 24  # score block size (64 MiB of float32)


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


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return x / np.where(n > 0, n, 1).astype(np.float32)


def exact_knn(corpus: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by brute force (blocked float32 matmul + argpartition).

    Parameters
    ----------
    corpus : float (n, d).
    queries : float (m, d).
    k : neighbours per query, >= 1; beyond n the rows are -1.
    metric : ``"cosine"`` (both sides normalised), ``"ip"`` or ``"l2"``.

    Returns
    -------
    rows : int64 (m, k), best first (equal scores: lower row first), -1 when missing.
    scores : float32 (m, k); similarity (descending) for cosine/ip, Euclidean
        distance (ascending) for l2; -inf / +inf when missing.
    """
    if metric not in METRICS:
        raise UnknownSpec(f"unknown metric {metric!r}; expected one of {METRICS}")
    x = np.asarray(corpus, dtype=np.float32)
    q = np.asarray(queries, dtype=np.float32)
    if x.ndim != 2 or q.ndim != 2 or x.shape[1] != q.shape[1]:
        raise InvalidInput(f"corpus (n, d) and queries (m, d) must share d, got {x.shape}, {q.shape}")
    if k < 1:
        raise InvalidInput(f"k must be >= 1, got {k}")
    if metric == "cosine":
        x, q = _unit(x), _unit(q)
    x_sq = np.einsum("ij,ij->i", x, x) if metric == "l2" else None
    n, m = len(x), len(q)
    best_s = np.full((m, k), -np.inf, dtype=np.float32)  # similarity: -squared distance for l2
    best_r = np.full((m, k), -1, dtype=np.int64)
    bq = max(1, min(m, 1024))
    bc = max(k, _BLOCK_FLOATS // bq)
    for qa in range(0, m, bq):
        qs, s_run, r_run = q[qa : qa + bq], best_s[qa : qa + bq], best_r[qa : qa + bq]
        for ca in range(0, n, bc):
            s = qs @ x[ca : ca + bc].T
            if x_sq is not None:  # -||q - x||^2 up to the per-query constant ||q||^2
                s = 2 * s - x_sq[ca : ca + bc]
            kk = min(k, s.shape[1])
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < s.shape[1] else None
            cand_s = s if part is None else np.take_along_axis(s, part, axis=1)
            cand_r = (np.arange(s.shape[1]) if part is None else part) + ca
            cand_r = np.broadcast_to(cand_r, cand_s.shape)
            all_s = np.concatenate([s_run, cand_s], axis=1)
            all_r = np.concatenate([r_run, cand_r], axis=1)
            # best first, ties by lower row (missing rows -1 carry -inf and sort last)
            order = np.lexsort((np.where(all_r < 0, n, all_r), -all_s), axis=1)[:, :k]
            s_run[:] = np.take_along_axis(all_s, order, axis=1)
            r_run[:] = np.take_along_axis(all_r, order, axis=1)
    if metric == "l2":
        q_sq = np.einsum("ij,ij->i", q, q)[:, None]
        dist = np.sqrt(np.maximum(q_sq - best_s, 0)).astype(np.float32)
        return best_r, np.where(best_r >= 0, dist, np.float32(np.inf))
    return best_r, best_s
