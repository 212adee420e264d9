"""Score one prepared query against one code row: the inner step of index traversals.

Flat scans score whole blocks (``Scorer``); graph hops and IVF lists score
scattered rows one at a time. A codec describes a query for this with a
*probe* (``codecs.base.Probe``): a ``kind``, float32 parameters ``qf`` and
uint64 parameters ``qw``. ``score_row`` is the one place that knows every
kind; index kernels call it and stay codec-agnostic (as FAISS's
DistanceComputer). Scores are similarities (larger is better), like the
codecs' scorers: <q, x> for ip, -||q - x||^2 for l2.

Kinds (x reconstructed from code c, d dimensions):

* ``AFFINE_IP``: x_j = lo_j + step_j * c_j; qf = [q * step (d), <q, lo>].
* ``AFFINE_L2``: same x; qf = [(q - lo) / step (d), step^2 (d)]; score = -sum_j qf[d+j] * (qf[j] - c_j)^2.
* ``BITS``: 1-bit codes (W uint64 words) against a query quantised to nbits planes;
  qw = planes [w * nbits + p], qf = [qa, qb, qc]; score = qa * popcount(c) + qb * sum_p 2^p popcount(c & plane_p) + qc.
* ``LUT``: product quantisation; qf = [tables (M * 256), bias]; score = bias + sum_m qf[256 m + c_m].

Code element types: float32 (exact), uint16 (float16 bit patterns), uint8, uint64 (bits).

Kernels receive the kind as ``kind_token(kind)``, a tuple whose *length* is the
kind: numba then compiles one specialisation per kind, LLVM folds the branches
away and the scoring loop vectorises (measured: 2x faster than a runtime kind).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from vecpack.kernels.simd import _i32_as_f32, popcount64

AFFINE_IP = 0
AFFINE_L2 = 1
BITS = 2
LUT = 3

_HALF_SCALE = np.float32(2.0**112)  # rebias float16's exponent (15) to float32's (127)


def kind_token(kind: int) -> tuple[int, ...]:
    """The kind as a compile-time constant for the kernels: a tuple of that length."""
    return (0,) * kind


def as_f32(x):
    """A code element as float32 (uint16 elements are float16 bit patterns)."""
    raise NotImplementedError  # numba-only: see the overload below


@overload(as_f32, inline="always")
def _as_f32_impl(x):
    if x == types.uint16:

        def half(x):
            # the 15 magnitude bits shifted into float32's exponent/mantissa place, times 2^112, give the
            # magnitude exactly for normal and subnormal halves (no inf/nan in codes); then the sign
            bits = np.int32(x)
            mag = _i32_as_f32(np.int32((bits & 0x7FFF) << 13)) * _HALF_SCALE
            return mag * np.float32(1 - ((bits >> 14) & 2))

        return half
    return lambda x: np.float32(x)


@njit(cache=True, inline="always")
def score_row(kind_tok, qf, qw, code):
    """Similarity (float32) of the query described by (kind_token(kind), qf, qw) to one code row ``code``."""
    kind = len(kind_tok)
    if kind == AFFINE_IP:
        d = code.shape[0]
        acc = qf[d]
        for j in range(d):
            acc += qf[j] * as_f32(code[j])
        return acc
    if kind == AFFINE_L2:
        d = code.shape[0]
        acc = np.float32(0.0)
        for j in range(d):
            diff = qf[j] - as_f32(code[j])
            acc += qf[d + j] * diff * diff
        return -acc
    if kind == BITS:
        n_words = code.shape[0]
        n_bits = qw.shape[0] // n_words
        ones = 0
        dot = 0
        for w in range(n_words):
            c = np.uint64(code[w])
            ones += popcount64(c)
            for p in range(n_bits):
                dot += popcount64(c & qw[w * n_bits + p]) << p
        return qf[0] * np.float32(ones) + qf[1] * np.float32(dot) + qf[2]
    # LUT
    n_sub = code.shape[0]
    acc = qf[256 * n_sub]
    for m in range(n_sub):
        acc += qf[256 * m + np.int64(code[m])]
    return acc
