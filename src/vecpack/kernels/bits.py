"""Bit-level helpers: a popcount that compiles to one instruction."""

from __future__ import annotations

from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def _ctpop64(typingctx, x):
    """LLVM's ``ctpop`` on a uint64, returned as int64 (numba has no popcount of its own)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        return builder.ctpop(args[0])

    return types.int64(types.uint64), codegen


@njit(cache=True, inline="always")
def popcount64(x):
    """Number of set bits of a uint64, as int64."""
    return _ctpop64(x)
