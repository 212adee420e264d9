"""4-bit product quantisation fast scan: uint8 lookup tables applied with byte shuffles.

Codes are nibble-packed rows (n, B): byte b holds sub-code 2b in its low nibble and
2b + 1 in its high nibble. A query comes as uint8 tables (B, 32): for byte column b,
16 entries for the low nibble then 16 for the high one. A row's integer score is the
sum of its 2B table entries (kept below 2^16 by the caller's quantisation).

Stored codes keep one row per vector. The scan reads them in blocks of 64 rows, each
block column-major (B, 64) (``to_blocks``: 16 x 16 byte blocks transposed in registers
by byte interleaves, 12x faster than a byte loop), so that one byte column of a block is
one 64-byte vector, as in FAISS's fast-scan layout. A collection without an index keeps
its sealed codes blocked once (``PQ4Codec.scan_layout``); otherwise each scan blocks the
rows a chunk at a time and every query of the batch scans the chunk. ``lookup_block`` does
each column's 2 x 64 table lookups with two byte shuffles (pshufb: each of the 64 lanes
picks one of 16 table bytes) and accumulates uint16 sums in registers. Numba cannot
express a shuffle with a variable mask, so ``lookup_block`` is an ``@intrinsic``
emitting the x86 shuffle for the host's widest vector (AVX-512BW, AVX2 or SSSE3), or
portable IR elsewhere. The sums stay integers: the heap's worst score, mapped back to a
table sum, skips every block whose largest sum is below it (``scan_query``), so only the
few rows that can enter the top-k are scored in float. Measured on 100k rows of 48 bytes,
one thread: blocking takes 0.25-0.5 ms; one query's scan of the blocks 0.2 ms (0.42 ms when
it wrote a float score per row and merged those).
"""

from __future__ import annotations

import numpy as np
from llvmlite import binding as ll
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils, config
from numba.extending import intrinsic

from vecpack.kernels.simd import prefer_512_bit_vectors
from vecpack.kernels.topk import QUERY_CHUNK, heap_replace_top

BLOCK = 64  # rows per register block: one byte column of a block is one 64-byte vector
ROW_CHUNK = 4096  # rows every query of a task scans before the next chunk: 4096 * B bytes, in L2 meanwhile
CHUNK_BLOCKS = ROW_CHUNK // BLOCK

_SHUFFLES = {  # bytes per shuffle -> LLVM intrinsic
    64: "llvm.x86.avx512.pshuf.b.512",
    32: "llvm.x86.avx2.pshuf.b",
    16: "llvm.x86.ssse3.pshuf.b.128",
}


def shuffle_width() -> int:
    """Bytes per table-lookup shuffle numba's target offers: 64, 32, 16, or 0 (no x86 shuffle: portable IR)."""
    if not ll.get_process_triple().startswith(("x86_64", "i686", "i386")):
        return 0
    if config.CPU_FEATURES is not None:
        features = config.CPU_FEATURES
    elif config.CPU_NAME in (None, "host"):
        features = ll.get_host_cpu_features().flatten()
    else:  # a named target CPU without a feature list: assume only the x86-64 baseline
        return 0
    for width, flag in ((64, "+avx512bw"), (32, "+avx2"), (16, "+ssse3")):
        if flag in features.split(","):
            return width
    return 0


def _shuffle_ir(builder, table, idx, width):
    """<64 x i8> with lane j = table[idx[j]] (table <64 x i8>: the same 16 bytes in each 16-byte lane, idx < 16)."""
    i32 = ir.IntType(32)
    if width == 0:
        out = ir.Constant(table.type, None)
        for j in range(BLOCK):
            lane = ir.Constant(i32, j)
            out = builder.insert_element(out, builder.extract_element(table, builder.extract_element(idx, lane)), lane)
        return out
    part = ir.VectorType(ir.IntType(8), width)
    fn = builder.module.globals.get(_SHUFFLES[width]) or ir.Function(
        builder.module, ir.FunctionType(part, [part, part]), _SHUFFLES[width]
    )
    pieces = []
    for a in range(0, BLOCK, width):
        lanes = ir.Constant(ir.VectorType(i32, width), list(range(a, a + width)))
        t = builder.shuffle_vector(table, table, lanes)
        pieces.append(builder.call(fn, [t, builder.shuffle_vector(idx, idx, lanes)]))
    while len(pieces) > 1:  # concatenate pairwise
        joined = []
        for p, q in zip(pieces[::2], pieces[1::2], strict=True):
            n = 2 * p.type.count
            joined.append(builder.shuffle_vector(p, q, ir.Constant(ir.VectorType(i32, n), list(range(n)))))
        pieces = joined
    return pieces[0]


def make_lookup_block(width: int):
    """The ``lookup_block`` intrinsic with shuffles ``width`` bytes wide (see ``shuffle_width``)."""

    @intrinsic
    def lookup_block(typingctx, codes_t, r0, lut, out):
        """out[:64] = per-row sums of lut entries over codes_t[:, r0 : r0 + 64].

        codes_t uint8 (B, >= r0 + 64) column-major nibble codes; lut uint8 (B, 32); out uint16 (>= 64,)
        (all C-contiguous). Row j's sum: over b, lut[b, c & 15] + lut[b, 16 + (c >> 4)] with c = codes_t[b, r0 + j].
        """
        if not (
            isinstance(codes_t, types.Array)
            and codes_t.ndim == 2
            and codes_t.dtype == types.uint8
            and isinstance(lut, types.Array)
            and lut.ndim == 2
            and lut.dtype == types.uint8
            and isinstance(out, types.Array)
            and out.ndim == 1
            and out.dtype == types.uint16
            and codes_t.layout == lut.layout == out.layout == "C"
            and isinstance(r0, types.Integer)
        ):
            return None
        sig = types.none(codes_t, types.int64, lut, out)

        def codegen(context, builder, sig, args):
            i8, i16, i32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
            v8 = ir.VectorType(i8, BLOCK)
            w16 = ir.VectorType(i16, BLOCK // 2)
            codes = context.make_array(sig.args[0])(context, builder, args[0])
            table = context.make_array(sig.args[2])(context, builder, args[2])
            dest = context.make_array(sig.args[3])(context, builder, args[3])
            n_cols = builder.extract_value(codes.shape, 0)
            col_bytes = builder.extract_value(codes.strides, 0)
            base = builder.gep(builder.bitcast(codes.data, i8.as_pointer()), [args[1]])
            lut_base = builder.bitcast(table.data, i8.as_pointer())
            # the looked-up bytes as 16-bit words (even row + 256 * odd row): words accumulates them,
            # odd the odd rows' bytes alone; no widening per column (the shuffle port is the bottleneck)
            words = cgutils.alloca_once_value(builder, ir.Constant(w16, None))
            odd = cgutils.alloca_once_value(builder, ir.Constant(w16, None))
            nibble = ir.Constant(v8, [15] * BLOCK)
            four = ir.Constant(v8, [4] * BLOCK)
            eight = ir.Constant(w16, [8] * (BLOCK // 2))
            bcast = ir.Constant(ir.VectorType(i32, BLOCK), [j % 16 for j in range(BLOCK)])
            t16 = ir.VectorType(i8, 16)
            with cgutils.for_range(builder, n_cols) as loop:
                b = loop.index
                col = builder.load(
                    builder.bitcast(builder.gep(base, [builder.mul(b, col_bytes)]), v8.as_pointer()), align=1
                )
                row = builder.gep(lut_base, [builder.mul(b, ir.Constant(b.type, 32))])
                t_lo = builder.load(builder.bitcast(row, t16.as_pointer()), align=1)
                t_hi = builder.load(
                    builder.bitcast(builder.gep(row, [ir.Constant(i32, 16)]), t16.as_pointer()), align=1
                )
                lo = _shuffle_ir(builder, builder.shuffle_vector(t_lo, t_lo, bcast), builder.and_(col, nibble), width)
                hi = _shuffle_ir(builder, builder.shuffle_vector(t_hi, t_hi, bcast), builder.lshr(col, four), width)
                lo, hi = builder.bitcast(lo, w16), builder.bitcast(hi, w16)
                builder.store(builder.add(builder.load(words), builder.add(lo, hi)), words)
                high = builder.add(builder.lshr(lo, eight), builder.lshr(hi, eight))
                builder.store(builder.add(builder.load(odd), high), odd)
            odd_sums = builder.load(odd)
            even_sums = builder.sub(builder.load(words), builder.shl(odd_sums, eight))
            rows = ir.Constant(ir.VectorType(i32, BLOCK), [j // 2 + (BLOCK // 2) * (j % 2) for j in range(BLOCK)])
            out_type = ir.VectorType(i16, BLOCK)
            builder.store(
                builder.shuffle_vector(even_sums, odd_sums, rows),
                builder.bitcast(dest.data, out_type.as_pointer()),
                align=2,
            )
            return context.get_dummy_value()

        return sig, codegen

    return lookup_block


lookup_block = make_lookup_block(shuffle_width())


def _is_2d_bytes(t) -> bool:
    return isinstance(t, types.Array) and t.ndim == 2 and t.layout == "C" and t.dtype == types.uint8


@intrinsic
def transpose16(typingctx, src, row, col, dst, dcol):
    """dst[col + j, dcol + i] = src[row + i, col + j] for i, j < 16: a 16 x 16 byte block transposed in registers.

    src, dst uint8 2-D C arrays; the block must lie inside both. Four rounds of byte interleaves
    (vector i with vector i + 8: unpack low / high, x86 punpck or NEON zip) turn the 16 loaded rows
    into the 16 columns (a perfect shuffle applied log2(16) times). Measured: wider vectors (2 to 4
    blocks side by side) are no faster, the lane extractions cost what the shuffles save.
    """
    if not (_is_2d_bytes(src) and _is_2d_bytes(dst)):
        return None
    if not all(isinstance(t, types.Integer) for t in (row, col, dcol)):
        return None
    sig = types.none(src, types.int64, types.int64, dst, types.int64)

    def codegen(context, builder, sig, args):
        i8, i32 = ir.IntType(8), ir.IntType(32)
        vec = ir.VectorType(i8, 16)
        a = context.make_array(sig.args[0])(context, builder, args[0])
        b = context.make_array(sig.args[3])(context, builder, args[3])
        a_stride = builder.extract_value(a.strides, 0)
        b_stride = builder.extract_value(b.strides, 0)
        a_data = builder.bitcast(a.data, i8.as_pointer())
        b_data = builder.bitcast(b.data, i8.as_pointer())
        vecs = []
        for i in range(16):
            offset = builder.add(builder.mul(builder.add(args[1], ir.Constant(args[1].type, i)), a_stride), args[2])
            vecs.append(builder.load(builder.bitcast(builder.gep(a_data, [offset]), vec.as_pointer()), align=1))
        low = ir.Constant(ir.VectorType(i32, 16), [j // 2 + 16 * (j % 2) for j in range(16)])
        high = ir.Constant(ir.VectorType(i32, 16), [8 + j // 2 + 16 * (j % 2) for j in range(16)])
        for _ in range(4):
            vecs = [builder.shuffle_vector(vecs[i], vecs[i + 8], m) for i in range(8) for m in (low, high)]
        for j in range(16):
            offset = builder.add(builder.mul(builder.add(args[2], ir.Constant(args[2].type, j)), b_stride), args[4])
            builder.store(vecs[j], builder.bitcast(builder.gep(b_data, [offset]), vec.as_pointer()), align=1)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def transpose_chunk(codes, c0, c1, codes_t):
    """Rows c0..c1-1 of codes uint8 (n, B) into columns codes_t uint8 (B, >= c1 - c0): 16 x 16 blocks, then edges."""
    n_cols = codes.shape[1]
    b_rows = c1 - c0
    full_rows = b_rows - b_rows % 16
    full_cols = n_cols - n_cols % 16
    for r in range(0, full_rows, 16):
        for c in range(0, full_cols, 16):
            transpose16(codes, c0 + r, c, codes_t, r)
        for c in range(full_cols, n_cols):
            for i in range(16):
                codes_t[c, r + i] = codes[c0 + r + i, c]
    for c in range(n_cols):
        for r in range(full_rows, b_rows):
            codes_t[c, r] = codes[c0 + r, c]


@njit(cache=True, nogil=True)
def quantize_tables(luts, bias):
    """uint8 tables of float tables luts float32 (m, S, 16): luts ~ low_s + scale * lut_u8, one scale per query.

    The top level is min(255, 65535 // S), so a sum of S entries fits uint16; the widest sub-space's
    entries span 0..top. Returns lut_u8 uint8 (m, S, 16), scale float32 (m,) and offset = bias + sum_s low_s
    float32 (m,) (bias float32 (m,)), so score ~ offset + scale * sum_s lut_u8[s, code_s]. Each entry is off
    by at most scale / 2.
    """
    m, n_sub, k = luts.shape
    top = np.float32(min(255, 65535 // n_sub))
    lut_u8 = np.empty((m, n_sub, k), dtype=np.uint8)
    scale = np.empty(m, dtype=np.float32)
    offset = np.empty(m, dtype=np.float32)
    low = np.empty(n_sub, dtype=np.float32)
    for i in range(m):
        span = np.float32(0.0)
        total = np.float64(bias[i])
        for s in range(n_sub):
            lo = luts[i, s, 0]
            hi = lo
            for c in range(1, k):
                lo = min(lo, luts[i, s, c])
                hi = max(hi, luts[i, s, c])
            low[s] = lo
            span = max(span, hi - lo)
            total += lo
        step = span / top if span > 0 else np.float32(1.0)
        for s in range(n_sub):
            for c in range(k):
                level = np.rint((luts[i, s, c] - low[s]) / step)
                lut_u8[i, s, c] = np.uint8(min(max(level, np.float32(0.0)), top))
        scale[i] = step
        offset[i] = total
    return lut_u8, scale, offset


@njit(cache=True, nogil=True)
def to_blocks(codes, r0, r1, blocks, b0):
    """Rows r0..r1-1 of codes uint8 (n, B) into blocks uint8 (>= b0 + ceil((r1 - r0) / 64), B, 64).

    Row r0 + i goes to column i % 64 of block b0 + i // 64; a last partial block's other columns are untouched.
    """
    for a in range(r0, r1, BLOCK):
        transpose_chunk(codes, a, min(a + BLOCK, r1), blocks[b0 + (a - r0) // BLOCK])


@njit(cache=True, nogil=True, inline="always")
def _sum_bound(worst, scale, offset):
    """The largest table sum whose score offset + scale * sum cannot beat ``worst`` (a heap's worst score), minus
    one for rounding; -1 while the heap has room (worst = -inf), 65535 when no sum can beat it."""
    if worst == -np.inf:
        return -1
    t = np.floor((worst - offset) / scale) - 1
    return int(min(max(t, -1.0), 65535.0))


@njit(cache=True, nogil=True)
def scan_query(blocks, b_rows, row0, allowed, lut, scale, offset, hs, hr, sums):
    """Merge one query's scores of b_rows blocked rows (numbered from row0) into its heap hs / hr (k,).

    blocks uint8 (>= ceil(b_rows / 64), B, 64); lut uint8 (B, 32); allowed uint8 (b_rows,); sums uint16 (BLOCK,)
    scratch. The scan stays on integer sums: a block whose largest sum cannot beat the heap's worst entry
    is skipped after one comparison, and only the rows above it are scored in float and pushed.
    """
    prefer_512_bit_vectors()
    bound = _sum_bound(hs[0], scale, offset)
    for a in range(0, b_rows, BLOCK):
        lookup_block(blocks[a // BLOCK], 0, lut, sums)
        m = min(BLOCK, b_rows - a)
        top = np.uint16(0)
        for j in range(BLOCK):
            top = max(top, sums[j])
        if top <= bound:
            continue
        for j in range(m):
            if sums[j] > bound and allowed[a + j]:
                score = offset + scale * np.float32(sums[j])
                if score > hs[0]:
                    heap_replace_top(hs, hr, score, row0 + a + j)
                    bound = _sum_bound(hs[0], scale, offset)


@njit(cache=True, nogil=True)
def _scan_queries(task, blocks, b_rows, row0, allowed, luts, scale, offset, heap_s, heap_r):
    """Scan one chunk's blocks for the queries of one task (QUERY_CHUNK of them)."""
    sums = np.empty(BLOCK, dtype=np.uint16)
    for i in range(task * QUERY_CHUNK, min(heap_s.shape[0], (task + 1) * QUERY_CHUNK)):
        scan_query(blocks, b_rows, row0, allowed, luts[i], scale[i], offset[i], heap_s[i], heap_r[i], sums)


@njit(cache=True, nogil=True)
def _chunk_blocks(codes, blocks, c0, c1, scratch):
    """The blocks of rows c0..c1-1: a slice of ``blocks`` if it is not empty, else codes' rows blocked into scratch."""
    if blocks.shape[0]:
        return blocks[c0 // BLOCK : (c1 + BLOCK - 1) // BLOCK]
    to_blocks(codes, c0, c1, scratch, 0)
    return scratch


@njit(cache=True, nogil=True)
def _scan_serial(codes, blocks, row0, allowed, luts, scale, offset, heap_s, heap_r):
    """fastscan on one thread: no parallel region per chunk (its launch costs more than a few queries' scan)."""
    n = allowed.shape[0]
    scratch = np.empty((0 if blocks.shape[0] else CHUNK_BLOCKS, luts.shape[1], BLOCK), dtype=np.uint8)
    n_tasks = (heap_s.shape[0] + QUERY_CHUNK - 1) // QUERY_CHUNK
    for c0 in range(0, n, ROW_CHUNK):
        c1 = min(n, c0 + ROW_CHUNK)
        chunk = _chunk_blocks(codes, blocks, c0, c1, scratch)
        for task in range(n_tasks):
            _scan_queries(task, chunk, c1 - c0, row0 + c0, allowed[c0:c1], luts, scale, offset, heap_s, heap_r)


@njit(cache=True, nogil=True, parallel=True)
def _scan_parallel(codes, blocks, row0, allowed, luts, scale, offset, heap_s, heap_r):
    """fastscan with the queries of each chunk spread over threads, QUERY_CHUNK per task."""
    n = allowed.shape[0]
    scratch = np.empty((0 if blocks.shape[0] else CHUNK_BLOCKS, luts.shape[1], BLOCK), dtype=np.uint8)
    n_tasks = (heap_s.shape[0] + QUERY_CHUNK - 1) // QUERY_CHUNK
    for c0 in range(0, n, ROW_CHUNK):
        c1 = min(n, c0 + ROW_CHUNK)
        chunk = _chunk_blocks(codes, blocks, c0, c1, scratch)
        for task in prange(n_tasks):
            _scan_queries(task, chunk, c1 - c0, row0 + c0, allowed[c0:c1], luts, scale, offset, heap_s, heap_r)


def fastscan(codes, row0, allowed, luts, scale, offset, heap_s, heap_r, blocks=None) -> None:
    """Score nibble codes against quantised tables and merge into heaps.

    codes uint8 (n, B), or None when ``blocks`` holds the same rows blocked (``to_blocks``; (>= ceil(n / 64),
    B, 64)). luts uint8 (m, B, 32); score(query i, row r) = offset[i] + scale[i] * (sum of row r's table
    entries) (scale, offset float32 (m,)). allowed uint8 (n,): 0 rows are skipped. heap_s float32 / heap_r int64
    (m, k) updated in place. Batches of more than QUERY_CHUNK queries run in parallel.
    """
    if allowed.shape[0] == 0 or heap_s.shape[0] == 0 or heap_s.shape[1] == 0:
        return
    allowed = np.ascontiguousarray(allowed)
    b = luts.shape[1]
    if blocks is None:
        blocks = np.empty((0, b, BLOCK), dtype=np.uint8)
    else:
        codes = np.empty((0, b), dtype=np.uint8)
    scan = _scan_serial if heap_s.shape[0] <= QUERY_CHUNK else _scan_parallel
    scan(codes, blocks, row0, allowed, luts, scale, offset, heap_s, heap_r)


@njit(cache=True, nogil=True, inline="always")
def score_lut4_row(qf, code):
    """Probe kind LUT4: bias + the float tables' entries of the row's two nibbles per byte."""
    n_bytes = code.shape[0]
    acc = qf[32 * n_bytes]
    for b in range(n_bytes):
        c = np.int64(code[b])
        acc += qf[32 * b + (c & 15)] + qf[32 * b + 16 + (c >> 4)]
    return acc
