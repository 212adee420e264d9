"""Top-k selection with per-query min-heaps stored as parallel arrays.

A heap row holds the k best (score, row) pairs seen so far for one query;
slot 0 is the worst kept score. Empty slots hold score -inf and row -1.
Scores are similarities: larger is better.

Bulk merges do not sift scores through the heap one at a time: on this
hardware a mispredicted branch (one per accepted score) costs as much as a
vectorised pass over a hundred scores. ``merge_row`` instead

1. picks a threshold that at least k allowed scores of the block exceed, but not
   many more (``block_threshold``: vectorised counting probes starting at the
   normal-tail guess mean + z * sd), never above the k-th best score, so it
   filters out nothing that belongs in the top k;
2. appends the scores above max(threshold, heap minimum), 16 at a time and
   without branches, to a candidate buffer (``compress_above``: a masked
   compress-store, vcompressps on AVX-512);
3. keeps the best k of heap + buffer (``reduce_into_heap``: an interpolation
   search for the k-th best score with counting passes, then one compaction
   pass), also whenever the buffer fills up mid-block.

Small heaps (k <= RANK_SORT_MAX_K) are written back sorted ascending, which
is a valid min-heap and makes ``sort_heaps`` a reversal; larger ones are
heapified. A score equal to the heap minimum is not taken, as with the
heap's strict test; among equal scores at the cut, earlier ones are kept.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from vecpack.kernels import twins, warm
from vecpack.kernels.simd import LANES, compress_above, count_lanes_above, key_score, order_key

# queries per task of the parallel merges: scratch buffers are allocated once per task
QUERY_CHUNK = 16
# heaps up to this size are kept sorted (ranked by counting, k^2 branch-free compares)
RANK_SORT_MAX_K = 64
_NEG_INF = np.float32(-np.inf)
_POS_INF = np.float32(np.inf)


def new_heaps(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty heaps for ``m`` queries: scores float32 (m, k) = -inf, rows int64 (m, k) = -1."""
    return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)


@njit(cache=True, nogil=True)
def buffer_size(k):
    """Length of the candidate buffers for heaps of size k (room for 3k + 64 candidates, plus LANES slack)."""
    return 3 * k + 64 + LANES


@njit(cache=True, nogil=True, inline="always")
def _sift_down(hs, hr, i, size, score, row):
    """Put (score, row) at slot i of the min-heap hs[:size] (float32) / hr (int64) and sift it down.

    The smaller child is picked without a branch (a conditional move): on random heaps that
    branch mispredicts half the time.
    """
    left = 2 * i + 1
    while left < size:
        right = min(left + 1, size - 1)
        child = left + ((hs[right] < hs[left]) & (right > left))
        child_score = hs[child]
        if child_score >= score:
            break
        hs[i] = child_score
        hr[i] = hr[child]
        i = child
        left = 2 * i + 1
    hs[i] = score
    hr[i] = row


@njit(cache=True, nogil=True, inline="always")
def heap_replace_top(hs, hr, score, row):
    """Replace the worst entry of one heap (hs float32 (k,), hr int64 (k,)) and sift down."""
    _sift_down(hs, hr, 0, hs.shape[0], score, row)


@njit(cache=True, nogil=True, inline="always")
def _heapify(hs, hr):
    """Turn hs float32 (k,) / hr int64 (k,) into a min-heap in place."""
    k = hs.shape[0]
    for i in range(k // 2 - 1, -1, -1):
        _sift_down(hs, hr, i, k, hs[i], hr[i])


@njit(cache=True, nogil=True)
def count_above(scores, allowed, x):
    """Number of j with scores[j] > x (float32) and allowed[j] != 0; scores float32 (b,), allowed uint8 (b,)."""
    b = scores.shape[0]
    x = np.float32(x)
    n_full = b - b % LANES
    c = 0
    for j0 in range(0, n_full, LANES):
        c += count_lanes_above(scores, allowed, j0, x)
    for j in range(n_full, b):
        c += (scores[j] > x) & (allowed[j] != 0)
    return c


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def mean_sd(scores):
    """Mean and standard deviation (float32) of scores float32 (b,), b > 0."""
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    for j in range(scores.shape[0]):
        v = scores[j]
        s1 += v
        s2 += v * v
    mu = s1 / scores.shape[0]
    var = s2 / scores.shape[0] - mu * mu
    return mu, np.float32(np.sqrt(var)) if var > 0 else np.float32(0.0)


@njit(cache=True, nogil=True)
def _normal_upper_quantile(p):
    """z with P(Z > z) ~ p for a standard normal Z, 0 < p <= 0.5 (Abramowitz & Stegun 26.2.23)."""
    t = np.sqrt(-2.0 * np.log(p))
    return t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t**3)


@njit(cache=True, nogil=True)
def block_threshold(scores, allowed, k, room, mu, sd):
    """A threshold for one query's scores float32 (b,) / allowed uint8 (b,): -inf, or a value that
    at least k allowed scores exceed (so the block's k best all exceed it), ideally at most ``room``.

    mu / sd: the scores' mean and deviation (sd < 0: not known, computed here).
    """
    b = scores.shape[0]
    mu = np.float32(mu)
    sd = np.float32(sd)
    if sd < 0:
        mu, sd = mean_sd(scores)
    p = 0.5 * (k + room) / b
    z = _normal_upper_quantile(p) if p < 0.5 else 0.0
    x = np.float32(mu + z * sd)
    step = max(sd, np.float32(1e-3) * abs(mu), np.float32(1e-30))
    lo = _NEG_INF  # valid: -inf, or >= k allowed scores above it
    hi = _POS_INF  # fewer than k allowed scores above it
    for _ in range(24):
        if not (x > lo and x < hi):
            break
        c = count_above(scores, allowed, x)
        if c >= k:
            lo = x
            if c <= room:
                break
        else:
            hi = x
        if hi == _POS_INF:
            x = x + step
            step *= np.float32(2.0)
        elif lo == _NEG_INF:
            if x < mu - 4 * sd:  # hardly k allowed scores at all: no threshold
                break
            x = x - step
            step *= np.float32(2.0)
        else:
            x = np.float32(0.5) * (lo + hi)
    return lo


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _count_at_least(hs, bs, n, x):
    """Number of scores >= x (float32) among hs float32 (k,) and bs[:n]."""
    c = np.float32(0.0)  # a float sum vectorises 8 lanes wide; exact below 2**24
    for j in range(hs.shape[0]):
        c += np.float32(hs[j] >= x)
    for j in range(n):
        c += np.float32(bs[j] >= x)
    return np.int64(c)


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _count_greater(hs, bs, n, x):
    """Number of scores > x (float32) among hs float32 (k,) and bs[:n]."""
    c = np.float32(0.0)
    for j in range(hs.shape[0]):
        c += np.float32(hs[j] > x)
    for j in range(n):
        c += np.float32(bs[j] > x)
    return np.int64(c)


@njit(cache=True, nogil=True)
def _least_key_from(hs, bs, n, key):
    """Smallest order key >= key (int64) among the scores hs float32 (k,) and bs[:n] (one must exist)."""
    best = np.int64(2**31)
    for j in range(hs.shape[0]):
        v = np.int64(order_key(hs[j]))
        best = min(best, v if v >= key else np.int64(2**31))
    for j in range(n):
        v = np.int64(order_key(bs[j]))
        best = min(best, v if v >= key else np.int64(2**31))
    return best


@njit(cache=True, nogil=True)
def _greatest_key_below(hs, bs, n, key):
    """Largest order key < key (int64) among the scores hs float32 (k,) and bs[:n] (one must exist)."""
    best = np.int64(-(2**31) - 1)
    for j in range(hs.shape[0]):
        v = np.int64(order_key(hs[j]))
        best = max(best, v if v < key else np.int64(-(2**31) - 1))
    for j in range(n):
        v = np.int64(order_key(bs[j]))
        best = max(best, v if v < key else np.int64(-(2**31) - 1))
    return best


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _rank_sort_ascending(hs, hr, s_tmp, r_tmp):
    """Sort hs float32 (k,) / hr int64 (k,) ascending by counting each entry's rank (no branches).

    Equal scores end up in reverse slot order (in slot order once sort_heaps reverses the row).
    s_tmp float32 / r_tmp int64 (>= k,): scratch.
    """
    k = hs.shape[0]
    for a in range(k):
        sa = hs[a]
        rank = np.float32(0.0)  # entries below a: smaller scores, and equal ones in later slots
        for j in range(k):
            v = hs[j]
            rank += np.float32((v < sa) | ((v == sa) & (j > a)))
        r = np.int64(rank)
        s_tmp[r] = sa
        r_tmp[r] = hr[a]
    for j in range(k):
        hs[j] = s_tmp[j]
        hr[j] = r_tmp[j]


@njit(cache=True, nogil=True)
def _radix_sort_descending(hs, hr, keys, keys2, rows2, counts):
    """Sort hs float32 (k,) / hr int64 (k,) best first: LSD radix sort on the order keys, 8 bits a pass.

    keys, keys2, rows2 int64 (>= k,) and counts int64 (256,): scratch. Stable, no data-dependent
    branches; a pass whose digit is the same for all entries is skipped. Equal scores keep slot order.
    """
    k = hs.shape[0]
    for j in range(k):
        keys[j] = 0x7FFFFFFF - np.int64(order_key(hs[j]))  # ascending keys = descending scores, all >= 0
    src_k, src_r, dst_k, dst_r = keys, hr, keys2, rows2
    for shift in range(0, 32, 8):
        counts[:] = 0
        for j in range(k):
            counts[(src_k[j] >> shift) & 255] += 1
        if counts[(src_k[0] >> shift) & 255] == k:
            continue
        total = 0
        for d in range(256):
            c = counts[d]
            counts[d] = total
            total += c
        for j in range(k):
            d = (src_k[j] >> shift) & 255
            pos = counts[d]
            dst_k[pos] = src_k[j]
            dst_r[pos] = src_r[j]
            counts[d] = pos + 1
        src_k, src_r, dst_k, dst_r = dst_k, dst_r, src_k, src_r
    for j in range(k):
        hs[j] = key_score(0x7FFFFFFF - src_k[j])
        hr[j] = src_r[j]


@njit(cache=True, nogil=True)
def reduce_into_heap(hs, hr, bs, bj, br, n, row0, row_ids):
    """Keep the best k of the heap hs float32 / hr int64 (k,) and the n candidates bs float32 / bj int32.

    Candidate t is row row_ids[bj[t]] if row_ids (int64) is non-empty, else row0 + bj[t]. Exact:
    the k-th best score T is found by searching the float32 values (vectorised counting passes,
    no swaps), then one pass keeps the scores > T and the first ones == T. br int64 (>= k,): scratch.
    The heap comes back valid (sorted ascending when k <= RANK_SORT_MAX_K). Returns its minimum.
    """
    k = hs.shape[0]
    # search the order keys: c(x) = #scores >= key_score(x) is non-increasing; find the largest x
    # with c(x) >= k. Interpolation on the counts, with a bisection step after two moves of one end.
    # The bracket starts at the least candidate when that already leaves k scores (the usual case:
    # the candidates passed a threshold that k scores beat), else at the least score overall.
    lo = np.int64(order_key(bs[0]))
    hi = lo
    for j in range(n):
        v = np.int64(order_key(bs[j]))
        lo = min(lo, v)
        hi = max(hi, v)
    c_lo = n
    lo_heap = lo
    for j in range(k):
        v = np.int64(order_key(hs[j]))
        c_lo += v >= lo
        lo_heap = min(lo_heap, v)
        hi = max(hi, v)
    if c_lo < k:
        lo = lo_heap
        c_lo = n + k
    c_hi = _count_at_least(hs, bs, n, key_score(hi))
    if c_hi >= k:  # the best score itself is the k-th (ties)
        lo = hi
        c_lo = c_hi
    side = 0  # > 0: lo moved last (that many times in a row), < 0: hi
    while hi - lo > 1 and c_lo > k and c_hi < k - 1:
        frac = 0.5 if abs(side) >= 2 else (c_lo - k + 0.5) / (c_lo - c_hi)
        x = lo + min(max(np.int64(frac * (hi - lo)), np.int64(1)), hi - lo - 1)
        c = _count_at_least(hs, bs, n, key_score(x))
        if c >= k:
            lo = x
            c_lo = c
            side = max(side, 0) + 1
        else:
            hi = x
            c_hi = c
            side = min(side, 0) - 1
    if c_lo == k:  # exactly k scores >= key_score(lo): the k-th best is the least of them
        lo = _least_key_from(hs, bs, n, lo)
    elif c_hi == k - 1 and hi > lo:  # k - 1 scores above key_score(hi): the k-th is the next one down
        lo = _greatest_key_below(hs, bs, n, hi)
    kth = key_score(lo)
    ties = k - _count_greater(hs, bs, n, kth)  # scores == kth to keep
    w = 0
    for j in range(k):  # heap entries move down in place (w <= j)
        s = hs[j]
        tie = s == kth
        take = (s > kth) | (tie & (ties > 0))
        ties -= tie & take
        hs[w] = s
        hr[w] = hr[j]
        w += take
    use_ids = row_ids.shape[0] > 0
    for j in range(n):
        if w == k:
            break
        s = bs[j]
        tie = s == kth
        take = (s > kth) | (tie & (ties > 0))
        ties -= tie & take
        hs[w] = s
        hr[w] = row_ids[bj[j]] if use_ids else row0 + bj[j]
        w += take
    if k <= RANK_SORT_MAX_K:
        _rank_sort_ascending(hs, hr, bs, br)
    else:
        _heapify(hs, hr)
    return hs[0]


@njit(cache=True, nogil=True)
def merge_row(scores, row0, allowed, hs, hr, bs, bj, br, mu, sd, row_ids):
    """Merge one query's scores float32 (b,) into its heap hs float32 / hr int64 (k,).

    Score j belongs to row row_ids[j] if row_ids (int64) is non-empty, else to row0 + j; it is
    skipped where allowed uint8 (b,) is 0. bs float32 / bj int32 / br int64 (buffer_size(k),):
    scratch. mu / sd: the scores' mean and deviation if known (sd < 0: not known).
    """
    k = hs.shape[0]
    b = scores.shape[0]
    flush_at = bs.shape[0] - 2 * LANES  # a compress step and the tail always fit below len(bs)
    thr = hs[0]
    if thr == _NEG_INF and b > flush_at:
        thr = np.float32(block_threshold(scores, allowed, k, 2 * k + 32, mu, sd))
    n = 0
    n_full = b - b % LANES
    for j0 in range(0, n_full, LANES):
        n += compress_above(scores, allowed, j0, thr, bs, bj, n)
        if n > flush_at:
            thr = np.float32(max(thr, reduce_into_heap(hs, hr, bs, bj, br, n, row0, row_ids)))
            n = 0
    for j in range(n_full, b):
        s = scores[j]
        if s > thr and allowed[j]:
            bs[n] = s
            bj[n] = j
            n += 1
    if n > 0:
        reduce_into_heap(hs, hr, bs, bj, br, n, row0, row_ids)


@njit(cache=True, nogil=True)
def _merge_scores_rows(q0, q1, scores, row0, allowed, heap_s, heap_r):
    """merge_scores for queries q0..q1-1 (one parallel task, with its own scratch buffers)."""
    cap = buffer_size(heap_s.shape[1])
    bs = np.empty(cap, dtype=np.float32)
    bj = np.empty(cap, dtype=np.int32)
    br = np.empty(cap, dtype=np.int64)
    no_ids = np.empty(0, dtype=np.int64)
    for i in range(q0, q1):
        srow = np.ascontiguousarray(scores[i])
        merge_row(srow, row0, allowed, heap_s[i], heap_r[i], bs, bj, br, 0.0, -1.0, no_ids)


def merge_scores(scores, row0, allowed, heap_s, heap_r):
    """Push a block of scores into the heaps.

    scores float32 (m, b): query i against rows row0 .. row0+b-1.
    allowed uint8 (b,): 0 marks a row that must not be returned (deleted, or not passing a filter).
    heap_s float32 (m, k), heap_r int64 (m, k): updated in place.
    Up to QUERY_CHUNK queries run on the calling thread: waking the threads costs ~90 us, and a first call
    with few queries then compiles no parallel region (seconds).
    """
    m, b = scores.shape
    if heap_s.shape[1] == 0 or b == 0:
        return
    if not warm.ready("scan"):
        return twins.merge_scores(scores, row0, allowed, heap_s, heap_r)
    allowed = np.ascontiguousarray(allowed)
    if m <= QUERY_CHUNK:
        _merge_scores_rows(0, m, scores, row0, allowed, heap_s, heap_r)
    else:
        _merge_scores_parallel(scores, row0, allowed, heap_s, heap_r)


@njit(cache=True, nogil=True, parallel=True)
def _merge_scores_parallel(scores, row0, allowed, heap_s, heap_r):
    m = scores.shape[0]
    for task in prange((m + QUERY_CHUNK - 1) // QUERY_CHUNK):
        _merge_scores_rows(task * QUERY_CHUNK, min(m, (task + 1) * QUERY_CHUNK), scores, row0, allowed, heap_s, heap_r)


@njit(cache=True, nogil=True)
def _merge_candidate_rows(q0, q1, cand_s, cand_r, heap_s, heap_r):
    """merge_candidates for queries q0..q1-1 (one parallel task, with its own scratch buffers)."""
    c = cand_s.shape[1]
    cap = buffer_size(heap_s.shape[1])
    bs = np.empty(cap, dtype=np.float32)
    bj = np.empty(cap, dtype=np.int32)
    br = np.empty(cap, dtype=np.int64)
    valid = np.empty(c, dtype=np.uint8)
    for i in range(q0, q1):
        ids = np.ascontiguousarray(cand_r[i])
        for j in range(c):
            valid[j] = ids[j] >= 0
        srow = np.ascontiguousarray(cand_s[i])
        merge_row(srow, 0, valid, heap_s[i], heap_r[i], bs, bj, br, 0.0, -1.0, ids)


def merge_candidates(cand_s, cand_r, heap_s, heap_r):
    """Push per-query candidate lists float32/int64 (m, c) into the heaps; rows < 0 are skipped."""
    m, c = cand_s.shape
    if heap_s.shape[1] == 0 or c == 0:
        return
    if not warm.ready("scan"):
        return twins.merge_candidates(cand_s, cand_r, heap_s, heap_r)
    if m <= QUERY_CHUNK:  # as merge_scores
        _merge_candidate_rows(0, m, cand_s, cand_r, heap_s, heap_r)
    else:
        _merge_candidates_parallel(cand_s, cand_r, heap_s, heap_r)


@njit(cache=True, nogil=True, parallel=True)
def _merge_candidates_parallel(cand_s, cand_r, heap_s, heap_r):
    m = cand_s.shape[0]
    for task in prange((m + QUERY_CHUNK - 1) // QUERY_CHUNK):
        _merge_candidate_rows(task * QUERY_CHUNK, min(m, (task + 1) * QUERY_CHUNK), cand_s, cand_r, heap_s, heap_r)


@njit(cache=True, nogil=True)
def _sort_heap_rows(q0, q1, heap_s, heap_r):
    """sort_heaps for rows q0..q1-1."""
    k = heap_s.shape[1]
    s_tmp = np.empty(k, dtype=np.float32)
    keys = np.empty(k, dtype=np.int64)
    keys2 = np.empty(k, dtype=np.int64)
    rows2 = np.empty(k, dtype=np.int64)
    counts = np.empty(256, dtype=np.int64)
    for i in range(q0, q1):
        hs = heap_s[i]
        hr = heap_r[i]
        ascending = True
        for j in range(1, k):
            ascending &= hs[j - 1] <= hs[j]
        if not ascending:
            if k <= RANK_SORT_MAX_K:
                _rank_sort_ascending(hs, hr, s_tmp, rows2)
            else:
                _radix_sort_descending(hs, hr, keys, keys2, rows2, counts)
                continue
        for j in range(k // 2):  # ascending -> best first
            ts = hs[j]
            tr = hr[j]
            hs[j] = hs[k - 1 - j]
            hr[j] = hr[k - 1 - j]
            hs[k - 1 - j] = ts
            hr[k - 1 - j] = tr


def sort_heaps(heap_s, heap_r):
    """Sort every heap row in place, best (largest score) first; empty slots go last."""
    m = heap_s.shape[0]
    if heap_s.shape[1] == 0:
        return
    if not warm.ready("scan"):
        return twins.sort_heaps(heap_s, heap_r)
    if m <= QUERY_CHUNK:  # as merge_scores
        _sort_heap_rows(0, m, heap_s, heap_r)
    else:
        _sort_heaps_parallel(heap_s, heap_r)


@njit(cache=True, nogil=True, parallel=True)
def _sort_heaps_parallel(heap_s, heap_r):
    m = heap_s.shape[0]
    for task in prange((m + QUERY_CHUNK - 1) // QUERY_CHUNK):
        _sort_heap_rows(task * QUERY_CHUNK, min(m, (task + 1) * QUERY_CHUNK), heap_s, heap_r)
