"""Plain-numpy twins of the kernels a new user's first calls run, for while ``warm`` compiles the kernels.

Each twin takes and returns what its kernel does (heaps updated in place, with the heap layout the kernels
expect: a row sorted ascending is a valid min-heap), computes the same scores up to float rounding, and is
slower at scale; tests check each against its kernel.
"""

from __future__ import annotations

import numpy as np

from vecpack.kernels.exact import COSINE, L2


def merge_candidates(cand_s: np.ndarray, cand_r: np.ndarray, heap_s: np.ndarray, heap_r: np.ndarray) -> None:
    """``topk.merge_candidates``: per-query candidates float32 / int64 (m, c) into the heaps; rows < 0 skipped."""
    k = heap_s.shape[1]
    if k == 0 or cand_s.shape[1] == 0:
        return
    s = np.concatenate([heap_s, np.where(cand_r >= 0, cand_s, -np.inf).astype(np.float32)], axis=1)
    r = np.concatenate([heap_r, cand_r], axis=1)
    # the k best; among equal scores the lower rows (a scan meets them first, and the kernels keep those)
    best = np.lexsort((np.where(r >= 0, r, np.iinfo(np.int64).max), -s), axis=1)[:, :k]
    order = best[:, ::-1]  # ascending: a valid min-heap
    heap_s[:] = np.take_along_axis(s, order, axis=1)
    heap_r[:] = np.where(heap_s > -np.inf, np.take_along_axis(r, order, axis=1), -1)


def merge_scores(scores: np.ndarray, row0: int, allowed: np.ndarray, heap_s: np.ndarray, heap_r: np.ndarray) -> None:
    """``topk.merge_scores``: scores float32 (m, b) of rows row0 .. row0+b-1 into the heaps, skipping allowed == 0."""
    m, b = scores.shape
    rows = np.where(np.asarray(allowed[:b]) != 0, np.arange(row0, row0 + b), -1)
    merge_candidates(scores, np.broadcast_to(rows, (m, b)), heap_s, heap_r)


def sort_heaps(heap_s: np.ndarray, heap_r: np.ndarray) -> None:
    """``topk.sort_heaps``: every heap row best first (equal scores: lower rows first), empty slots last."""
    order = np.lexsort((np.where(heap_r >= 0, heap_r, np.iinfo(np.int64).max), -heap_s), axis=1)
    heap_s[:] = np.take_along_axis(heap_s, order, axis=1)
    heap_r[:] = np.take_along_axis(heap_r, order, axis=1)


def rescore(vectors: np.ndarray, q: np.ndarray, cand: np.ndarray, metric: int) -> np.ndarray:
    """``exact.rescore``: exact similarities float32 (m, c) of queries q (m, d) to rows cand (m, c); -1 -> -inf."""
    out = np.full(cand.shape, -np.inf, np.float32)
    if not (cand >= 0).any():  # nothing to read (``vectors`` may then be empty)
        return out
    step = max(1, (1 << 22) // max(1, cand.shape[1] * q.shape[1]))  # gather about 16 MB of rows at a time
    for a in range(0, cand.shape[0], step):
        c = cand[a : a + step]
        x = np.asarray(vectors)[np.maximum(c, 0)].astype(np.float32)  # (b, c, d)
        if metric == L2:
            diff = x - q[a : a + step, None, :]
            s = -np.einsum("mcd,mcd->mc", diff, diff)
        else:
            s = np.einsum("mcd,md->mc", x, q[a : a + step])
            if metric == COSINE:
                norms = np.sqrt(np.einsum("mcd,mcd->mc", x, x))
                s = np.where(norms > 0, s / np.where(norms > 0, norms, 1), 0)
        out[a : a + step] = np.where(c >= 0, s, -np.inf)
    return out


def u8_encode(x: np.ndarray, lo: np.ndarray, inv_step: np.ndarray) -> np.ndarray:
    """``scalar.u8_encode``: clamp(round((x - lo) * inv_step), 0, 255) as uint8."""
    return np.clip(np.rint((x - lo) * inv_step), 0, 255).astype(np.uint8)


def u8_decode(codes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``scalar.u8_decode``: lo + step * codes as float32."""
    return (lo + step * codes.astype(np.float32)).astype(np.float32)


def cluster_means(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``kmeans._update``: each cluster's mean float32 (k, d) (zeros for an empty one) and sizes int64 (k,)."""
    counts = np.bincount(labels, minlength=k)
    sums = np.stack([np.bincount(labels, weights=x[:, j], minlength=k) for j in range(x.shape[1])], axis=1)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32), counts


def pq_decode(codes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``pq.pq_decode``: float32 (n, M * ds) reconstructions of codes uint8 (n, M)."""
    out = centroids[np.arange(centroids.shape[0])[None, :], codes]  # (n, M, ds)
    return np.ascontiguousarray(out.reshape(codes.shape[0], -1), dtype=np.float32)


def quantize_queries(q: np.ndarray, shift: np.ndarray, scale: np.ndarray, n_bits: int):
    """``binary.quantize_queries`` with the levels u float32 (m, d) instead of their bit planes, and lo, delta,
    sum(qs) float32 (m,): the same float32 arithmetic, so the same levels."""
    qs = (q - shift) * scale
    top = np.float32(2**n_bits - 1)
    lo, high = qs.min(axis=1), qs.max(axis=1)
    delta = (high - lo) / top
    delta = np.where(delta > 0, delta, np.float32(1.0)).astype(np.float32)
    levels = np.clip(np.rint((qs - lo[:, None]) / delta[:, None]), 0, top).astype(np.float32)
    return levels, lo, delta, qs.sum(axis=1, dtype=np.float32)


def binary_scan(codes: np.ndarray, row0: int, allowed: np.ndarray, levels: np.ndarray, qa: np.ndarray,
                qb: np.ndarray, qc: np.ndarray, heap_s: np.ndarray, heap_r: np.ndarray) -> None:
    """``binary.binary_scan`` of 1-bit codes uint8 (n, bytes) against query levels (``quantize_queries``):
    score = qa * popcount(b) + qb * sum_j u_j b_j + qc, merged into the heaps."""
    d = levels.shape[1]
    for a in range(0, codes.shape[0], 8192):
        bits = np.unpackbits(codes[a : a + 8192], axis=1, bitorder="little")[:, :d].astype(np.float32)
        s = qa[:, None] * bits.sum(axis=1)[None, :] + qb[:, None] * (levels @ bits.T) + qc[:, None]
        merge_scores(s.astype(np.float32), row0 + a, allowed[a : a + 8192], heap_s, heap_r)
