"""LVQ (locally-adaptive vector quantization, Intel SVS) ``lvq8``, ``lvq4``, ``lvq4x4``, ``lvq4x8``; and ``int4``.

LVQ centres vectors on the data mean mu, then quantises each vector on its own
range: x ~ mu + bias + scale * c, with c in 0 .. 2^B1 - 1 and (scale, bias) per
vector. Two-level specs ``lvq4x<B2>`` add a signed B2-bit code e of the
residual on the step delta = scale / 2^B2, for x ~ mu + bias + scale * c + delta * e.

Code row layout (uint8, h = ceil(d / 2)):

=========  ======================  =====================================================
bytes      content                 notes
=========  ======================  =====================================================
0 .. 1     scale, float16          rounded up, and bias down, so the grid covers the vector
2 .. 3     bias, float16           codes and residuals are computed with the rounded values
4 ..       primary codes c         d bytes (B1 = 8) or h bytes of nibbles (B1 = 4)
then       residual e + 2^(B2-1)   h bytes of nibbles (B2 = 4) or 2h bytes (B2 = 8)
=========  ======================  =====================================================

Nibbles use the split-halves layout of ``kernels.lvq`` (byte j holds dimensions
j and h + j). code_size = 4 + primary bytes + residual bytes.

Scoring is asymmetric (float32 queries). ``probe`` scores the primary level
only (graph and IVF traversals); ``scorer`` and ``rescore`` use both levels.
For l2 the rows are decoded on the fly inside the scoring loop: 3.4x faster
than expanding the square with per-row code sums (one thread, 50k rows).
Flat scans score row by row (``kernels.probe.probe_scan``) for fewer than
DECODE_BATCH queries, else decode blocks for one matrix product: on 50k rows
the row kernel is 5-8x faster for one query, the matrix product 4-10x faster
for 1000, with the crossover between 8 and 32 queries.

``int4`` is ``int8`` with 4 bits: x_j ~ lo_j + step_j * c_j per dimension,
two dimensions per byte (split halves), with each dimension's range clipped
where that lowers the training sample's squared error.
"""

from __future__ import annotations

import numpy as np

from vecpack.codecs.base import DECODE_BATCH, Codec, DecodeScorer, Probe, ProbeScorer, Scorer
from vecpack.errors import InvalidInput
from vecpack.kernels.lvq import (
    HEADER_BYTES,
    lvq_decode,
    lvq_encode,
    nibble_decode,
    nibble_encode,
    row_ranges,
)
from vecpack.kernels.probe import LVQ, LVQ_FULL, NIBBLE_AFFINE, probe_rescore

#: (primary bits, residual bits) of the supported specs
LEVELS = {"lvq8": (8, 0), "lvq4": (4, 0), "lvq4x4": (4, 4), "lvq4x8": (4, 8)}
#: int4 tries clipping each dimension's range to these fractions of its min..max half-widths
CLIP_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
#: int4 fits its ranges on at most this many sampled rows
FIT_SAMPLE = 16384
_FP16_MAX = 65504.0


class LVQCodec(Codec):
    """``lvq<B1>`` / ``lvq<B1>x<B2>``: per-vector float16 scale and bias over the data mean (module docstring)."""

    family = "lvq"

    def __init__(self, dim: int, metric: str, spec: str, bits: int, residual_bits: int) -> None:
        super().__init__(dim, metric, spec)
        if (bits, residual_bits) not in LEVELS.values():
            raise InvalidInput(f"codec {spec!r}: LVQ specs are {', '.join(LEVELS)}")
        self.bits = bits
        self.residual_bits = residual_bits
        half = (dim + 1) // 2
        self.primary_bytes = dim if bits == 8 else half
        self.residual_bytes = {0: 0, 4: half, 8: 2 * half}[residual_bits]

    @property
    def code_size(self) -> int:
        return HEADER_BYTES + self.primary_bytes + self.residual_bytes

    def _fit(self, x, queries=None):
        self.mu = x.mean(axis=0, dtype=np.float64).astype(np.float32)

    def _encode(self, x):
        # a row whose centred values leave float16's range saturates (its codes clamp, its float32 re-ranks it)
        # rather than fail: encoding runs after the commit, and one row must not stop every later seal
        lo, hi = (np.clip(r, -_FP16_MAX, _FP16_MAX) for r in row_ranges(x, self.mu))
        top = 2**self.bits - 1
        bias = _fp16_toward(lo, -np.inf)
        scale = np.minimum(_fp16_toward((hi - bias.astype(np.float32)) / top, np.inf), np.float16(_FP16_MAX))
        scale[scale <= 0] = 1.0  # constant vector: every code is 0
        header = np.stack([scale, bias], axis=1).view(np.uint8)
        return lvq_encode(
            x,
            self.mu,
            scale.astype(np.float32),
            bias.astype(np.float32),
            header,
            self.bits,
            self.residual_bits,
            self.code_size,
        )

    def decode(self, codes):
        codes = np.ascontiguousarray(codes)
        scale, bias = _header(codes)
        return lvq_decode(codes, self.mu, scale, bias, self.dim, self.bits, self.residual_bits)

    def scorer(self, q) -> Scorer:
        self._require_trained()
        if q.shape[0] >= DECODE_BATCH:
            return DecodeScorer(self, q)
        return ProbeScorer(self._probe(q, full=True))

    def probe(self, q) -> Probe:
        """Primary-level scores (the residual bytes are not read): what graph and IVF traversals use."""
        self._require_trained()
        return self._probe(q, full=False)

    def rescore(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Both-level scores float32 (m, r) of queries q (m, dim) against candidates codes uint8 (m, r, code_size).

        Row i of codes holds query i's candidates. For one-level specs this equals the primary (``probe``) score.
        """
        self._require_trained()
        q = self._check_input(q)
        codes = np.ascontiguousarray(codes)
        if codes.dtype != np.uint8 or codes.ndim != 3 or codes.shape[::2] != (q.shape[0], self.code_size):
            raise InvalidInput(
                f"codec {self.spec!r}: rescore expects uint8 codes ({q.shape[0]}, r, "
                f"{self.code_size}), got {codes.dtype} {codes.shape}"
            )
        p = self._probe(q, full=True)
        return probe_rescore(p.kind, p.qf, p.qw, codes)

    def refine_probe(self, probe: Probe) -> Probe:
        """``probe.LVQ_FULL`` from the primary probe: the same qf, the residual's bits in qw."""
        if not self.residual_bits:
            return super().refine_probe(probe)
        qw = probe.qw.copy()
        qw[:, 1] = self.residual_bits
        return Probe(LVQ_FULL, probe.qf, qw, np.uint8)

    def refine_pool(self, k: int) -> int:
        return max(10 * k, 100) if self.residual_bits else 0

    def default_rerank(self, k: int) -> int:
        # flat recall@10 without re-rank on SciFact (docs/results/lvq_graph_scifact.md): lvq8 0.996,
        # lvq4x4 0.996, lvq4x8 1.000, lvq4 0.942 (1.000 with 20 float32 re-ranked)
        return 0 if self.bits == 8 or self.residual_bits else max(3 * k, 30)

    def state(self):
        return {"mu": self.mu}

    def set_state(self, arrays):
        self.mu = np.ascontiguousarray(arrays["mu"], dtype=np.float32)
        self.trained = True

    def _probe(self, q: np.ndarray, full: bool) -> Probe:
        """Query parameters of ``probe.LVQ`` (primary level) or, with full and a residual, ``probe.LVQ_FULL``."""
        q = np.ascontiguousarray(q, dtype=np.float32)
        m, d = q.shape
        two_level = full and self.residual_bits > 0
        n_q = d if self.bits == 8 else 2 * ((d + 1) // 2)
        qf = np.zeros((m, n_q + 2), dtype=np.float32)
        l2 = self.metric == "l2"
        if l2:
            np.subtract(q, self.mu, out=qf[:, :d])
        else:
            qf[:, :d] = q
            qf[:, n_q] = q @ self.mu
            qf[:, n_q + 1] = q.sum(axis=1)
        qw = np.empty((m, 3), dtype=np.uint64)
        qw[:] = (d, self.residual_bits if two_level else self.bits, l2)
        return Probe(LVQ_FULL if two_level else LVQ, qf, qw, np.uint8)


class Int4Codec(Codec):
    """4 bits per dimension, two per byte: x_j ~ lo_j + step_j * c_j, c_j in 0..15, learned per dimension."""

    family = "int4"

    @property
    def code_size(self) -> int:
        return (self.dim + 1) // 2

    def _fit(self, x, queries=None):
        sample = x[np.random.default_rng(0).permutation(x.shape[0])[:FIT_SAMPLE]]
        mid = 0.5 * (sample.min(axis=0) + sample.max(axis=0))
        half = 0.5 * (sample.max(axis=0) - sample.min(axis=0))
        best = np.full(self.dim, np.inf, dtype=np.float32)
        self.lo = np.empty(self.dim, dtype=np.float32)
        self.step = np.empty(self.dim, dtype=np.float32)
        for frac in CLIP_FRACTIONS:
            lo = (mid - frac * half).astype(np.float32)
            step = np.where(half > 0, 2 * frac * half / 15, 1).astype(np.float32)
            err = ((lo + step * np.clip(np.rint((sample - lo) / step), 0, 15) - sample) ** 2).sum(axis=0)
            better = err < best
            best[better] = err[better]
            self.lo[better] = lo[better]
            self.step[better] = step[better]

    def _encode(self, x):
        return nibble_encode(x, self.lo, (1.0 / self.step).astype(np.float32))

    def decode(self, codes):
        return nibble_decode(np.ascontiguousarray(codes), self.lo, self.step)

    def scorer(self, q) -> Scorer:
        self._require_trained()
        if q.shape[0] >= DECODE_BATCH:
            return DecodeScorer(self, q)
        return ProbeScorer(self.probe(q))

    def probe(self, q) -> Probe:
        self._require_trained()
        q = np.ascontiguousarray(q, dtype=np.float32)
        m, d = q.shape
        n_q = 2 * self.code_size
        if self.metric == "ip":
            qf = np.zeros((m, n_q + 1), dtype=np.float32)
            qf[:, :d] = q * self.step
            qf[:, n_q] = q @ self.lo
        else:
            qf = np.zeros((m, 2 * n_q), dtype=np.float32)
            qf[:, :d] = (q - self.lo) / self.step
            qf[:, n_q : n_q + d] = self.step * self.step
        return Probe(NIBBLE_AFFINE, qf, np.full((m, 1), self.metric == "l2", dtype=np.uint64), np.uint8)

    def default_rerank(self, k: int) -> int:
        # flat recall@10 on SciFact: 0.940 without re-rank, 0.9999 with 20 float32 re-ranked
        return max(3 * k, 30)

    def state(self):
        return {"lo": self.lo, "step": self.step}

    def set_state(self, arrays):
        self.lo = np.ascontiguousarray(arrays["lo"], dtype=np.float32)
        self.step = np.ascontiguousarray(arrays["step"], dtype=np.float32)
        self.trained = True


def _header(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale and bias float32 (n,) each from the float16 headers of LVQ rows uint8 (n, code_size)."""
    halves = np.ascontiguousarray(codes[:, :HEADER_BYTES]).view(np.float16).astype(np.float32)
    return np.ascontiguousarray(halves[:, 0]), np.ascontiguousarray(halves[:, 1])


def _fp16_toward(x: np.ndarray, direction: float) -> np.ndarray:
    """x float32 rounded to float16, moved one float16 step toward ``direction`` where rounding went the other way."""
    with np.errstate(over="ignore"):
        h = x.astype(np.float16)
    wrong = h < x if direction > 0 else h > x
    h[wrong] = np.nextafter(h[wrong], np.float16(direction))
    return h
