"""RaBitQ kernels: sign and extended codes (with the rescale search), query bit planes, flat scans.

Code space has D = 64 W dimensions (the input zero-padded, then rotated). A code
row is uint64 words (viewed as float32 pairs for the factors, low half first):

* words [0, W): the sign plane, bit B-1 of the level x_j in 0 .. 2^B - 1;
* words [W (1 + p), W (2 + p)), p = 0 .. B-2 (extended codes only): bit p of x_j;
* then the factor slots (float32): 0 F_add, 1 F_rescale, 2 F_error, 3 S (decode scale),
  and for extended codes 4 F_rescale_ex, 5 F_error_ex (two words, or three).

The code's direction is y = x - (2^B - 1) / 2 (signs times e_j + 1/2). For a query
quantised as q' ~ lo + delta * u (u integer levels), every estimate is

    score = F_add + F_r * (lo * (2 sum_j x_j - D M) + delta * (2 <x, u> - M sum_j u_j)) + g

with M = 2^b - 1 for the b planes used (b = 1: the sign plane alone, F_r = F_rescale; b = B:
all planes, F_r = F_rescale_ex) and g a per-query constant. ``2 <x, u>`` and the sums are
integers, computed exactly from popcounts. The estimate's error bound is F_error * ||q - c||.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from vecpack.kernels.kinds import RABITQ_EX
from vecpack.kernels.simd import LANES, _i32_as_f32, compress_above, popcount64, prefer_512_bit_vectors
from vecpack.kernels.topk import QUERY_CHUNK, block_threshold, buffer_size, merge_row

ROW_CHUNK = 8192  # rows per chunk of a flat scan (word-major sign codes, per-row factors, scores)
ROW_TASK = 64  # rows per parallel encoding task (scratch allocated once per task)
EPS0 = 1.9  # the error bound in standard deviations of the error (at most): ~94% of unrelated pairs within
RESCALE_GRID = 64  # coarse grid of rescale factors before the exact sweep
RESCALE_BRACKET = 3  # grid steps swept exactly on each side of the best grid point
RESCALE_CLIP = 10  # the search goes past the largest coordinate's top level by this many levels

SLOT_ADD, SLOT_RESCALE, SLOT_ERROR, SLOT_SCALE, SLOT_RESCALE_EX, SLOT_ERROR_EX = range(6)
QF_LO, QF_DELTA, QF_USUM, QF_G, QF_PLANES, QF_GERR = range(6)  # per-query parameters (``prepare_queries``)


FACTOR_WORDS = (2, 3)  # uint64 words of factors in a 1-bit / an extended code row


@njit(cache=True, nogil=True)
def factor_words(n_bits):
    """uint64 words of factors after the bit planes of a code with n_bits planes (FACTOR_WORDS)."""
    return FACTOR_WORDS[0] if n_bits == 1 else FACTOR_WORDS[1]


@njit(cache=True, nogil=True, fastmath=True)
def _cosine(a, e, d):
    """<e + 1/2, a> and ||e + 1/2||^2 (float64) over the first d entries (a float32, e int64)."""
    num = 0.0
    den = 0.0
    for j in range(d):
        y = e[j] + 0.5
        num += y * a[j]
        den += y * y
    return num, den


@njit(cache=True, nogil=True, fastmath=True)
def _grid_cosine(t, a, top):
    """cos(a, y) for y_j = min(floor(t a_j), top) + 1/2, in float32 (a float32 >= 0, t > 0): the coarse grid."""
    t = np.float32(t)
    top = np.int32(top)
    num = np.float32(0.0)
    den = np.float32(0.0)
    for j in range(a.shape[0]):
        y = np.float32(min(np.int32(t * a[j]), top)) + np.float32(0.5)  # truncation is floor here
        num += y * a[j]
        den += y * y
    return num / np.sqrt(den)


@njit(cache=True, nogil=True, fastmath=True)
def _levels_at(t, a, top, e):
    """e_j = min(floor(t a_j), top) for every j."""
    for j in range(a.shape[0]):
        e[j] = min(np.int64(np.floor(t * a[j])), top)


@njit(cache=True, nogil=True)
def _sorted_order(ts, n, t_lo, t_up):
    """Positions int64 (n,) that sort ts[:n] (values in [t_lo, t_up], spread fairly evenly) ascending.

    A bucket pass (n / 2 buckets) then insertion sort, which only undoes the few inversions left
    inside buckets: linear time, where numba's sorts cost ~50 ns per element.
    """
    n_buckets = max(n // 2, 1)
    scale = n_buckets / (t_up - t_lo) if t_up > t_lo else 0.0
    bucket = np.empty(n, dtype=np.int64)
    starts = np.zeros(n_buckets + 1, dtype=np.int64)
    for i in range(n):
        b = min(max(np.int64((ts[i] - t_lo) * scale), 0), n_buckets - 1)
        bucket[i] = b
        starts[b + 1] += 1
    for b in range(n_buckets):
        starts[b + 1] += starts[b]
    order = np.empty(n, dtype=np.int64)
    for i in range(n):
        order[starts[bucket[i]]] = i
        starts[bucket[i]] += 1
    for i in range(1, n):
        v = order[i]
        k = i - 1
        while k >= 0 and ts[order[k]] > ts[v]:
            order[k + 1] = order[k]
            k -= 1
        order[k + 1] = v
    return order


@njit(cache=True, nogil=True)
def best_rescale(a, top, e, ts, js):
    """Levels e int64 (D,) in 0..top of the grid point closest in angle to a float32 (D,) >= 0.

    Maximises cos(a, e + 1/2) over e_j = min(floor(t a_j), top), t > 0 (extended RaBitQ's
    rescale search): a coarse grid of RESCALE_GRID values of t brackets the best one, then
    an exact sweep over every t in the bracket where some e_j steps up (the cosine is
    constant in between). ts float64 / js int64 (>= D * top,): scratch. Returns the cosine.
    """
    d = a.shape[0]
    a_max = np.float32(0.0)
    for j in range(d):
        a_max = max(a_max, a[j])
    if a_max <= 0:
        e[:] = 0
        return 0.0
    t_hi = (top + RESCALE_CLIP) / np.float64(a_max)
    best_g = 1
    best = -1.0
    for g in range(1, RESCALE_GRID + 1):
        c = _grid_cosine(t_hi * g / RESCALE_GRID, a, top)
        if c > best:
            best = c
            best_g = g
    t_lo = t_hi * max(best_g - RESCALE_BRACKET, 0) / RESCALE_GRID
    t_up = t_hi * min(best_g + RESCALE_BRACKET, RESCALE_GRID) / RESCALE_GRID
    _levels_at(t_lo, a, top, e)
    num, den = _cosine(a, e, d)
    best = num / np.sqrt(den)
    t_best = t_lo
    n = 0
    for j in range(d):  # every step of e_j in (t_lo, t_up]
        if a[j] <= 0:
            continue
        level = e[j] + 1
        while level <= top and level / np.float64(a[j]) <= t_up:
            ts[n] = level / np.float64(a[j])
            js[n] = j
            n += 1
            level += 1
    order = _sorted_order(ts, n, t_lo, t_up)
    for i in range(n):
        j = js[order[i]]
        e[j] += 1
        den += 2.0 * e[j]  # (e + 1/2)^2 - (e - 1/2)^2
        num += a[j]
        t = ts[order[i]]
        t_next = ts[order[i + 1]] if i + 1 < n else t_up
        if t_next > t and num / np.sqrt(den) > best:  # only states some t reaches
            best = num / np.sqrt(den)
            t_best = 0.5 * (t + t_next)
    _levels_at(t_best, a, top, e)
    return best


@njit(cache=True, nogil=True)
def _encode_rows(i0, i1, o, norms, f_add, scale_k, n_bits, words, floats):
    """encode for rows i0..i1-1 (one parallel task with its own scratch)."""
    d = o.shape[1]
    n_words = d // 64
    ex = n_bits - 1
    top_ex = (1 << ex) - 1
    fbase = 2 * n_words * n_bits
    sq_d1 = np.sqrt(np.float64(d - 1))
    a = np.empty(d, dtype=np.float32)
    e = np.zeros(d, dtype=np.int64)
    ts = np.empty(max(d * top_ex, 1), dtype=np.float64)
    js = np.empty(max(d * top_ex, 1), dtype=np.int64)
    for i in range(i0, i1):
        row = o[i]
        s1 = 0.0
        for j in range(d):
            a[j] = abs(row[j])
            s1 += a[j]
        for w in range(n_words * n_bits):
            words[i, w] = 0
        for w in range(n_words):
            word = np.uint64(0)
            for b in range(64):
                word |= np.uint64(row[64 * w + b] > 0) << np.uint64(b)
            words[i, w] = word
        for s in range(2 * (words.shape[1] - n_words * n_bits)):
            floats[i, fbase + s] = 0.0
        floats[i, fbase + SLOT_ADD] = f_add[i]
        norm = np.float64(norms[i])
        if norm <= 0 or s1 <= 0:  # x at the centre: every estimate is g alone
            continue
        cos1 = min(s1 / np.sqrt(np.float64(d)), 1.0)
        floats[i, fbase + SLOT_RESCALE] = scale_k * norm / s1
        floats[i, fbase + SLOT_ERROR] = scale_k * norm * EPS0 * np.sqrt(1.0 - cos1 * cos1) / (cos1 * sq_d1)
        if n_bits == 1:
            floats[i, fbase + SLOT_SCALE] = 2.0 * norm * s1 / d  # norm * <y, o> / ||y||^2, y = +-1/2
            continue
        best_rescale(a, top_ex, e, ts, js)
        ip_y = 0.0
        yy = 0.0
        for j in range(d):
            y = e[j] + 0.5
            ip_y += y * a[j]
            yy += y * y
            level = (e[j] + (top_ex + 1)) if row[j] > 0 else (top_ex - e[j])
            for p in range(ex):
                if (level >> p) & 1:
                    words[i, n_words * (1 + p) + j // 64] |= np.uint64(1) << np.uint64(j % 64)
        cos_b = min(ip_y / np.sqrt(yy), 1.0)
        floats[i, fbase + SLOT_SCALE] = norm * ip_y / yy
        floats[i, fbase + SLOT_RESCALE_EX] = scale_k * norm / (2.0 * ip_y)
        floats[i, fbase + SLOT_ERROR_EX] = scale_k * norm * EPS0 * np.sqrt(1.0 - cos_b * cos_b) / (cos_b * sq_d1)


@njit(cache=True, nogil=True, parallel=True)
def rabitq_encode(o, norms, f_add, scale_k, n_bits, words, floats):
    """Write RaBitQ codes of rotated unit residuals into ``words`` (in place).

    o float32 (n, D): rows (x - c) rotated and divided by norms float32 (n,) (zero rows where the
    norm is 0); f_add float32 (n,): F_add per row; scale_k: 1 (ip) or 2 (l2), the weight of
    ||x - c|| <o, q - c> in the score. words uint64 (n, L) and floats float32 (n, 2L) are two
    views of the same code rows (layout in the module docstring).
    """
    n = o.shape[0]
    for task in prange((n + ROW_TASK - 1) // ROW_TASK):
        i0 = task * ROW_TASK
        _encode_rows(i0, min(n, i0 + ROW_TASK), o, norms, f_add, scale_k, n_bits, words, floats)


@njit(cache=True, nogil=True, parallel=True)
def rabitq_decode(words, floats, n_bits):
    """Code-space reconstructions float32 (n, D): S * (x - (2^B - 1) / 2) per row."""
    n = words.shape[0]
    n_words = (words.shape[1] - factor_words(n_bits)) // n_bits
    d = 64 * n_words
    half = np.float32(((1 << n_bits) - 1) / 2.0)
    out = np.empty((n, d), dtype=np.float32)
    for i in prange(n):
        scale = floats[i, 2 * n_words * n_bits + SLOT_SCALE]
        for j in range(d):
            w = j // 64
            bit = np.uint64(j % 64)
            level = np.int64((words[i, w] >> bit) & np.uint64(1)) << (n_bits - 1)
            for p in range(n_bits - 1):
                level |= np.int64((words[i, n_words * (1 + p) + w] >> bit) & np.uint64(1)) << p
            out[i, j] = scale * (np.float32(level) - half)
    return out


@njit(cache=True, nogil=True)
def _query_rows(q0, q1, qr, c_rot, c_sq, l2, n_planes, planes, qf, bits_token):
    """prepare_queries for rows q0..q1-1."""
    d = qr.shape[1]
    n_words = planes.shape[1]
    n_bits = len(bits_token)
    top = np.float32(2**n_bits - 1)
    levels = np.zeros(d, dtype=np.uint64)
    for i in range(q0, q1):
        row = qr[i]
        low = row[0]
        high = row[0]
        sq = 0.0
        dot_c = 0.0
        for j in range(d):
            low = min(low, row[j])
            high = max(high, row[j])
            sq += row[j] * row[j]
            dot_c += row[j] * c_rot[j]
        step = (high - low) / top
        if not step > 0:
            step = np.float32(1.0)
        total = 0
        for j in range(d):
            u = min(np.rint((row[j] - low) / step), top)
            levels[j] = np.uint64(u)
            total += np.int64(u)
        for w in range(n_words):
            for p in range(n_bits):
                word = np.uint64(0)
                for b in range(64):
                    word |= ((levels[64 * w + b] >> np.uint64(p)) & np.uint64(1)) << np.uint64(b)
                planes[i, w, p] = word
        qf[i, QF_LO] = low
        qf[i, QF_DELTA] = step
        qf[i, QF_USUM] = total
        qf[i, QF_G] = -sq if l2 else dot_c + c_sq
        qf[i, QF_PLANES] = n_planes
        qf[i, QF_GERR] = np.sqrt(sq)


@njit(cache=True, nogil=True, parallel=True)
def prepare_queries(qr, c_rot, c_sq, l2, n_planes, bits_token):
    """Bit planes and scalars of rotated query residuals qr = P^T (q - c) float32 (m, D).

    Levels u_j = rint((q_j - lo) / delta) in 0 .. 2^nbits - 1 (nbits = len(bits_token)), lo = min_j q_j,
    delta = (max_j q_j - lo) / (2^nbits - 1) (1 if that is 0). c_rot float32 (D,): P^T c; c_sq = ||c||^2;
    l2: the metric is l2 (else ip); n_planes: the code's bit planes B.
    Returns planes uint64 (m, W, nbits) (bit b of [i, w, p] is bit p of u[i, 64 w + b]) and
    qf float32 (m, 6) = [lo, delta, sum_j u_j (exact: below 2^24), g, B, ||q - c||] with
    g = -||q - c||^2 (l2) or <q, c> (ip): the probe parameters of kinds RABITQ / RABITQ_EX.
    """
    m = qr.shape[0]
    planes = np.zeros((m, qr.shape[1] // 64, len(bits_token)), dtype=np.uint64)
    qf = np.empty((m, 6), dtype=np.float32)
    if m <= QUERY_CHUNK:  # one task: skip the parallel region (waking the threads costs ~90 us)
        _query_rows(0, m, qr, c_rot, c_sq, l2, n_planes, planes, qf, bits_token)
        return planes, qf
    for task in prange((m + QUERY_CHUNK - 1) // QUERY_CHUNK):
        q0 = task * QUERY_CHUNK
        _query_rows(q0, min(m, q0 + QUERY_CHUNK), qr, c_rot, c_sq, l2, n_planes, planes, qf, bits_token)
    return planes, qf


@njit(cache=True, nogil=True, inline="always")
def _factor_base(kind_tok, row_token):
    """Float index of F_add within a code row: a compile-time constant."""
    return 2 * (len(row_token) - factor_words(2 if len(kind_tok) == RABITQ_EX else 1))


@njit(cache=True, nogil=True)
def _load_chunk(words, floats, b, codes_t, ax, fa, fr, fe, kind_tok, words_token, row_token):
    """Sign words of b code rows into word-major codes_t uint64 (W, >= b); per row ax = 2 popcount - D
    and the factors F_add, F_rescale, and for extended codes F_error (float32 each).

    words uint64 / floats float32: the b rows flattened (L = len(row_token) words per row). Every
    offset is a compile-time constant, so LLVM can load short rows (L <= 8) with wide loads and
    shuffles (measured 1.7x faster than runtime offsets).
    """
    n_words = len(words_token)
    row = len(row_token)
    fbase = _factor_base(kind_tok, row_token)
    for r in range(b):
        for w in range(n_words):
            codes_t[w, r] = words[r * row + w]
        fa[r] = floats[2 * r * row + fbase + SLOT_ADD]
        fr[r] = floats[2 * r * row + fbase + SLOT_RESCALE]
    if len(kind_tok) == RABITQ_EX:
        for r in range(b):
            fe[r] = floats[2 * r * row + fbase + SLOT_ERROR]
    _popcounts(codes_t, b, ax, words_token)


@njit(cache=True, nogil=True, fastmath=True)
def _popcounts(codes_t, b, ax, words_token):
    """ax[:b] = 2 popcount - D (float32) of the word-major codes codes_t uint64 (W, >= b): a vectorised pass."""
    prefer_512_bit_vectors()
    n_words = len(words_token)
    for r in range(b):
        c = 0
        for w in range(n_words):
            c += popcount64(codes_t[w, r])
        ax[r] = np.float32(2 * c - 64 * n_words)


@njit(cache=True, nogil=True, fastmath=True)
def score_chunk(codes_t, b, plane, qf, ax, fa, fr, out, words_token, bits_token):
    """1-bit estimates float32 out[:b] of one query against b word-major sign codes codes_t uint64 (W, >= b).

    plane uint64 (W, nbits) and qf float32 (6,): the query (``prepare_queries``);
    out[r] = fa[r] + fr[r] * (lo * ax[r] + delta * (2 <x_r, u> - sum u)) + g.
    Returns the sum and the sum of squares of the estimates (for a first threshold guess).
    """
    prefer_512_bit_vectors()
    n_words = len(words_token)
    n_bits = len(bits_token)
    lo, delta, usum, g = qf[QF_LO], qf[QF_DELTA], qf[QF_USUM], qf[QF_G]
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    for r in range(b):
        acc = 0
        for p in range(n_bits):
            acc_p = 0
            for w in range(n_words):
                acc_p += popcount64(codes_t[w, r] & plane[w, p])
            acc += acc_p << p
        s = fa[r] + fr[r] * (lo * ax[r] + delta * (np.float32(2 * acc) - usum)) + g
        out[r] = s
        s1 += s
        s2 += s * s
    return s1, s2


@njit(cache=True, nogil=True, fastmath=True)
def score_direct(words, floats, b, plane, qf, out, kind_tok, words_token, bits_token, row_token):
    """score_chunk reading b code rows in place (one query: no transposition).

    words uint64 / floats float32: the rows flattened, L = len(row_token) words per row; constant
    offsets again (a runtime row or factor offset makes this loop 3x slower).
    """
    prefer_512_bit_vectors()
    n_words = len(words_token)
    n_bits = len(bits_token)
    row = len(row_token)
    fbase = _factor_base(kind_tok, row_token)
    lo, delta, usum, g = qf[QF_LO], qf[QF_DELTA], qf[QF_USUM], qf[QF_G]
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    for r in range(b):
        base = r * row
        acc = 0
        for p in range(n_bits):
            acc_p = 0
            for w in range(n_words):
                acc_p += popcount64(words[base + w] & plane[w, p])
            acc += acc_p << p
        ones = 0
        for w in range(n_words):
            ones += popcount64(words[base + w])
        ax = np.float32(2 * ones - 64 * n_words)
        fa = floats[2 * base + fbase + SLOT_ADD]
        fr = floats[2 * base + fbase + SLOT_RESCALE]
        s = fa + fr * (lo * ax + delta * (np.float32(2 * acc) - usum)) + g
        out[r] = s
        s1 += s
        s2 += s * s
    return s1, s2


@njit(cache=True, nogil=True)
def _select(values, allowed, thr, out_s, out_j):
    """Positions int32 out_j[:n] (and values out_s) of the allowed values float32 (b,) > thr; returns n.

    out_s float32 / out_j int32: length >= b + LANES.
    """
    b = values.shape[0]
    n = 0
    n_full = b - b % LANES
    for j0 in range(0, n_full, LANES):
        n += compress_above(values, allowed, j0, thr, out_s, out_j, n)
    for j in range(n_full, b):
        if values[j] > thr and allowed[j]:
            out_s[n] = values[j]
            out_j[n] = j
            n += 1
    return n


@njit(cache=True, nogil=True, fastmath=True)
def _upper(est, fe, gerr, upper):
    """upper = est + fe * gerr (float32 (b,) each): the 1-bit estimates' upper bounds."""
    for r in range(est.shape[0]):
        upper[r] = est[r] + fe[r] * gerr


@njit(cache=True, nogil=True)
def _refine(est, s1, s2, fe, allowed, words, c0, row0, qf, qf_full, qw_full, kind_tok, hs, hr, scratch):
    """Second stage of an extended scan, one query and one chunk of b rows: full estimates where needed.

    est float32 (b,): the rows' 1-bit estimates (s1, s2: their sum and sum of squares); fe (b,): their
    F_error. A row gets the full estimate score_rabitq_row(kind_tok, qf_full, qw_full, words[c0 + j]), merged
    into the heap hs / hr, when its upper bound est + fe * ||q - c|| beats the heap minimum. While the
    heap is not full, the rows of the k best 1-bit estimates are refined first to set that minimum.
    scratch: (upper, cand_s float32, cand_j int32, full_s float32, full_r int64, ones uint8, bs, bj, br).
    """
    upper, cand_s, cand_j, full_s, full_r, ones, bs, bj, br = scratch
    b = est.shape[0]
    k = hs.shape[0]
    seed = np.float32(np.inf)  # rows with est > seed are refined already
    if hs[0] == -np.inf:
        mu = s1 / b
        sd = np.sqrt(max(s2 / b - mu * mu, 0.0))
        seed = np.float32(block_threshold(est, allowed, k, 2 * k + 32, mu, sd))
        n = _select(est, allowed, seed, cand_s, cand_j)
        for t in range(n):
            j = cand_j[t]
            full_s[t] = score_rabitq_row(kind_tok, qf_full, qw_full, words[c0 + j])
            full_r[t] = row0 + j
        merge_row(full_s[:n], 0, ones[:n], hs, hr, bs, bj, br, 0.0, -1.0, full_r[:n])
    _upper(est, fe[:b], qf[QF_GERR], upper[:b])
    n = _select(upper[:b], allowed, hs[0], cand_s, cand_j)
    n_full = 0
    for t in range(n):
        j = cand_j[t]
        if est[j] > seed:
            continue
        full_s[n_full] = score_rabitq_row(kind_tok, qf_full, qw_full, words[c0 + j])
        full_r[n_full] = row0 + j
        n_full += 1
    if n_full > 0:
        merge_row(full_s[:n_full], 0, ones[:n_full], hs, hr, bs, bj, br, 0.0, -1.0, full_r[:n_full])


@njit(cache=True, nogil=True)
def _scan_task(
    task, direct, words, flat, flat_f, c0, b, codes_t, ax, fa, fr, fe, row0, allowed,
    planes, qf, qw_full, qf_full, kind_tok, heap_s, heap_r, words_token, bits_token, row_token,
):  # fmt: skip
    """rabitq_scan for the queries of one task (QUERY_CHUNK of them) and one chunk of b rows."""
    q0 = task * QUERY_CHUNK
    q1 = min(heap_s.shape[0], q0 + QUERY_CHUNK)
    extended = len(kind_tok) == RABITQ_EX
    cap = buffer_size(heap_s.shape[1])
    est = np.empty(b, dtype=np.float32)
    bs = np.empty(cap, dtype=np.float32)
    bj = np.empty(cap, dtype=np.int32)
    br = np.empty(cap, dtype=np.int64)
    size = b + LANES if extended else 0
    scratch = (
        np.empty(size, dtype=np.float32), np.empty(size, dtype=np.float32), np.empty(size, dtype=np.int32),
        np.empty(size, dtype=np.float32), np.empty(size, dtype=np.int64), np.ones(size, dtype=np.uint8), bs, bj, br,
    )  # fmt: skip
    no_ids = np.empty(0, dtype=np.int64)
    for i in range(q0, q1):
        if direct:
            s1, s2 = score_direct(flat, flat_f, b, planes[i], qf[i], est, kind_tok, words_token, bits_token, row_token)
        else:
            s1, s2 = score_chunk(codes_t, b, planes[i], qf[i], ax, fa, fr, est, words_token, bits_token)
        if extended:
            _refine(est, s1, s2, fe, allowed, words, c0, row0, qf[i], qf_full[i], qw_full[i], kind_tok,
                    heap_s[i], heap_r[i], scratch)  # fmt: skip
        else:
            mu = s1 / b
            sd = np.sqrt(max(s2 / b - mu * mu, 0.0))
            merge_row(est, row0, allowed, heap_s[i], heap_r[i], bs, bj, br, mu, sd, no_ids)


@njit(cache=True, nogil=True, parallel=True)
def rabitq_scan(
    words, floats, row0, allowed, planes, qf, qw_full, qf_full, kind_tok, heap_s, heap_r,
    words_token, bits_token, row_token,
):  # fmt: skip
    """Flat scan of RaBitQ codes: estimates merged into the queries' heaps (in place).

    words uint64 (n, L) / floats float32 (n, 2L): two views of the code rows; allowed uint8 (n,), C-contiguous;
    planes uint64 (m, W, nbits) / qf float32 (m, 6): the queries at nbits (``prepare_queries``) for the
    sign code. kind_tok = kind_token(RABITQ): the 1-bit estimates go to the heaps (qw_full, qf_full unused);
    kind_token(RABITQ_EX): extended codes, scored incrementally (``_refine``) with the full-precision
    probe parameters qw_full uint64 (m, Q) / qf_full float32 (m, 6). heap_s float32 / heap_r int64 (m, k).
    words_token / bits_token / row_token: tuples of length W / nbits / L (compile-time loop bounds).
    One query reads 1-bit rows in place; otherwise queries share one transposition per chunk of rows.
    """
    n = words.shape[0]
    m, k = heap_s.shape
    if n == 0 or m == 0 or k == 0:
        return
    n_words = len(words_token)
    row = len(row_token)
    flat, flat_f = words.reshape(-1), floats.reshape(-1)
    chunk = min(n, ROW_CHUNK)
    # one query against 1-bit rows (8 words at D = 384: LLVM de-interleaves such short rows with wide loads)
    # scores them in place; otherwise a transposition per chunk is cheaper
    direct = m == 1 and len(kind_tok) != RABITQ_EX
    codes_t = np.empty((n_words, 0 if direct else chunk), dtype=np.uint64)
    ax = np.empty(chunk, dtype=np.float32)
    fa = np.empty(chunk, dtype=np.float32)
    fr = np.empty(chunk, dtype=np.float32)
    fe = np.empty(chunk, dtype=np.float32)
    n_tasks = (m + QUERY_CHUNK - 1) // QUERY_CHUNK
    for c0 in range(0, n, chunk):
        c1 = min(n, c0 + chunk)
        rows, rows_f = flat[c0 * row : c1 * row], flat_f[2 * c0 * row : 2 * c1 * row]
        if not direct:
            _load_chunk(rows, rows_f, c1 - c0, codes_t, ax, fa, fr, fe, kind_tok, words_token, row_token)
        if n_tasks == 1:  # skip the parallel region: waking the threads per chunk costs ~90 us
            _scan_task(
                0, direct, words, rows, rows_f, c0, c1 - c0, codes_t, ax, fa, fr, fe, row0 + c0, allowed[c0:c1],
                planes, qf, qw_full, qf_full, kind_tok, heap_s, heap_r, words_token, bits_token, row_token,
            )  # fmt: skip
            continue
        for task in prange(n_tasks):
            _scan_task(
                task, direct, words, rows, rows_f, c0, c1 - c0, codes_t, ax, fa, fr, fe, row0 + c0, allowed[c0:c1],
                planes, qf, qw_full, qf_full, kind_tok, heap_s, heap_r, words_token, bits_token, row_token,
            )  # fmt: skip


@njit(cache=True, nogil=True, parallel=True)
def score_rows(kind_tok, qf, qw, words):
    """Scores float32 (m, n) of every query (qf (m, F), qw (m, Q)) against every code row words (n, L)."""
    m = qf.shape[0]
    n = words.shape[0]
    out = np.empty((m, n), dtype=np.float32)
    for i in prange(m):
        for r in range(n):
            out[i, r] = score_rabitq_row(kind_tok, qf[i], qw[i], words[r])
    return out


@njit(cache=True, nogil=True, inline="always")
def score_rabitq_row(kind_tok, qf, qw, code):
    """Probe kinds RABITQ / RABITQ_EX (``len(kind_tok)``): the unbiased estimate of one 1-bit or extended row."""
    extended = len(kind_tok) == RABITQ_EX  # a compile-time constant
    n_planes = 1 if not extended else np.int64(qf[4])
    n_words = (code.shape[0] - (3 if extended else 2)) // n_planes
    n_bits = qw.shape[0] // n_words
    total = 0
    dot = 0
    for w in range(n_words):
        for p in range(n_planes):
            c = np.uint64(code[p * n_words + w])
            weight = n_planes - 1 if p == 0 else p - 1  # the sign plane holds the top bit
            acc = 0
            for t in range(n_bits):
                acc += popcount64(c & qw[w * n_bits + t]) << t
            total += popcount64(c) << weight
            dot += acc << weight
    top = (1 << n_planes) - 1
    f = n_words * n_planes
    f_add = _i32_as_f32(np.int32(np.int64(np.uint64(code[f]) & np.uint64(0xFFFFFFFF))))
    if not extended:
        f_rescale = _i32_as_f32(np.int32(np.int64(np.uint64(code[f]) >> np.uint64(32))))
    else:
        f_rescale = _i32_as_f32(np.int32(np.int64(np.uint64(code[f + 2]) & np.uint64(0xFFFFFFFF))))
    ax = np.float32(2 * total - 64 * n_words * top)
    bx = np.float32(2 * dot - top * np.int64(qf[2]))
    return f_add + f_rescale * (qf[0] * ax + qf[1] * bx) + qf[3]
