"""The search pipeline on arrays: code scan, exact scan of growing rows, float32 re-rank, top-k.

``Collection.search`` calls this once it holds its arrays; the benchmark calls
it directly to compare with FAISS at the same level (rows in, rows out).
``exact_knn`` is the brute-force ground truth (plain numpy) that ``codec="auto"``,
the tests and the benchmarks measure recall against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vecpack.codecs import Codec
from vecpack.errors import InvalidInput, UnknownSpec
from vecpack.index.base import Index
from vecpack.index.flat import scan_codes, scan_exact
from vecpack.kernels import twins, warm
from vecpack.kernels.exact import COSINE, IP, L2
from vecpack.kernels.exact import rescore as exact_scores
from vecpack.kernels.ivf import subset_scan
from vecpack.kernels.probe import kind_token, refine_rows
from vecpack.kernels.topk import merge_candidates, new_heaps, sort_heaps
from vecpack.validate import METRICS

METRIC_CODES = {"ip": IP, "cosine": COSINE, "l2": L2}
#: up to this many queries, a subset scan scores rows one by one with the codec's probe; more queries share
#: a block decode + matrix product (the Scorer), which costs more per row but is paid once per block
PROBE_QUERIES = 16
_BLOCK_FLOATS = 1 << 24  # exact_knn's score block size (64 MiB of float32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit norm (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.where(norms > 0, norms, 1.0)[:, None]


def prepare(x: np.ndarray, metric: str) -> np.ndarray:
    """Vectors as codecs see them: float32, and unit norm for cosine (zero rows stay zero)."""
    return unit_rows(x) if metric == "cosine" else np.ascontiguousarray(x, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class ScanData:
    """The rows a search reads, as of one snapshot of a collection.

    codec, codes : the codec and uint8 (sealed, code_size) codes of rows 0 .. sealed-1.
    vectors : float32 (n, d): every row's stored vector; rows sealed .. n-1 (the growing ones) are scanned
        exactly, and re-ranking reads candidates from here.
    metric : the collection's ("cosine", "ip" or "l2").
    rerank : candidates re-scored with ``vectors`` (0 = none).
    gather : if given, re-ranking reads the candidates' float32 rows (r, d) through ``gather(sorted unique
        rows)`` instead of indexing ``vectors`` (a large vector log, read with pread).
    """

    codec: Codec
    codes: np.ndarray
    vectors: np.ndarray
    metric: str
    rerank: int
    gather: Callable[[np.ndarray], np.ndarray] | None = None


def search_rows(
    q: np.ndarray,
    k: int,
    data: ScanData,
    allowed: np.ndarray,
    *,
    index: Index | None = None,
    ef: int | None = None,
    nprobe: int | None = None,
    filtered: bool = False,
    fallback: tuple[int, int] | None = None,
    layout: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k similarities float32 (m, k) and rows int64 (m, k) (-1 = none), best first.

    Parameters
    ----------
    q : float32 (m, d), already unit norm for cosine.
    data : the rows; those past ``index.rows`` (all of them without an index) and below the sealed rows are
        scanned flat through their codes.
    allowed : uint8 (n,), the rows that may be returned (0 = deleted, or not passing a filter).
    index : searched for rows 0 .. index.rows-1 with ``ef`` (a graph) or ``nprobe`` (IVF); None = its default.
    filtered : ``allowed`` is a selective filter: the index searches through passing rows only
        (``planner``'s "filtered" plan).
    fallback : (min_allowed, walk_ef): ``allowed`` is a filter searched as usual, and queries whose index
        search finds fewer than min_allowed passing rows search it again ``filtered`` (``Index.search``).
    layout : the codec's ``scan_layout`` of ``codes``, scanned instead of them when no index is given.
    Similarities are <q, x>, cosine, or -||q - x||^2 for l2.
    """
    codec, codes, vectors, rerank = data.codec, data.codes, data.vectors, data.rerank
    sealed = codes.shape[0]
    width = max(k, rerank)
    if index is not None and not warm.ready(str(index.kind)) and sealed <= warm.FLAT_ROWS:
        index = None  # its kernels are compiling (``kernels.warm``): scanning this many rows answers sooner
    indexed = index.rows if index is not None else 0
    if indexed:
        refine = codec.refine_pool(k)
        if refine and index.search_param == "ef":
            # a graph's beam is at hand: re-score all of it (costs no hops); widening the beam to the
            # codec's refine pool instead would cost hops (ef 100 runs 3-4x slower than ef 16-24)
            ef = index.default_search_param(width) if ef is None else ef
            pool = max(width, ef)
        else:
            pool = max(width, refine)
        probe = codec.probe(q)
        found = index.search(q, probe, codes[:indexed], allowed, pool, ef=ef, nprobe=nprobe, filtered=filtered,
                             fallback=fallback)
        if refine:  # a two-level codec: the index ranked by its first level; re-score with both
            fine = codec.refine_probe(probe)
            found = refine_rows(fine.kind, fine.qf, fine.qw, fine.view(codes), found[1], width)
        if indexed == vectors.shape[0] and not rerank:  # the index holds every row: its answer is final
            return found[0][:, :k], found[1][:, :k]
    heaps = new_heaps(q.shape[0], width)
    if indexed:
        merge_candidates(*found, *heaps)
    if sealed > indexed:
        scan_codes(codec.scorer(q), codes[indexed:], indexed, allowed[indexed:sealed], heaps,
                   layout if not indexed else None)
    if vectors.shape[0] > sealed:
        scan_exact(q, vectors[sealed:], sealed, allowed[sealed:], data.metric, heaps)
    return _finish(q, k, heaps, data)


def search_subset(q: np.ndarray, k: int, rows: np.ndarray, data: ScanData) -> tuple[np.ndarray, np.ndarray]:
    """``search_rows`` restricted to the live rows ``rows`` (int64), scanned without an index.

    ``rows`` lists its sealed rows (in any order; ascending reads memory in order) before its
    growing ones (ascending). The codes of the sealed ones and the float32 vectors of the
    growing ones are scanned exactly; the result is the same as a flat search whose live
    mask holds only ``rows``, at a cost proportional to ``len(rows)``.
    """
    codec, codes, vectors = data.codec, data.codes, data.vectors
    sealed = codes.shape[0]
    growing = np.flatnonzero(rows >= sealed)
    split = int(growing[0]) if growing.size else rows.size
    width = max(k, data.rerank)
    m = q.shape[0]
    heaps = new_heaps(m, width)
    if split and m <= PROBE_QUERIES and not codec.refine_pool(k) and warm.ready_for(codec.family):
        # score the codes where they lie (while the kernel compiles, the scorer decodes the gathered rows)
        probe = codec.probe(q)
        subset_scan(kind_token(probe.kind), probe.qf, probe.qw, probe.view(codes), rows[:split], *heaps)
    elif split:
        scan_codes(codec.scorer(q), codes[rows[:split]], 0, np.ones(split, np.uint8), heaps)
    if split < rows.size:
        grown = rows[split:]
        scan_exact(q, vectors[grown], split, np.ones(grown.size, np.uint8), data.metric, heaps)
    found = heaps[1] >= 0
    heaps[1][found] = rows[heaps[1][found]]
    return _finish(q, k, heaps, data)


def _finish(
    q: np.ndarray, k: int, heaps: tuple[np.ndarray, np.ndarray], data: ScanData
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank the heaps' candidates with exact float32 scores (if ``data.rerank``), keep the best k, best first."""
    if data.rerank:
        candidates, metric = heaps[1], METRIC_CODES[data.metric]
        rescore = exact_scores if warm.ready("scan") else twins.rescore
        if data.gather is None:
            exact = rescore(data.vectors, q, candidates, metric)
        else:
            valid = candidates >= 0
            unique, local = np.unique(candidates[valid], return_inverse=True)
            local_rows = np.full(candidates.shape, -1, dtype=np.int64)
            local_rows[valid] = local
            exact = rescore(data.gather(unique), q, local_rows, metric)
        heaps = new_heaps(q.shape[0], k)
        merge_candidates(exact, candidates, *heaps)
    sort_heaps(*heaps)
    return heaps[0][:, :k], heaps[1][:, :k]


# -- exact search: the ground truth; plain numpy on purpose, so it shares no code with the pipeline above
def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero): exact_knn's own, not ``unit_rows``."""
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
