"""Product quantisation ``pq<M>``: M sub-spaces, 256 centroids each, 1 byte per sub-space.

Scoring is asymmetric (ADC): a query builds one lookup table per sub-space
(its similarity to every centroid), and a code's score is the sum of M table
entries. Large query batches instead decode blocks and use one matrix
product, which computes the same ADC scores faster.
"""

from __future__ import annotations

import numpy as np

from vecpack.codecs.base import Codec, DecodeScorer, Probe, Scorer
from vecpack.errors import InvalidInput
from vecpack.kernels import twins, warm
from vecpack.kernels.kmeans import assign, kmeans
from vecpack.kernels.pq import lut_scan, pq_decode, pq_encode
from vecpack.kernels.probe import LUT

K = 256
#: query batches at least this large use decode + matrix product instead of tables
DECODE_BATCH = 32


class PQCodec(Codec):
    family = "pq"
    min_train_rows = K

    def __init__(self, dim: int, metric: str, spec: str, n_sub: int) -> None:
        super().__init__(dim, metric, spec)
        if n_sub < 1 or dim % n_sub:
            raise InvalidInput(f"codec {spec!r}: dimension {dim} is not divisible by {n_sub} sub-spaces")
        self.n_sub = n_sub
        self.sub_dim = dim // n_sub

    @property
    def code_size(self) -> int:
        return self.n_sub

    def _fit(self, x, queries=None):
        train = x[np.random.default_rng(0).permutation(x.shape[0])[: 100 * K]]
        ds = self.sub_dim
        subspaces = [np.ascontiguousarray(train[:, s * ds : (s + 1) * ds]) for s in range(self.n_sub)]
        self.centroids = np.stack([kmeans(sub, K, seed=s) for s, sub in enumerate(subspaces)])

    def _encode(self, x):
        if warm.ready("pq"):
            return pq_encode(x, self.centroids)
        ds = self.sub_dim  # the kernel compiles (``kernels.warm``): one numpy assignment per sub-space meanwhile
        labels = [assign(np.ascontiguousarray(x[:, s * ds : (s + 1) * ds], dtype=np.float32), self.centroids[s])[0]
                  for s in range(self.n_sub)]
        return np.stack(labels, axis=1).astype(np.uint8)

    def decode(self, codes):
        return (pq_decode if warm.ready("pq") else twins.pq_decode)(np.ascontiguousarray(codes), self.centroids)

    def scorer(self, q):
        self._require_trained()
        if q.shape[0] >= DECODE_BATCH or not warm.ready("pq"):  # the table scan compiles: decode meanwhile
            return DecodeScorer(self, q)
        return LUTScorer(self, q)

    def probe(self, q) -> Probe:
        self._require_trained()
        s = LUTScorer(self, q)
        qf = np.concatenate([s.luts.reshape(s.luts.shape[0], -1), s.bias[:, None]], axis=1)
        return Probe(LUT, qf, np.zeros((qf.shape[0], 1), np.uint64), np.uint8)

    def default_rerank(self, k: int) -> int:
        return max(10 * k, 100)

    def state(self):
        return {"centroids": self.centroids}

    def set_state(self, arrays):
        self.centroids = np.ascontiguousarray(arrays["centroids"], dtype=np.float32)
        self.trained = True


class LUTScorer(Scorer):
    """ADC lookup tables float32 (m, M, 256) for a small batch of queries."""

    def __init__(self, codec: PQCodec, q: np.ndarray) -> None:
        qs = q.reshape(q.shape[0], codec.n_sub, codec.sub_dim).transpose(1, 0, 2)
        dots = np.matmul(qs, codec.centroids.transpose(0, 2, 1)).transpose(1, 0, 2)  # (m, M, 256), batched BLAS
        if codec.metric == "ip":
            self.luts = dots
        else:
            c_sq = np.einsum("mkd,mkd->mk", codec.centroids, codec.centroids)
            self.luts = 2 * dots - c_sq[None]
        self.luts = np.ascontiguousarray(self.luts, dtype=np.float32)
        bias = np.zeros(q.shape[0]) if codec.metric == "ip" else -np.einsum("ij,ij->i", q, q)
        self.bias = bias.astype(np.float32)

    def scan(self, codes, row0, allowed, heap_s, heap_r) -> None:
        lut_scan(np.ascontiguousarray(codes), row0, allowed, self.luts, self.bias, heap_s, heap_r)
