"""Inverted-list scan: score the codes of each query's probed lists and keep its top k."""

from __future__ import annotations

from numba import njit, prange

from vecpack.kernels.probe import score_row
from vecpack.kernels.topk import heap_replace_top


@njit(cache=True, parallel=True, fastmath=True)
def ivf_scan(kind_tok, qf, qw, codes, rows, offsets, probes, live, heap_s, heap_r):
    """Merge the scores of every live row in each query's probed lists into its heap.

    codes (N, ...) and rows int64 (N,) are the lists' entries stored list after list;
    list l spans offsets[l] .. offsets[l + 1] - 1. kind_tok = ``kind_token(probe kind)``.
    probes int64 (m, nprobe): lists per query (-1 = none). live uint8 is indexed by row.
    heap_s float32 / heap_r int64 (m, k) updated in place.
    """
    for i in prange(probes.shape[0]):
        hs = heap_s[i]
        hr = heap_r[i]
        for p in range(probes.shape[1]):
            lst = probes[i, p]
            if lst < 0:
                continue
            for t in range(offsets[lst], offsets[lst + 1]):
                row = rows[t]
                if live[row]:
                    s = score_row(kind_tok, qf[i], qw[i], codes[t])
                    if s > hs[0]:
                        heap_replace_top(hs, hr, s, row)
