"""Scalar codecs: float32 (exact), float16, bfloat16, and int8 with a per-dimension range."""

from __future__ import annotations

import numpy as np

from vecpack.codecs.base import DECODE_BATCH, Codec, DecodeScorer, Probe, ProbeScorer, Scorer, affine_probe
from vecpack.kernels import twins, warm
from vecpack.kernels.scalar import u8_decode, u8_encode

_FP16_MAX = 65504.0


class Float32Codec(Codec):
    """Exact float32 storage: the quality reference (4 bytes per dimension)."""

    family = "float32"
    exact = True

    @property
    def code_size(self) -> int:
        return 4 * self.dim

    def _encode(self, x):
        return x.view(np.uint8).reshape(x.shape[0], self.code_size).copy()

    def decode(self, codes):
        return np.ascontiguousarray(codes).view(np.float32)

    def probe(self, q) -> Probe:
        return _unit_probe(q, self.metric, self.dim, np.float32)


class Float16Codec(Codec):
    """IEEE half precision: 2 bytes per dimension, near-lossless for unit vectors."""

    family = "float16"

    @property
    def code_size(self) -> int:
        return 2 * self.dim

    def _encode(self, x):
        # values beyond float16's range saturate, as int8 clamps: encoding runs after the commit, and one row
        # must not stop every later seal (its float32 vector re-ranks it exactly)
        return np.clip(x, -_FP16_MAX, _FP16_MAX).astype(np.float16).view(np.uint8).reshape(x.shape[0], self.code_size)

    def decode(self, codes):
        return np.ascontiguousarray(codes).view(np.float16).astype(np.float32)

    def probe(self, q) -> Probe:
        return _unit_probe(q, self.metric, self.dim, np.uint16)


class BFloat16Codec(Codec):
    """bfloat16: float32's sign and exponent with 8 mantissa bits (2 bytes per dimension).

    Same size as float16 with ~3 significant digits instead of ~4, but float32's range:
    no overflow for unnormalised vectors. Rounds to nearest even.
    """

    family = "bf16"

    @property
    def code_size(self) -> int:
        return 2 * self.dim

    def _encode(self, x):
        bits = x.view(np.uint32)
        rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        return rounded.astype(np.uint16).view(np.uint8).reshape(x.shape[0], self.code_size)

    def decode(self, codes):
        halves = np.ascontiguousarray(codes).view(np.uint16).astype(np.uint32)
        return (halves << np.uint32(16)).view(np.float32)

    def probe(self, q) -> Probe:
        return _unit_probe(q, self.metric, self.dim, np.int16)


class Int8Codec(Codec):
    """8 bits per dimension: x ~ lo[j] + step[j] * code, lo/step learned per dimension.

    The range is the sample's min..max per dimension; values outside it at
    encode time are clamped.
    """

    family = "int8"

    @property
    def code_size(self) -> int:
        return self.dim

    def _fit(self, x, queries=None):
        lo = x.min(axis=0)
        hi = x.max(axis=0)
        step = (hi - lo) / 255.0
        step[step <= 0] = 1.0
        self.lo = lo.astype(np.float32)
        self.step = step.astype(np.float32)

    def _encode(self, x):
        encode = u8_encode if warm.ready("int8") else twins.u8_encode
        return encode(x, self.lo, (1.0 / self.step).astype(np.float32))

    def decode(self, codes):
        decode = u8_decode if warm.ready("int8") else twins.u8_decode
        return decode(np.ascontiguousarray(codes), self.lo, self.step)

    def scorer(self, q) -> Scorer:
        self._require_trained()
        if q.shape[0] >= DECODE_BATCH or not warm.ready("int8"):  # the probe scan compiles: decode meanwhile
            return DecodeScorer(self, q)
        return ProbeScorer(self.probe(q))

    def probe(self, q) -> Probe:
        self._require_trained()
        return affine_probe(q, self.metric, self.lo, self.step, np.uint8)

    def state(self):
        return {"lo": self.lo, "step": self.step}

    def set_state(self, arrays):
        self.lo = np.ascontiguousarray(arrays["lo"], dtype=np.float32)
        self.step = np.ascontiguousarray(arrays["step"], dtype=np.float32)
        self.trained = True


def _unit_probe(q: np.ndarray, metric: str, dim: int, code_dtype: type) -> Probe:
    """Probe for codes that store the values themselves (lo = 0, step = 1)."""
    return affine_probe(q, metric, np.zeros(dim, np.float32), np.ones(dim, np.float32), code_dtype)
