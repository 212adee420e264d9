"""1-bit codes: the sign of each mean-centred dimension (d/8 bytes per vector).

Reconstruction is x ~ mu + sigma * s with s in {-1, +1}^d, where mu is the
mean and sigma[j] = mean |x_j - mu_j| (the least-squares scale per dimension).
Queries stay in float: they are scaled by sigma, quantised to 4-bit levels and
scored with popcounts against the codes (asymmetric scoring), which ranks far
better than the Hamming distance between two sign codes. Re-ranking with the
float32 vectors restores full precision.
"""

from __future__ import annotations

import numpy as np

from vecpack.codecs.base import Codec, Probe, Scorer
from vecpack.kernels import twins, warm
from vecpack.kernels.binary import binary_scan, quantize_queries, shape_token
from vecpack.kernels.probe import BITS

QUERY_BITS = 4


class BinaryCodec(Codec):
    family = "binary"

    def __init__(self, dim: int, metric: str, spec: str) -> None:
        super().__init__(dim, metric, spec)
        self.words = -(-dim // 64)

    @property
    def code_size(self) -> int:
        return 8 * self.words

    def _fit(self, x, queries=None):
        self.mu = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.sigma = np.abs(x - self.mu).mean(axis=0, dtype=np.float64).astype(np.float32)

    def _encode(self, x):
        bits = np.zeros((x.shape[0], self.words * 64), dtype=np.uint8)
        bits[:, : self.dim] = x > self.mu
        return np.packbits(bits, axis=1, bitorder="little")

    def decode(self, codes):
        bits = np.unpackbits(np.ascontiguousarray(codes), axis=1, bitorder="little")[:, : self.dim]
        return self.mu + self.sigma * (2.0 * bits.astype(np.float32) - 1.0)

    def scorer(self, q):
        self._require_trained()
        return BinaryScorer(self, q, kernels=warm.ready("binary"))

    def probe(self, q) -> Probe:
        self._require_trained()
        s = BinaryScorer(self, q, kernels=True)
        qf = np.stack([s.qa, s.qb, s.qc], axis=1)
        return Probe(BITS, qf, s.planes.reshape(s.planes.shape[0], -1), np.uint64)

    def default_rerank(self, k: int) -> int:
        return max(10 * k, 100)

    def state(self):
        return {"mu": self.mu, "sigma": self.sigma}

    def set_state(self, arrays):
        self.mu = np.ascontiguousarray(arrays["mu"], dtype=np.float32)
        self.sigma = np.ascontiguousarray(arrays["sigma"], dtype=np.float32)
        self.trained = True


class BinaryScorer(Scorer):
    """Queries prepared for ``binary_scan``: 4-bit levels of q * sigma as bit planes.

    With q' = q * sigma ~ lo + delta * u (u integer levels) and codes b in {0, 1}:
    sum_j q'_j s_j = 2 * (lo * popcount(b) + delta * sum_j u_j b_j) - sum_j q'_j.
    ip: <q, x> ~ <q, mu> + sum_j q'_j s_j.
    l2 (q' built from q - mu): -||q - x||^2 ~ 2 sum_j q'_j s_j - ||q - mu||^2 - ||sigma||^2.
    Without ``kernels`` (they compile: ``kernels.warm``), numpy twins compute the same scores.
    """

    def __init__(self, codec: BinaryCodec, q: np.ndarray, kernels: bool) -> None:
        q = np.ascontiguousarray(q, dtype=np.float32)
        shift = codec.mu if codec.metric == "l2" else np.zeros_like(codec.mu)
        self.tokens = (shape_token(codec.words), shape_token(QUERY_BITS))
        if kernels:
            self.planes, lo, delta, total = quantize_queries(q, shift, codec.sigma, codec.words, self.tokens[1])
            self.levels = None
        else:
            self.levels, lo, delta, total = twins.quantize_queries(q, shift, codec.sigma, QUERY_BITS)
        if codec.metric == "ip":
            self.qa, self.qb = 2 * lo, 2 * delta
            self.qc = q @ codec.mu - total
        else:
            qc = q - codec.mu
            self.qa, self.qb = 4 * lo, 4 * delta
            self.qc = -2 * total - np.einsum("ij,ij->i", qc, qc) - float(np.dot(codec.sigma, codec.sigma))
        self.qa, self.qb, self.qc = (np.ascontiguousarray(a, dtype=np.float32) for a in (self.qa, self.qb, self.qc))

    def scan(self, codes, row0, allowed, heap_s, heap_r) -> None:
        if self.levels is not None:
            twins.binary_scan(codes, row0, allowed, self.levels, self.qa, self.qb, self.qc, heap_s, heap_r)
            return
        words = np.ascontiguousarray(codes).view(np.uint64)
        binary_scan(words, row0, allowed, self.planes, self.qa, self.qb, self.qc, heap_s, heap_r, *self.tokens)
