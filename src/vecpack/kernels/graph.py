"""Vamana proximity graph kernels: beam search, robust pruning, batch-parallel insertion, delete repair.

The graph is an int32 array (n, R): row p lists p's out-neighbours first,
padded with -1. Construction (Subramanya et al., DiskANN) and its lock-free
parallel form (prefix-doubling batches, as in ParlayANN):

1. a batch of new points searches the current graph in parallel (the graph
   is read-only meanwhile) and prunes the rows it expanded on the way to R
   out-neighbours with the alpha rule (``robust_prune``);
2. reverse edges are grouped by target; each target (one thread each)
   appends its new in-neighbours, or re-prunes when the row would overflow.

Searches score rows with a codec's probe (``kernels.probe.score_row``) over
compressed codes (construction's searches over 8-bit codes of the vectors);
pruning uses exact squared L2 on float32 vectors.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from vecpack.kernels.probe import bytes_read, kind_token, score_row
from vecpack.kernels.simd import prefetch_row
from vecpack.kernels.topk import QUERY_CHUNK

_NO_ALLOW = np.zeros(0, dtype=np.uint8)


# -- visited set: open addressing over int32 rows (-1 = empty slot) ------------------------------
@njit(cache=True, nogil=True)
def _new_visited(expected):
    size = 1024
    while size < 2 * expected:
        size *= 2
    return np.full(size, -1, dtype=np.int32)


@njit(cache=True, nogil=True, inline="always")
def _visit(table, row):
    """Add row to the visited set; True if it was not there."""
    mask = table.shape[0] - 1
    h = (row * 0x9E3779B1) & mask
    while True:
        v = table[h]
        if v == row:
            return False
        if v < 0:
            table[h] = row
            return True
        h = (h + 1) & mask


@njit(cache=True, nogil=True)
def _grown(table):
    bigger = np.full(2 * table.shape[0], -1, dtype=np.int32)
    for v in table:
        if v >= 0:
            _visit(bigger, v)
    return bigger


# -- beam search ---------------------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _pool_insert(pool_s, pool_r, done, size, s, r):
    """Insert (s, r) into the pool sorted by descending score; returns (new size, position)."""
    cap = pool_s.shape[0]
    pos = size
    while pos > 0 and pool_s[pos - 1] < s:
        pos -= 1
    if pos >= cap:
        return size, cap
    for i in range(min(size, cap - 1), pos, -1):
        pool_s[i] = pool_s[i - 1]
        pool_r[i] = pool_r[i - 1]
        done[i] = done[i - 1]
    pool_s[pos] = s
    pool_r[pos] = r
    done[pos] = False
    return min(size + 1, cap), pos


@njit(cache=True, nogil=True, fastmath=True)
def beam_search(kind_tok, qf, qw, codes, graph, entries, allow, pool_s, pool_r, exp_s, exp_r):
    """Best-first search from ``entries``; the L = len(pool_s) best rows found go to pool_s/pool_r, best first.

    Expands the best unexpanded pool row until every pool row is expanded.
    Scores come from ``score_row(kind_tok, qf, qw, codes[row])``. The first len(exp_r)
    expanded rows and their scores are recorded in exp_r / exp_s (construction prunes
    from them: they include the far rows on the path, which give long-range edges).
    A non-empty ``allow`` (uint8 by row) restricts the search to allowed rows: entries
    must be allowed, and neighbours that are not are replaced by their allowed neighbours
    (two hops, as ACORN-1 does) until ``degree`` new rows are found, so the walk crosses rows a
    filter rejects without scoring them. A rejected row is marked visited only once its
    neighbours are taken.
    Returns (pool size, number of expanded rows recorded).
    """
    cap = pool_s.shape[0]
    degree = graph.shape[1]
    filtered = allow.shape[0] > 0
    done = np.zeros(cap, dtype=np.bool_)
    fresh = np.empty(3 * degree if filtered else degree, dtype=np.int64)
    hop = np.empty(degree, dtype=np.int64)
    visited = _new_visited(cap * degree + entries.shape[0])
    n_read = bytes_read(kind_tok, qw, codes.shape[1] * codes.itemsize)
    n_visited = 0
    size = 0
    for e in entries:
        if _visit(visited, e):
            n_visited += 1
            size, _ = _pool_insert(pool_s, pool_r, done, size, score_row(kind_tok, qf, qw, codes[e]), e)
    cur = 0
    n_exp = 0
    while cur < size:
        node = pool_r[cur]
        done[cur] = True
        if n_exp < exp_r.shape[0]:
            exp_r[n_exp] = node
            exp_s[n_exp] = pool_s[cur]
            n_exp += 1
        first_new = cur + 1
        n_new = 0
        n_hop = 0
        for t in range(degree):  # collect unvisited neighbours and start loading their codes
            nb = np.int64(graph[node, t])
            if nb < 0:
                break
            if filtered and not allow[nb]:
                hop[n_hop] = nb
                n_hop += 1
            elif _visit(visited, nb):
                n_visited += 1
                fresh[n_new] = nb
                n_new += 1
                prefetch_row(codes, nb, n_read)
        for h in range(n_hop):  # ACORN-1: past rejected neighbours to theirs, until degree rows are found
            if n_new >= degree:
                break
            nb = hop[h]
            if not _visit(visited, nb):
                continue
            n_visited += 1
            for u in range(degree):
                nb2 = np.int64(graph[nb, u])
                if nb2 < 0:
                    break
                if allow[nb2] and _visit(visited, nb2):
                    n_visited += 1
                    fresh[n_new] = nb2
                    n_new += 1
                    prefetch_row(codes, nb2, n_read)
            while 2 * n_visited > visited.shape[0]:
                visited = _grown(visited)
        while 2 * n_visited > visited.shape[0]:  # keep the table at most half full: probes stay short
            visited = _grown(visited)
        for t in range(n_new):
            nb = fresh[t]
            s = score_row(kind_tok, qf, qw, codes[nb])
            if size == cap and s <= pool_s[cap - 1]:
                continue
            size, pos = _pool_insert(pool_s, pool_r, done, size, s, nb)
            first_new = min(first_new, pos)
        cur = first_new
        while cur < size and done[cur]:
            cur += 1
    return size, n_exp


@njit(cache=True, nogil=True)
def _search_queries(i0, i1, kind_tok, qf, qw, codes, graph, entries, allowed, filtered, out_s, out_r, pool_s, pool_r):
    """graph_search for queries i0 .. i1-1, with scratch pools of length ef."""
    k_out = out_s.shape[1]
    no_s = np.empty(0, dtype=np.float32)
    no_r = np.empty(0, dtype=np.int64)
    allow = allowed if filtered else allowed[:0]
    for i in range(i0, i1):
        size, _ = beam_search(kind_tok, qf[i], qw[i], codes, graph, entries, allow, pool_s, pool_r, no_s, no_r)
        c = 0
        for t in range(size):
            if c == k_out:
                break
            r = pool_r[t]
            if allowed[r]:
                out_s[i, c] = pool_s[t]
                out_r[i, c] = r
                c += 1


@njit(cache=True, nogil=True, parallel=True)
def _search_parallel(kind_tok, qf, qw, codes, graph, entries, ef, allowed, filtered, out_s, out_r):
    m = qf.shape[0]
    for task in prange((m + QUERY_CHUNK - 1) // QUERY_CHUNK):
        i0 = task * QUERY_CHUNK
        pool_s = np.empty(ef, dtype=np.float32)
        pool_r = np.empty(ef, dtype=np.int64)
        _search_queries(i0, min(m, i0 + QUERY_CHUNK), kind_tok, qf, qw, codes, graph, entries, allowed, filtered,
                        out_s, out_r, pool_s, pool_r)


def graph_search(kind, qf, qw, codes, graph, entries, ef, allowed, k_out, filtered=False):
    """Per query, the k_out best allowed rows of an ef-wide beam search: scores float32 / rows int64 (m, k_out).

    Rows with allowed == 0 (deleted, or not passing a filter) are traversed (they keep the graph
    connected) but never returned.
    With ``filtered`` the beam holds allowed rows only and crosses the others by two hops
    (``beam_search``'s ``allow``); every entry must then be allowed.
    Missing results are (-inf, -1). A batch runs in parallel; a few queries skip the thread launch.
    """
    m = qf.shape[0]
    tok = kind_token(kind)
    out_s = np.full((m, k_out), -np.inf, dtype=np.float32)
    out_r = np.full((m, k_out), -1, dtype=np.int64)
    if m <= QUERY_CHUNK // 4:
        pool_s = np.empty(ef, dtype=np.float32)
        pool_r = np.empty(ef, dtype=np.int64)
        _search_queries(0, m, tok, qf, qw, codes, graph, entries, allowed, filtered, out_s, out_r, pool_s, pool_r)
    else:
        _search_parallel(tok, qf, qw, codes, graph, entries, ef, allowed, filtered, out_s, out_r)
    return out_s, out_r


# -- construction --------------------------------------------------------------------------------
@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _sq_l2(x, a, b):
    acc = np.float32(0.0)
    for j in range(x.shape[1]):
        diff = x[a, j] - x[b, j]
        acc += diff * diff
    return acc


@njit(cache=True, nogil=True, fastmath=True)
def robust_prune(x, p, cand_r, cand_d, n_cand, alpha2, out):
    """Vamana's alpha rule: out-neighbours of p from candidates sorted by ascending squared distance.

    A candidate c is dropped if some kept r "covers" it: a^2 * |r - c|^2 <= |p - c|^2.
    Two passes, as in DiskANN: a = 1 first (the diverse, relative-neighbourhood edges),
    then a = alpha over what is left while the row has room. A single pass at alpha
    spends the row on near neighbours before the far, diverse ones are reached: at
    200k synthetic rows that cost recall@10 at ef 32 0.968 -> 0.707 for alpha 1.2.
    Writes up to len(out) rows to ``out``; returns how many.
    """
    degree = out.shape[0]
    kept = np.zeros(n_cand, dtype=np.bool_)
    c = 0
    for level in range(2):
        a2 = np.float32(1.0) if level == 0 else alpha2
        if level == 1 and a2 <= 1.0:
            break
        for t in range(n_cand):
            if c == degree:
                return c
            r = cand_r[t]
            if r == p or kept[t]:
                continue
            keep = True
            for u in range(c):
                if out[u] == r or a2 * _sq_l2(x, out[u], r) <= cand_d[t]:
                    keep = False
                    break
            if keep:
                kept[t] = True
                out[c] = r
                c += 1
    return c


@njit(cache=True, nogil=True, parallel=True)
def insert_batch(x, kind_tok, qf, qw, codes, graph, entries, batch, ef, alpha2, degree):
    """Search the graph for each row of ``batch`` and prune its pool: new out-rows int32 (len(batch), degree).

    The search scores rows with the probe (kind_tok, qf[t], qw[t]) of batch row t over ``codes``
    (8-bit codes of x: a quarter of float32's memory traffic); pruning ranks the expanded rows
    by exact squared L2 on x.
    """
    new_out = np.full((batch.shape[0], degree), -1, dtype=np.int32)
    for t in prange(batch.shape[0]):
        p = batch[t]
        pool_s = np.empty(ef, dtype=np.float32)
        pool_r = np.empty(ef, dtype=np.int64)
        exp_s = np.empty(2 * ef, dtype=np.float32)
        exp_r = np.empty(2 * ef, dtype=np.int64)
        _, n = beam_search(kind_tok, qf[t], qw[t], codes, graph, entries, _NO_ALLOW, pool_s, pool_r, exp_s, exp_r)
        dist = np.empty(n, dtype=np.float32)
        for i in range(n):
            dist[i] = _sq_l2(x, p, exp_r[i])
        order = np.argsort(dist)
        out = np.empty(degree, dtype=np.int64)
        c = robust_prune(x, p, exp_r[:n][order], dist[order], n, alpha2, out)
        new_out[t, :c] = out[:c]
    return new_out


@njit(cache=True, nogil=True, fastmath=True)
def _prune_row(x, p, cand, alpha2, row):
    """Re-prune row p of the graph (``row``) from the candidate rows ``cand`` (int64, unique, no p)."""
    dist = np.empty(cand.shape[0], dtype=np.float32)
    for t in range(cand.shape[0]):
        dist[t] = _sq_l2(x, p, cand[t])
    order = np.argsort(dist)
    out = np.empty(row.shape[0], dtype=np.int64)
    c = robust_prune(x, p, cand[order], dist[order], cand.shape[0], alpha2, out)
    row[:] = -1
    row[:c] = out[:c]


@njit(cache=True, nogil=True, parallel=True)
def add_reverse_edges(x, graph, batch, new_out, alpha2):
    """Write the batch's rows, then add each edge p -> j as j -> p.

    A row that would overflow the graph's width is re-pruned to new_out's width (the
    target degree): a graph wider than the degree ("slack") makes those re-prunes rarer.
    """
    degree = new_out.shape[1]
    width = graph.shape[1]
    for t in range(batch.shape[0]):
        graph[batch[t], :degree] = new_out[t]
    flat = new_out.ravel()
    valid = np.flatnonzero(flat >= 0)
    targets = flat[valid].astype(np.int64)
    sources = batch[valid // degree]
    order = np.argsort(targets, kind="mergesort")
    targets = targets[order]
    sources = sources[order]
    starts = np.flatnonzero(np.diff(targets) != 0) + 1
    bounds = np.empty(starts.shape[0] + 2, dtype=np.int64)
    bounds[0] = 0
    bounds[1:-1] = starts
    bounds[-1] = targets.shape[0]
    for g in prange(bounds.shape[0] - 1):
        a, b = bounds[g], bounds[g + 1]
        if a == b:
            continue
        j = targets[a]
        row = graph[j]
        deg = 0
        while deg < width and row[deg] >= 0:
            deg += 1
        cand = np.empty(deg + b - a, dtype=np.int64)
        cand[:deg] = row[:deg]
        c = deg
        for u in range(a, b):
            s = sources[u]
            fresh = True
            for v in range(deg):
                fresh &= row[v] != s
            if fresh:
                cand[c] = s
                c += 1
        if c <= width:
            row[deg:c] = cand[deg:c]
        else:
            row[:] = -1
            _prune_row(x, j, cand[:c], alpha2, row[:degree])


@njit(cache=True, nogil=True, parallel=True)
def trim_rows(x, graph, alpha2, degree):
    """The graph cut to ``degree`` columns (int32 (n, degree)), re-pruning rows that hold more."""
    n, width = graph.shape
    out = np.full((n, degree), -1, dtype=np.int32)
    for p in prange(n):
        row = graph[p]
        deg = 0
        while deg < width and row[deg] >= 0:
            deg += 1
        if deg <= degree:
            out[p, :deg] = row[:deg]
        else:
            _prune_row(x, p, row[:deg].astype(np.int64), alpha2, out[p])
    return out


@njit(cache=True, nogil=True, parallel=True)
def repair_deleted(x, graph, live, alpha2):
    """A new graph without edges to deleted rows (FreshDiskANN's consolidation).

    A live row that pointed at deleted rows is re-pruned from its live neighbours
    plus the live neighbours of its deleted ones; deleted rows get empty rows.
    """
    n, degree = graph.shape
    out = np.full((n, degree), -1, dtype=np.int32)
    for p in prange(n):
        if not live[p]:
            continue
        row = graph[p]
        n_dead = 0
        deg = 0
        while deg < degree and row[deg] >= 0:
            n_dead += live[row[deg]] == 0
            deg += 1
        if n_dead == 0:
            out[p] = row
            continue
        cand = np.empty(deg * (degree + 1), dtype=np.int64)
        c = 0
        for t in range(deg):
            nb = row[t]
            if live[nb]:
                cand[c] = nb
                c += 1
            else:
                for u in range(degree):
                    nb2 = graph[nb, u]
                    if nb2 < 0:
                        break
                    if live[nb2] and nb2 != p:
                        cand[c] = nb2
                        c += 1
        unique = np.unique(cand[:c])
        _prune_row(x, p, unique, alpha2, out[p])
    return out
