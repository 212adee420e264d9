"""LLVM intrinsics that numba does not expose: popcount, bit casts, masked compress, 512-bit vectors.

Each is a small ``@intrinsic`` emitting a few LLVM IR instructions; everything
else in ``kernels/`` is plain numba.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

LANES = 16  # float32 lanes per compress step (one 512-bit register)


@intrinsic
def _ctpop64(typingctx, x):
    """LLVM's ``ctpop`` on a uint64, returned as int64 (numba has no popcount of its own)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        return builder.ctpop(args[0])

    return types.int64(types.uint64), codegen


@njit(cache=True, nogil=True, inline="always")
def popcount64(x):
    """Number of set bits of a uint64, as int64."""
    return _ctpop64(x)


@intrinsic
def _f32_as_i32(typingctx, x):
    """Reinterpret the bits of a float32 as an int32."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _i32_as_f32(typingctx, x):
    """Reinterpret the bits of an int32 as a float32."""
    if x != types.int32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(cache=True, nogil=True, inline="always")
def order_key(x):
    """int32 key of a float32 that orders like the float (-inf < ... < -0 < +0 < ... < inf)."""
    b = _f32_as_i32(x)
    return np.int32(b ^ ((b >> 31) & 0x7FFFFFFF))


@njit(cache=True, nogil=True, inline="always")
def key_score(key):
    """The float32 whose order_key is ``key`` (an integer in int32 range)."""
    k32 = np.int32(key)
    return _i32_as_f32(np.int32(k32 ^ ((k32 >> 31) & 0x7FFFFFFF)))


_WIDE_VECTORS = ('"min-legal-vector-width"="512"', '"prefer-vector-width"="512"')


@intrinsic
def prefer_512_bit_vectors(typingctx):
    """Let LLVM vectorise the calling function with 512-bit registers.

    Numba's target (like clang's default for Intel cores) prefers 256-bit vectors. For the popcount
    scan, 512-bit vpopcntq halves the instructions on the one port that runs them (1.2x faster
    scans here), and 16-lane masks map to one register. The attributes are added to the calling
    function; without AVX-512 they change nothing. llvmlite only knows enum attributes, hence the
    widened _known set (left as is if another llvmlite version refuses).
    """

    def codegen(context, builder, sig, args):
        attributes = builder.function.attributes
        try:
            attributes._known = attributes._known | frozenset(_WIDE_VECTORS)
            for name in _WIDE_VECTORS:
                attributes.add(name)
        except (AttributeError, TypeError, ValueError):  # another llvmlite: keep its default width
            pass
        return context.get_dummy_value()

    return types.none(), codegen


def _is_c_array(t, dtype) -> bool:
    return isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C" and t.dtype == dtype


def _lanes_above_ir(context, builder, sig, args):
    """IR for the <16 x i1> mask (scores[j0 : j0+16] > thr) & (allowed[j0 : j0+16] != 0), and the scores.

    args[0..3] are scores (float32 C array), allowed (uint8 C array), j0 (int64), thr (float32).
    """
    f32, i8, i32 = ir.FloatType(), ir.IntType(8), ir.IntType(32)
    vf, vb = ir.VectorType(f32, LANES), ir.VectorType(i8, LANES)
    scores = context.make_array(sig.args[0])(context, builder, args[0]).data
    allowed = context.make_array(sig.args[1])(context, builder, args[1]).data
    s_vec = builder.load(builder.bitcast(builder.gep(scores, [args[2]]), vf.as_pointer()), align=4)
    l_vec = builder.load(builder.bitcast(builder.gep(allowed, [args[2]]), vb.as_pointer()), align=1)
    thr = builder.insert_element(ir.Constant(vf, None), args[3], ir.Constant(i32, 0))
    thr = builder.shuffle_vector(thr, ir.Constant(vf, None), ir.Constant(ir.VectorType(i32, LANES), [0] * LANES))
    mask = builder.and_(
        builder.fcmp_ordered(">", s_vec, thr), builder.icmp_unsigned("!=", l_vec, ir.Constant(vb, [0] * LANES))
    )
    return mask, s_vec


def _llvm_intrinsic(builder, name, ret, arg_types):
    module = builder.module
    return module.globals.get(name) or ir.Function(module, ir.FunctionType(ret, arg_types), name)


def _popcount_mask_ir(builder, mask):
    """int64 number of set lanes of a <16 x i1> mask."""
    word = builder.bitcast(mask, ir.IntType(LANES))
    ctpop = _llvm_intrinsic(builder, f"llvm.ctpop.i{LANES}", ir.IntType(LANES), [ir.IntType(LANES)])
    return builder.zext(builder.call(ctpop, [word]), ir.IntType(64))


def _lanes_args_ok(scores, allowed, j0, thr) -> bool:
    return (
        _is_c_array(scores, types.float32)
        and _is_c_array(allowed, types.uint8)
        and isinstance(j0, types.Integer)
        and thr == types.float32
    )


@intrinsic
def count_lanes_above(typingctx, scores, allowed, j0, thr):
    """How many of scores[j0 : j0+16] are > thr and allowed: scores float32 (b,), allowed uint8 (b,), j0 + 16 <= b."""
    if not _lanes_args_ok(scores, allowed, j0, thr):
        return None
    sig = types.int64(scores, allowed, types.int64, thr)

    def codegen(context, builder, sig, args):
        mask, _ = _lanes_above_ir(context, builder, sig, args)
        return _popcount_mask_ir(builder, mask)

    return sig, codegen


@intrinsic
def compress_above(typingctx, scores, allowed, j0, thr, out_s, out_j, n):
    """Append the scores[j0 : j0+16] that are > thr and allowed to out_s[n:], their offsets j to out_j[n:].

    scores float32 (b,), allowed uint8 (b,), out_s float32, out_j int32 (all 1-D C arrays, j0 + 16 <= b,
    n + 16 <= len(out)). Returns how many were appended. A masked compress-store (vcompressps on
    AVX-512; LLVM expands it elsewhere): no branches.
    """
    ok = _lanes_args_ok(scores, allowed, j0, thr) and _is_c_array(out_s, types.float32)
    if not (ok and _is_c_array(out_j, types.int32) and isinstance(n, types.Integer)):
        return None
    sig = types.int64(scores, allowed, types.int64, thr, out_s, out_j, types.int64)

    def codegen(context, builder, sig, args):
        mask, s_vec = _lanes_above_ir(context, builder, sig, args)
        i32 = ir.IntType(32)
        vi = ir.VectorType(i32, LANES)
        j0 = builder.insert_element(ir.Constant(vi, None), builder.trunc(args[2], i32), ir.Constant(i32, 0))
        j0 = builder.shuffle_vector(j0, ir.Constant(vi, None), ir.Constant(vi, [0] * LANES))
        offsets = builder.add(j0, ir.Constant(vi, list(range(LANES))))
        for vec, pos in ((s_vec, 4), (offsets, 5)):
            out = context.make_array(sig.args[pos])(context, builder, args[pos]).data
            elem = out.type.pointee
            suffix = "f32" if isinstance(elem, ir.FloatType) else "i32"
            store = _llvm_intrinsic(
                builder,
                f"llvm.masked.compressstore.v{LANES}{suffix}",
                ir.VoidType(),
                [vec.type, elem.as_pointer(), mask.type],
            )
            builder.call(store, [vec, builder.gep(out, [args[6]]), mask])
        return _popcount_mask_ir(builder, mask)

    return sig, codegen


@intrinsic
def _prefetch_line(typingctx, arr, row, offset):
    """Prefetch (for reading) the cache line at byte ``offset`` of row ``row`` of a 2-D C-contiguous array."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and arr.layout == "C"):
        return None

    def codegen(context, builder, sig, args):
        array = context.make_array(sig.args[0])(context, builder, args[0])
        i8p = ir.IntType(8).as_pointer()
        row_bytes = builder.mul(args[1], builder.extract_value(array.strides, 0))
        addr = builder.gep(builder.bitcast(array.data, i8p), [builder.add(row_bytes, args[2])])
        i32 = ir.IntType(32)
        fn = _llvm_intrinsic(builder, "llvm.prefetch.p0i8", ir.VoidType(), [i8p, i32, i32, i32])
        builder.call(fn, [addr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, types.int64, types.int64), codegen


@njit(cache=True, nogil=True, inline="always")
def prefetch_row(arr, row, n_bytes):
    """Start loading the first ``n_bytes`` of row ``row`` of a 2-D C-contiguous array into cache
    (a hint; no effect on results)."""
    for offset in range(0, min(n_bytes, arr.shape[1] * arr.itemsize), 64):
        _prefetch_line(arr, np.int64(row), np.int64(offset))
