"""FAISS peers, built on the same corpus and queried with the same queries and thread counts.

Every peer is a flat (brute-force) index, like vecpack's scan, so the
comparison is codec against codec, not index structure against index structure:

* float32: ``IndexFlatIP`` / ``IndexFlatL2`` (cosine = both sides unit-normalised + inner product);
* float16 / int8: ``IndexScalarQuantizer`` ``QT_fp16`` / ``QT_8bit``;
* binary: ``IndexBinaryFlat`` on sign(x - mean) codes, queries sign(q - mean),
  raw Hamming ranking; and the same plus an exact float32 re-rank of its top-k'
  candidates (numpy gather + batched matmul, timed with the search);
* pq: ``IndexPQ(d, M, 8)``, raw and with the same float32 re-rank.

Query preparation (normalisation, sign codes) is inside the timed search, as
it is for vecpack.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vecpack.search import prepare

RERANK_CHUNK = 128  # queries per gather block in the re-rank (bounds the (b, k', d) gather)


def import_faiss() -> tuple[Any, str | None]:
    """(faiss module, None) or (None, why it is unavailable)."""
    try:
        import faiss
    except ImportError as exc:
        return None, f"FAISS peers skipped: faiss is not importable ({exc})"
    return faiss, None


@dataclass
class Peer:
    """One FAISS configuration: ``search(queries, k, rerank) -> rows int64 (m, k)``."""

    name: str
    short: str
    family: str
    bytes_per_vector: int
    build_s: float
    search: Callable[[np.ndarray, int, int], np.ndarray]
    reranks: list[int] = field(default_factory=lambda: [0])
    note: str = ""


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence C-level stderr (FAISS k-means prints sample-size warnings) for the body."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # captured stderr without a descriptor
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def rerank_rows(x: np.ndarray, x_sq: np.ndarray | None, q: np.ndarray, cand: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k rows among candidate rows ``cand`` int64 (m, c) (-1 = none), numpy gather + matmul.

    ``x`` holds the vectors in the metric's space (unit norm for cosine); with
    ``x_sq`` (squared norms) the score is -||q - x||^2 up to a per-query
    constant, else the inner product.
    """
    m, c = cand.shape
    kk = min(k, c)
    out = np.full((m, k), -1, dtype=np.int64)
    for a in range(0, m, RERANK_CHUNK):
        b = min(a + RERANK_CHUNK, m)
        cr = cand[a:b]
        safe = np.maximum(cr, 0)
        s = np.matmul(x[safe], q[a:b, :, None])[:, :, 0]  # (b, c)
        if x_sq is not None:
            s = 2.0 * s - x_sq[safe]
        s[cr < 0] = -np.inf
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < c else np.broadcast_to(np.arange(c), (b - a, c))
        top_s = np.take_along_axis(s, top, axis=1)
        order = np.take_along_axis(top, np.argsort(-top_s, axis=1, kind="stable"), axis=1)
        rows = np.take_along_axis(cr, order, axis=1)
        out[a:b, :kk] = rows
    return out


def build_peers(
    faiss: Any, corpus: np.ndarray, metric: str, pq_m: int | None, families: set[str], sweep: list[int]
) -> Iterator[Peer]:
    """Yield the peers for the requested codec families, building (training + adding) each as it is yielded."""
    x = prepare(corpus, metric)  # unit norm for cosine
    d = x.shape[1]
    mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    x_sq = np.einsum("ij,ij->i", x, x) if metric == "l2" else None
    flat_name = "IndexFlatL2" if metric == "l2" else "IndexFlatIP"

    def index_search(index: Any) -> Callable[[np.ndarray, int, int], np.ndarray]:
        def search(q: np.ndarray, k: int, rerank: int) -> np.ndarray:
            qp = prepare(q, metric)
            if not rerank:
                return index.search(qp, k)[1]
            cand = index.search(qp, max(k, rerank))[1]
            return rerank_rows(x, x_sq, qp, cand, k)

        return search

    def built(index: Any) -> tuple[Any, float]:
        t0 = time.perf_counter()
        with quiet_stderr():
            if not index.is_trained:
                index.train(x)
            index.add(x)
        return index, time.perf_counter() - t0

    if "float32" in families:
        index, secs = built(faiss.IndexFlat(d, mt))
        yield Peer(flat_name, "Flat", "float32", 4 * d, secs, index_search(index))
    if "float16" in families:
        index, secs = built(faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, mt))
        yield Peer("IndexScalarQuantizer(QT_fp16)", "SQfp16", "float16", 2 * d, secs, index_search(index))
    if "int8" in families:
        index, secs = built(faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, mt))
        yield Peer("IndexScalarQuantizer(QT_8bit)", "SQ8", "int8", d, secs, index_search(index))
    if "binary" in families:
        t0 = time.perf_counter()
        mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        nbits = -(-d // 8) * 8

        def sign_codes(v: np.ndarray) -> np.ndarray:
            bits = np.zeros((v.shape[0], nbits), dtype=np.uint8)
            bits[:, :d] = v > mean
            return np.packbits(bits, axis=1)

        bindex = faiss.IndexBinaryFlat(nbits)
        bindex.add(sign_codes(x))
        secs = time.perf_counter() - t0

        def bsearch(q: np.ndarray, k: int, rerank: int) -> np.ndarray:
            qp = prepare(q, metric)
            cand = bindex.search(sign_codes(qp), max(k, rerank))[1]
            return cand if not rerank else rerank_rows(x, x_sq, qp, cand, k)

        yield Peer(
            "IndexBinaryFlat",
            "BinaryFlat",
            "binary",
            nbits // 8,
            secs,
            bsearch,
            sorted({0, *sweep}),
            "sign(x - mean) codes, Hamming distance; rerank > 0: exact float32 re-rank of the top-k' (numpy)",
        )
    if "pq" in families and pq_m:
        index, secs = built(faiss.IndexPQ(d, pq_m, 8, mt))
        yield Peer(
            f"IndexPQ(M={pq_m}, nbits=8)",
            f"PQ{pq_m}",
            "pq",
            pq_m,
            secs,
            index_search(index),
            sorted({0, *sweep}),
            "ADC scan; rerank > 0: exact float32 re-rank of the top-k' (numpy)",
        )
