"""4-bit fast-scan product quantisation ``pq<M>x4fs``: M sub-spaces, 16 centroids each, two codes per byte.

Flat scans quantise each query's lookup tables (its similarity to the 16 centroids
of every sub-space) to uint8 with one scale and per-sub-space offsets, and sum them
with byte shuffles (``kernels.pq4``). The integer sums only approximate the ADC
scores (each table entry is off by up to half a step), so near-ties can swap:
search re-ranks by default. Index traversals (``probe``) use the float tables.
"""

from __future__ import annotations

import numpy as np

from vecpack.codecs.base import Codec, Probe, Scorer
from vecpack.errors import InvalidInput
from vecpack.kernels.kmeans import kmeans
from vecpack.kernels.pq import pq_decode, pq_encode
from vecpack.kernels.pq4 import BLOCK, fastscan, quantize_tables, to_blocks
from vecpack.kernels.probe import LUT4

K = 16
#: training rows per centroid (k-means on 16 centroids is cheap; more rows steady them)
TRAIN_PER_CENTROID = 1000


class PQ4Codec(Codec):
    family = "pq4fs"
    min_train_rows = K

    def __init__(self, dim: int, metric: str, spec: str, n_sub: int) -> None:
        super().__init__(dim, metric, spec)
        if n_sub < 1 or dim % n_sub:
            raise InvalidInput(f"codec {spec!r}: dimension {dim} is not divisible by {n_sub} sub-spaces")
        self.n_sub = n_sub
        self.sub_dim = dim // n_sub

    @property
    def code_size(self) -> int:
        return (self.n_sub + 1) // 2

    def _fit(self, x, queries=None):
        train = x[np.random.default_rng(0).permutation(x.shape[0])[: TRAIN_PER_CENTROID * K]]
        ds = self.sub_dim
        subspaces = [np.ascontiguousarray(train[:, s * ds : (s + 1) * ds]) for s in range(self.n_sub)]
        self.centroids = np.stack([kmeans(sub, K, seed=s) for s, sub in enumerate(subspaces)])

    def _encode(self, x):
        sub = pq_encode(x, self.centroids)
        packed = sub[:, 0::2].copy()
        packed[:, : self.n_sub // 2] |= sub[:, 1::2] << 4
        return packed

    def decode(self, codes):
        codes = np.ascontiguousarray(codes)
        sub = np.empty((codes.shape[0], 2 * self.code_size), dtype=np.uint8)
        sub[:, 0::2] = codes & 15
        sub[:, 1::2] = codes >> 4
        return pq_decode(np.ascontiguousarray(sub[:, : self.n_sub]), self.centroids)

    def tables(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float ADC tables (m, 2 * code_size, 16) of queries q (m, dim), zero for the padding sub-space, and bias (m,).

        score(code) = bias + sum_s tables[s, code_s]: <q, x> for ip, -||q - x||^2 for l2, x the reconstruction.
        """
        m = q.shape[0]
        qs = q.reshape(m, self.n_sub, self.sub_dim).transpose(1, 0, 2)
        dots = np.matmul(qs, self.centroids.transpose(0, 2, 1)).transpose(1, 0, 2)  # (m, M, 16)
        luts = np.zeros((m, 2 * self.code_size, K), dtype=np.float32)
        if self.metric == "ip":
            luts[:, : self.n_sub] = dots
            bias = np.zeros(m, dtype=np.float32)
        else:
            luts[:, : self.n_sub] = 2 * dots - np.einsum("skd,skd->sk", self.centroids, self.centroids)[None]
            bias = -np.einsum("ij,ij->i", q, q).astype(np.float32)
        return luts, bias

    def scorer(self, q) -> Scorer:
        self._require_trained()
        return FastScanScorer(self, q)

    def probe(self, q) -> Probe:
        self._require_trained()
        luts, bias = self.tables(q)
        qf = np.concatenate([luts.reshape(q.shape[0], -1), bias[:, None]], axis=1)
        return Probe(LUT4, qf, np.zeros((q.shape[0], 1), np.uint64), np.uint8)

    def default_rerank(self, k: int) -> int:
        return max(10 * k, 100)

    def scan_layout(self, codes, done=None):
        """Codes in blocks of 64 rows, each column-major (blocks, code_size, 64), as ``kernels.pq4`` scans them;
        with spare blocks, so that later rows extend it in place (a quarter more than asked)."""
        n = codes.shape[0]
        blocks, rows = done if done is not None else (np.empty((0, self.code_size, BLOCK), np.uint8), 0)
        start = rows - rows % BLOCK  # a partial last block is blocked again
        need = -(-n // BLOCK)
        if need > blocks.shape[0]:
            grown = np.zeros((need + need // 4, self.code_size, BLOCK), dtype=np.uint8)
            grown[: start // BLOCK] = blocks[: start // BLOCK]
            blocks = grown
        to_blocks(np.ascontiguousarray(codes), start, n, blocks, start // BLOCK)
        return blocks

    def state(self):
        return {"centroids": self.centroids}

    def set_state(self, arrays):
        centroids = np.ascontiguousarray(arrays["centroids"], dtype=np.float32)
        if centroids.shape != (self.n_sub, K, self.sub_dim):
            raise InvalidInput(
                f"codec {self.spec!r}: centroids of shape {centroids.shape}, expected {(self.n_sub, K, self.sub_dim)}"
            )
        self.centroids = centroids
        self.trained = True


class FastScanScorer(Scorer):
    """Queries as uint8 tables (m, code_size, 32) for ``kernels.pq4.fastscan``."""

    def __init__(self, codec: PQ4Codec, q: np.ndarray) -> None:
        luts, bias = codec.tables(q)
        lut_u8, self.scale, self.offset = quantize_tables(luts, bias)
        self.luts = np.ascontiguousarray(lut_u8.reshape(q.shape[0], codec.code_size, 2 * K))

    def scan(self, codes, row0, allowed, heap_s, heap_r) -> None:
        fastscan(np.ascontiguousarray(codes), row0, allowed, self.luts, self.scale, self.offset, heap_s, heap_r)

    def scan_layout(self, layout, row0, allowed, heap_s, heap_r) -> None:
        fastscan(None, row0, allowed, self.luts, self.scale, self.offset, heap_s, heap_r, blocks=layout)
