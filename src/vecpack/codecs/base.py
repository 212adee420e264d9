"""The codec contract, and the scorer every reconstructing codec gets for free.

Metric inside codecs is ``"ip"`` or ``"l2"``: a cosine collection hands its
codec unit-normalised vectors and an ``"ip"`` metric. Scores are estimates of
the similarity, larger is better: ``<q, x>`` for ip, ``-||q - x||^2`` for l2.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from vecpack.errors import InvalidInput
from vecpack.kernels import probe as probe_kinds
from vecpack.kernels.probe import probe_scan
from vecpack.kernels.topk import merge_scores


@dataclass(frozen=True)
class Probe:
    """Queries described for ``kernels.probe.score_row`` (one code row at a time, for index traversals).

    kind : one of the kinds in ``kernels.probe``.
    qf : float32 (m, F), qw : uint64 (m, W): per-query parameters of that kind.
    code_dtype : element type the uint8 code rows are viewed as (``codes.view(code_dtype)``).
    """

    kind: int
    qf: np.ndarray
    qw: np.ndarray
    code_dtype: type

    def view(self, codes: np.ndarray) -> np.ndarray:
        """Code rows uint8 (n, code_size) as the (n, elements) array ``score_row`` reads."""
        return codes.view(self.code_dtype)

    def subset(self, queries: np.ndarray) -> Probe:
        """The probe of queries ``queries`` (positions) only."""
        return replace(self, qf=self.qf[queries], qw=self.qw[queries])


def affine_probe(q: np.ndarray, metric: str, lo: np.ndarray, step: np.ndarray, code_dtype: type) -> Probe:
    """Probe for codes decoded as x_j = lo_j + step_j * c_j (see ``kernels.probe``)."""
    m, d = q.shape
    if metric == "ip":
        qf = np.empty((m, d + 1), dtype=np.float32)
        np.multiply(q, step, out=qf[:, :d])
        qf[:, d] = q @ lo
        kind = probe_kinds.AFFINE_IP
    else:
        qf = np.empty((m, 2 * d), dtype=np.float32)
        np.divide(q - lo, step, out=qf[:, :d])
        qf[:, d:] = step * step
        kind = probe_kinds.AFFINE_L2
    return Probe(kind, qf, np.zeros((m, 1), dtype=np.uint64), code_dtype)


#: a sample row counts as an outlier when it lies this many times farther from the per-dimension median than
#: the median row does (the farthest rows of real sets: 1.2x SciFact, 1.1x msmarco-dl19, 1.8x MNIST, 1.3x the
#: synthetic generator). Median and distance hold up while outliers are fewer than half the rows.
OUTLIER_DISTANCE = 5.0


def inliers(x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """The rows of float32 ``x`` (n, d) (of ``rows`` only, if given) to fit on, ascending: all but the outliers.
    A single row of huge values would otherwise set every dimension's range (int8), the mean (binary, LVQ,
    RaBitQ, a graph's entry), a centroid (PQ) or the principal axis (PCA) for every other row: the rows of
    other tenants too. Rows left out are still encoded (codecs with ranges clamp them) and re-ranked exactly
    from float32. Reads ``x`` in chunks: no copy of it."""
    rows = np.arange(x.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return rows
    sample = rows if rows.size <= _MEDIAN_SAMPLE else np.random.default_rng(0).choice(rows, _MEDIAN_SAMPLE, False)
    center = np.median(x[np.sort(sample)], axis=0)
    dist = np.concatenate([np.linalg.norm(x[rows[a : a + _CHUNK]] - center, axis=1)
                           for a in range(0, rows.size, _CHUNK)])
    positive = dist[dist > 0]
    if positive.size == 0:
        return rows
    typical = np.median(dist) or np.median(positive)  # most rows equal to the median row: the others' spread
    return rows[dist <= OUTLIER_DISTANCE * typical]


_MEDIAN_SAMPLE = 65_536
_CHUNK = 65_536


class Scorer(ABC):
    """Prepared queries, ready to be scored against code rows."""

    @abstractmethod
    def scan(
        self,
        codes: np.ndarray,
        row0: int,
        allowed: np.ndarray,
        heap_s: np.ndarray,
        heap_r: np.ndarray,
    ) -> None:
        """Score code rows and merge them into the queries' top-k heaps.

        Parameters
        ----------
        codes : uint8 (b, code_size), rows ``row0 .. row0 + b - 1``.
        allowed : uint8 (b,), 0 for a row that must not be returned (deleted, or not passing a filter).
        heap_s, heap_r : float32 / int64 (m, k) heaps, updated in place.
        """

    def scan_layout(
        self, layout: np.ndarray, row0: int, allowed: np.ndarray, heap_s: np.ndarray, heap_r: np.ndarray
    ) -> None:
        """``scan`` of the first ``len(allowed)`` rows of ``layout``, the codec's ``scan_layout`` of them."""
        raise NotImplementedError(f"{type(self).__name__} scans code rows as stored")


class DecodeScorer(Scorer):
    """Decode a block of codes to float32, then score it with one matrix product.

    For a batch of queries the product runs at BLAS speed and the decode is
    paid once per block for all queries, so this is also the fast path for
    reconstructing codecs (float16, int8, PQ) on batches.
    """

    block_rows = 8192

    def __init__(self, codec: Codec, q: np.ndarray) -> None:
        self.codec = codec
        self.q = q
        self.q_sq = np.einsum("ij,ij->i", q, q) if codec.metric == "l2" else None

    def scan(self, codes, row0, allowed, heap_s, heap_r) -> None:
        for a in range(0, codes.shape[0], self.block_rows):
            b = min(a + self.block_rows, codes.shape[0])
            xb = self.codec.decode(codes[a:b])
            s = block_scores(self.q, xb, self.q_sq)
            merge_scores(s, row0 + a, allowed[a:b], heap_s, heap_r)


def block_scores(q: np.ndarray, xb: np.ndarray, q_sq: np.ndarray | None) -> np.ndarray:
    """Similarities float32 (m, b) of queries q (m, d) to rows xb (b, d): ip, or -squared L2 when q_sq is given."""
    s = q @ xb.T
    if q_sq is not None:
        s *= 2.0
        s -= np.einsum("ij,ij->i", xb, xb)[None, :]
        s -= q_sq[:, None]
    return s


#: flat scans of at least this many queries decode blocks for one matrix product (``DecodeScorer``); fewer
#: score each row in place with the probe (``ProbeScorer``): one int8 query over 20k x 384 rows 3.8 -> 0.5 ms,
#: and for LVQ on 50k rows the row kernel is 5-8x faster for one query, the product faster from 8-32 queries
DECODE_BATCH = 16


class ProbeScorer(Scorer):
    """Flat scan that scores each code row with ``probe.score_row`` (``kernels.probe.probe_scan``): for fewer
    than DECODE_BATCH queries, faster than decoding blocks for a matrix product."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def scan(self, codes, row0, allowed, heap_s, heap_r) -> None:
        p = self.probe
        probe_scan(p.kind, p.qf, p.qw, p.view(np.ascontiguousarray(codes)), row0, allowed, heap_s, heap_r)


class Codec(ABC):
    """Turns float32 vectors (n, dim) into uint8 codes (n, code_size) and back.

    Lifecycle: construct from a spec, ``fit`` on a sample, then ``encode``
    batches; ``state()``/``set_state()`` round-trip the trained parameters.
    """

    family: ClassVar[str]
    #: fewest rows ``fit`` accepts
    min_train_rows: ClassVar[int] = 1
    #: True when scores are exact, so re-ranking with float32 adds nothing
    exact: ClassVar[bool] = False

    def __init__(self, dim: int, metric: str, spec: str) -> None:
        if metric not in ("ip", "l2"):
            raise InvalidInput(f"codec metric must be 'ip' or 'l2', got {metric!r}")
        self.dim = dim
        self.metric = metric
        self.spec = spec
        self.trained = False

    @property
    @abstractmethod
    def code_size(self) -> int:
        """Bytes per encoded vector."""

    def fit(self, x: np.ndarray, queries: np.ndarray | None = None) -> Codec:
        """Learn parameters from a float32 sample (n, dim); returns self.

        queries : optional sample queries (m, dim); only query-aware codecs (LeanVec) use them.
        """
        x = self._check_input(x)
        if queries is not None:
            queries = self._check_input(queries)
        if x.shape[0] < self.min_train_rows:
            raise InvalidInput(
                f"codec {self.spec!r} needs at least {self.min_train_rows} training vectors, got {x.shape[0]}"
            )
        self._fit(x, queries)
        self.trained = True
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Codes uint8 (n, code_size) of float32 vectors (n, dim)."""
        self._require_trained()
        return self._encode(self._check_input(x))

    @abstractmethod
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Float32 reconstructions (n, dim) of codes (n, code_size)."""

    def scorer(self, q: np.ndarray) -> Scorer:
        """A scorer for float32 queries q (m, dim) (already normalised for cosine)."""
        self._require_trained()
        return DecodeScorer(self, q)

    def probe(self, q: np.ndarray) -> Probe:
        """Queries q float32 (m, dim) described for scoring single code rows (graph and IVF traversals)."""
        self._require_trained()
        raise NotImplementedError(f"codec {self.spec!r} has no probe")

    def scan_layout(
        self, codes: np.ndarray, done: tuple[np.ndarray, int] | None = None
    ) -> np.ndarray | None:
        """A copy of sealed code rows (n, code_size) arranged for the fastest flat scan (``Scorer.scan_layout``),
        or None when this codec scans rows as stored.

        done : (layout, rows) an earlier call returned for the first ``rows`` of the same codes; reused
        (rows never change once sealed), possibly extended in place.
        """
        return None

    def default_rerank(self, k: int) -> int:
        """How many candidates to re-score with float32 vectors by default (0 = none)."""
        return 0

    def refine_pool(self, k: int) -> int:
        """How many index candidates to re-score with ``rescore`` (0 = none: ``probe`` already reads the
        whole code). Two-level codecs traverse indexes on their first level and refine with both."""
        return 0

    def rescore(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Scores float32 (m, r) of queries q (m, dim) against their own candidates' codes uint8 (m, r, code_size),
        from the whole code; only codecs with a ``refine_pool`` implement it."""
        raise NotImplementedError(f"codec {self.spec!r} does not refine candidates")

    def refine_probe(self, probe: Probe) -> Probe:
        """The probe that scores whole codes (what ``rescore`` computes), made from ``probe(q)``'s without
        redoing the query's work; only codecs with a ``refine_pool`` implement it."""
        raise NotImplementedError(f"codec {self.spec!r} does not refine candidates")

    def state(self) -> dict[str, np.ndarray]:
        """Trained parameters as named arrays (empty for parameter-free codecs)."""
        return {}

    def set_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore parameters produced by ``state()``."""
        self.trained = True

    def _fit(self, x: np.ndarray, queries: np.ndarray | None) -> None:
        """Codec-specific training; the default codec has nothing to learn."""

    @abstractmethod
    def _encode(self, x: np.ndarray) -> np.ndarray: ...

    def _require_trained(self) -> None:
        if not self.trained:
            raise InvalidInput(f"codec {self.spec!r} is not trained: call fit() first")

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InvalidInput(f"codec {self.spec!r} expects shape (n, {self.dim}), got {x.shape}")
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, dim={self.dim}, metric={self.metric!r})"
