"""FAISS codecs at a byte budget: flat indexes whose codes take at most N bytes per vector.

The configurations, named as FAISS ``index_factory`` strings (d = dimension):

* ``SQ8``, ``SQ4``: ``IndexScalarQuantizer`` ``QT_8bit`` / ``QT_4bit`` (d, d/2 bytes);
* ``PQ<M>``: ``IndexPQ(d, M, 8)`` with 2..16 dimensions per sub-quantizer (M bytes), built as
  ``PQ<M>np`` (the factory's default polysemous training only permutes centroids for Hamming
  search, costs far more than the k-means, and changes no ADC score);
* ``OPQ<M>,PQ<M>``: ``IndexPreTransform(OPQMatrix(d, M), IndexPQ)`` (M bytes);
* ``PQ<M>x4fs`` and ``OPQ<M>,PQ<M>x4fs``: ``IndexPQFastScan(d, M, 4)``, 2..8 dimensions per
  sub-quantizer (M/2 bytes; the index pads its row count to blocks of 32);
* ``RaBitQ<B>``: ``IndexRaBitQ(d, metric, B)``, B = 1..9 bits per dimension (``RaBitQ`` = 1 bit),
  and ``RaBitQfs`` (``IndexRaBitQFastScan``, 1 bit); 4-bit quantised queries (FAISS's default ``qb``);
* ``LSH<nbits>``: ``IndexLSH(d, nbits, rotate_data=True, train_thresholds=True)``, random
  rotation (or projection) then one bit per output dimension, Hamming ranking (nbits/8 bytes);
* ``PCA<d'>,<codec>``: ``IndexPreTransform(PCAMatrix(d, d'))`` before ``SQfp16``, ``SQ8``,
  ``SQ4``, ``RaBitQ``, ``RaBitQ2`` or ``RaBitQ4``, with d' the same fractions of d as vecpack's
  ``pca<d'>`` chains (``vecpack.codecs.space.REDUCE_TO``). PCAMatrix subtracts the training
  mean, which under inner product shifts each score by a per-row -<P mean, P x>; for ip and
  cosine it is therefore trained on the sample and its negation (mean zero: the directions
  of the uncentred second moment, as vecpack's ``pca<d'>`` uses), then the codec after it.

Bytes per vector are the index's own ``sa_code_size()``. Re-ranking re-scores
the top r candidates with exact float32 vectors (``peers.rerank_rows``), as
vecpack's ``search_rows`` does with its own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vecpack.bench.peers import quiet_stderr, rerank_rows
from vecpack.codecs.space import REDUCE_TO
from vecpack.search import prepare

_PCA_CODECS = ("SQfp16", "SQ8", "SQ4", "RaBitQ", "RaBitQ2", "RaBitQ4")


@dataclass
class CodecPeer:
    """One trained FAISS flat index: ``search(queries float32 (m, d), k, rerank) -> rows int64 (m, k)``.

    Queries are raw (normalised inside for cosine); ``rerank`` > 0 re-scores that many
    candidates with exact float32 vectors. ``build_s`` = train + add seconds.
    """

    name: str
    bytes_per_vector: int
    build_s: float
    search: Callable[[np.ndarray, int, int], np.ndarray]


def peer_configs(
    faiss: Any, d: int, max_bytes: int, *, reduce_to: Sequence[float] = REDUCE_TO
) -> list[tuple[str, int]]:
    """(config, bytes per vector) of every configuration above whose codes fit ``max_bytes``, by bytes.

    Cheap: builds untrained index objects only. Configurations FAISS rejects for ``d`` are left out.
    """
    names = ["SQ8", "SQ4"]
    names += [f"{opq}PQ{d // s}" for s in range(2, 17) if d % s == 0 for opq in ("", f"OPQ{d // s},")]
    names += [f"{opq}PQ{d // s}x4fs" for s in range(2, 9) if d % s == 0 for opq in ("", f"OPQ{d // s},")]
    names += ["RaBitQ", *(f"RaBitQ{b}" for b in range(2, 10)), "RaBitQfs"]
    names += [f"LSH{nbits}" for nbits in dict.fromkeys(d * 2**i // 16 * 8 for i in range(5)) if nbits >= 8]
    reduced = sorted({int(d * f) // 8 * 8 for f in reduce_to if 8 <= int(d * f) // 8 * 8 < d}, reverse=True)
    names += [f"PCA{r},{codec}" for r in reduced for codec in _PCA_CODECS]
    out = []
    for name in names:
        try:
            size = int(make_index(faiss, name, d, "ip").sa_code_size())
        except RuntimeError:  # FAISS refuses the shape (e.g. PQ sizes it does not support)
            continue
        if size <= max_bytes:
            out.append((name, size))
    return sorted(out, key=lambda c: (c[1], c[0]))


def make_index(faiss: Any, config: str, d: int, metric: str) -> Any:
    """An untrained FAISS index for a configuration name of :func:`peer_configs`."""
    if config.startswith("LSH"):
        return faiss.IndexLSH(d, int(config[3:]), True, True)
    mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    # "np": no polysemous training (a centroid reordering for Hamming search, ~1000x the k-means time, no ADC effect)
    return faiss.index_factory(d, re.sub(r"(PQ\d+)$", r"\1np", config), mt)


def build_codec_peer(faiss: Any, config: str, xp: np.ndarray, metric: str, train: np.ndarray) -> CodecPeer:
    """Train ``config`` on rows ``train`` of ``xp`` and add all of ``xp``; FAISS's thread count is the caller's.

    Parameters
    ----------
    xp : float32 (n, d), the corpus as ``vecpack.search.prepare(corpus, metric)`` returns it (unit norm for cosine).
    metric : ``"cosine"``, ``"ip"`` or ``"l2"``.
    train : int64 row numbers of the training sample.
    """
    index = make_index(faiss, config, xp.shape[1], metric)
    x_sq = np.einsum("ij,ij->i", xp, xp) if metric == "l2" else None
    sample = np.ascontiguousarray(xp[train])
    t0 = time.perf_counter()
    with quiet_stderr():  # FAISS k-means warns about sample sizes
        if config.startswith("PCA") and metric != "l2":  # see the module docstring; train() keeps a trained map
            faiss.downcast_VectorTransform(index.chain.at(0)).train(np.concatenate([sample, -sample]))
        index.train(sample)
        index.add(xp)
    build_s = time.perf_counter() - t0

    def search(q: np.ndarray, k: int, rerank: int) -> np.ndarray:
        qp = prepare(q, metric)
        if not rerank:
            return index.search(qp, k)[1]
        return rerank_rows(xp, x_sq, qp, index.search(qp, max(k, rerank))[1], k)

    return CodecPeer(config, int(index.sa_code_size()), build_s, search)
