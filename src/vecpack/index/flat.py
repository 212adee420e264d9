"""Flat index: score every code row; exact for the growing segment's float32 rows."""

from __future__ import annotations

import numpy as np

from vecpack.codecs.base import Scorer, block_scores
from vecpack.kernels.topk import merge_scores

BLOCK_ROWS = 8192


def scan_codes(
    scorer: Scorer,
    codes: np.ndarray,
    row0: int,
    allowed: np.ndarray,
    heaps: tuple[np.ndarray, np.ndarray],
    layout: np.ndarray | None = None,
) -> None:
    """Merge the scores of code rows uint8 (n, code_size), numbered from row0, into heaps; allowed == 0 rows skipped.

    layout : the same rows as the codec's ``scan_layout`` arranged them, scanned instead when given.
    """
    if not codes.shape[0]:
        return
    if layout is None:
        scorer.scan(codes, row0, allowed, *heaps)
    else:
        scorer.scan_layout(layout, row0, allowed, *heaps)


def scan_exact(
    q: np.ndarray,
    vectors: np.ndarray,
    row0: int,
    allowed: np.ndarray,
    metric: str,
    heaps: tuple[np.ndarray, np.ndarray],
) -> None:
    """Merge exact similarities of float32 rows ``vectors`` (b, d), numbered from row0, into heaps.

    metric is "ip", "l2" or "cosine" (q already unit norm; rows are normalised here).
    """
    q_sq = np.einsum("ij,ij->i", q, q) if metric == "l2" else None
    for a in range(0, vectors.shape[0], BLOCK_ROWS):
        xb = vectors[a : a + BLOCK_ROWS]
        s = block_scores(q, xb, q_sq)
        if metric == "cosine":
            norms = np.sqrt(np.einsum("ij,ij->i", xb, xb))
            s /= np.where(norms > 0, norms, np.inf)[None, :]
        merge_scores(np.ascontiguousarray(s, dtype=np.float32), row0 + a, allowed[a : a + BLOCK_ROWS], *heaps)
