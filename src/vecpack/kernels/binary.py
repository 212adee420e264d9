"""Asymmetric scoring of float queries against 1-bit codes with popcounts.

A query is quantised to ``nbits`` unsigned levels u_j and split into bit
planes; then sum_j u_j * b_j = sum_p 2^p * popcount(b AND plane_p). Queries
are processed in blocks of QB so that the innermost loop runs over queries
(contiguous words) and vectorises to SIMD popcounts.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from vecpack.kernels.bits import popcount64
from vecpack.kernels.topk import heap_replace_top

QB = 16  # queries per block in the scan


def query_planes(u: np.ndarray, nbits: int, words: int) -> np.ndarray:
    """Bit planes uint64 (ceil(m/QB), words, nbits, QB) of levels u uint8 (m, d)."""
    m, d = u.shape
    nblocks = -(-m // QB)
    padded = np.zeros((nblocks * QB, words * 64), dtype=np.uint8)
    padded[:m, :d] = u
    planes = np.empty((nbits, nblocks * QB, words), dtype=np.uint64)
    for p in range(nbits):
        bits = (padded >> p) & 1
        planes[p] = np.packbits(bits, axis=1, bitorder="little").view(np.uint64)
    # (nbits, nblocks, QB, words) -> (nblocks, words, nbits, QB)
    planes = planes.reshape(nbits, nblocks, QB, words).transpose(1, 3, 0, 2)
    return np.ascontiguousarray(planes)


@njit(cache=True, parallel=True, fastmath=True)
def binary_scan(codes, row0, live, planes, qa, qb, qc, heap_s, heap_r):
    """Score 1-bit codes against quantised queries and merge into heaps.

    codes uint64 (n, W); live uint8 (n,); planes uint64 (nblocks, W, nbits, QB);
    score(query i, row r) = qa[i] * popcount(b_r) + qb[i] * sum_j u_ij b_rj + qc[i].
    heap_s float32 (m, k) / heap_r int64 (m, k) updated in place.
    """
    n, words = codes.shape
    nblocks, _, nbits, qb_size = planes.shape
    m = heap_s.shape[0]
    for blk in prange(nblocks):
        q0 = blk * qb_size
        count = min(qb_size, m - q0)
        acc = np.zeros(qb_size, dtype=np.int64)
        for r in range(n):
            if live[r] == 0:
                continue
            acc[:] = 0
            pc = 0
            for w in range(words):
                c = codes[r, w]
                pc += popcount64(c)
                for p in range(nbits):
                    for t in range(qb_size):
                        acc[t] += popcount64(c & planes[blk, w, p, t]) << p
            for t in range(count):
                i = q0 + t
                s = np.float32(qa[i] * pc + qb[i] * acc[t] + qc[i])
                if s > heap_s[i, 0]:
                    heap_replace_top(heap_s[i], heap_r[i], s, row0 + r)
