"""vecpack's side of the benchmark: array-level codes and scans, and a real collection for end-to-end timing.

``scan_search`` runs the pipeline ``Collection.search`` runs once it holds its
arrays (``vecpack.search.search_rows``: code scan -> optional float32 re-rank ->
sorted top-k), without validation, locking, SQLite or id lookup. It returns row
numbers, like a FAISS ``index.search``, so the two are compared at the same level.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import vecpack
from vecpack.codecs import Codec, make_codec
from vecpack.search import ScanData, prepare, search_rows
from vecpack.storage.segments import TRAIN_ROWS

ADD_CHUNK = 50_000
#: rows of the untimed warm-ups that compile (or load) the kernels a timed fit, encode or collection build runs
WARM_ROWS = 2048


def codec_metric(metric: str) -> str:
    return "l2" if metric == "l2" else "ip"


def train_rows(n: int) -> np.ndarray:
    """The rows a collection trains its codec on when all ``n`` rows are live (same seed, same pick)."""
    pick = np.random.default_rng(0).choice(np.arange(n), size=min(TRAIN_ROWS, n), replace=False)
    return np.sort(pick)


@dataclass
class Encoded:
    codec: Codec
    codes: np.ndarray
    fit_s: float
    encode_s: float
    layout: np.ndarray | None = None  # the codec's scan layout of the codes, as a collection without an index keeps


def encode_corpus(spec: str, corpus: np.ndarray, metric: str) -> Encoded:
    """Fit ``spec`` on the rows a collection would train on, then encode the whole corpus (both timed; the
    encoding includes the codec's scan layout, if it has one)."""
    import time

    x = prepare(corpus, metric)
    warm = make_codec(spec, corpus.shape[1], codec_metric(metric)).fit(x[:WARM_ROWS])  # untimed: numba compiles
    warm.scan_layout(warm.encode(x[:WARM_ROWS]))  # the fit and encode kernels here, not in fit_s / encode_s
    codec = make_codec(spec, corpus.shape[1], codec_metric(metric))
    t0 = time.perf_counter()
    codec.fit(x[train_rows(len(x))])
    t1 = time.perf_counter()
    codes = codec.encode(x)
    layout = codec.scan_layout(codes)
    t2 = time.perf_counter()
    return Encoded(codec, codes, t1 - t0, t2 - t1, layout)


def scan_search(
    codec: Codec,
    codes: np.ndarray,
    vectors: np.ndarray,
    live: np.ndarray,
    q: np.ndarray,
    k: int,
    rerank: int,
    metric: str,
    layout: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) of raw queries ``q`` over sealed ``codes``, through ``Collection.search``'s pipeline.

    Query normalisation (cosine) plus :func:`vecpack.search.search_rows`, the
    array-level search ``Collection.search`` runs once it holds its arrays.
    ``vectors`` are the stored float32 rows (not normalised: the cosine re-rank
    divides by their norms, as the collection does); ``live`` is uint8 (n,); ``layout`` the codec's
    ``scan_layout`` of ``codes``, which a collection without an index scans instead of them.
    Scores are similarities (negative squared distance for l2).
    """
    rerank = 0 if codec.exact else rerank
    return search_rows(prepare(q, metric), k, ScanData(codec, codes, vectors, metric, rerank), live, layout=layout)


class CollectionUnderTest:
    """A temporary on-disk collection holding the corpus, for end-to-end ``Collection.search`` timing."""

    def __init__(self, spec: str, corpus: np.ndarray, ids: list[str], metric: str) -> None:
        import time

        self._tmp = tempfile.TemporaryDirectory(prefix="vecpack-bench-")
        self.db = vecpack.connect(Path(self._tmp.name) / "db")
        warm = self.db.create_collection("warm", dim=corpus.shape[1], metric=metric, codec=spec)
        warm.add(ids[:WARM_ROWS], corpus[:WARM_ROWS])  # untimed: numba compiles the add and optimize kernels here
        warm.optimize()
        self.db.drop_collection("warm")
        # seal once, after the bulk load, so the codec trains on the same rows as encode_corpus
        self.col = self.db.create_collection("bench", dim=corpus.shape[1], metric=metric, codec=spec, seal_rows=1 << 30)
        t0 = time.perf_counter()
        for a in range(0, len(corpus), ADD_CHUNK):
            self.col.add(ids[a : a + ADD_CHUNK], corpus[a : a + ADD_CHUNK])
        t1 = time.perf_counter()
        self.col.optimize()
        t2 = time.perf_counter()
        self.add_s, self.optimize_s = t1 - t0, t2 - t1
        self.row_of = {cid: i for i, cid in enumerate(ids)}

    def search(self, q: np.ndarray, k: int, rerank: int) -> list[list[Any]]:
        return self.col.search(q, k, rerank=rerank)

    def rows(self, hits: list[list[Any]], k: int) -> np.ndarray:
        """Corpus row numbers (m, k) of the hits, -1 padded."""
        out = np.full((len(hits), k), -1, dtype=np.int64)
        for i, hs in enumerate(hits):
            for j, h in enumerate(hs[:k]):
                out[i, j] = self.row_of[h.id]
        return out

    def stats(self) -> dict[str, Any]:
        return self.col.stats()

    def close(self) -> None:
        self.db.close()
        self._tmp.cleanup()
