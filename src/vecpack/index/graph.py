"""Graph index: a Vamana graph (fixed out-degree, int32 adjacency) traversed over compressed codes.

Why Vamana rather than HNSW: one flat layer with a fixed degree stores as one
(n, R) int32 array that mmaps directly; its construction parallelises without
locks (``kernels.graph``); and deletions have a published repair rule
(FreshDiskANN). The hierarchy of HNSW mostly buys a good entry point; here a
search starts from the medoid plus sqrt(n) (at most MAX_SEEDS) sampled rows, all
scored and the best kept as the first beam. On 200k synthetic clustered vectors
this took recall@10 at ef=32 from 0.916 (medoid only) to 0.965.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vecpack.codecs.base import Probe, inliers
from vecpack.codecs.scalar import Int8Codec
from vecpack.errors import CorruptData, InvalidInput
from vecpack.index.base import Index, IndexKind, with_defaults
from vecpack.kernels.graph import add_reverse_edges, graph_search, insert_batch, repair_deleted, trim_rows
from vecpack.kernels.probe import kind_token

DEFAULTS = {"metric": "ip", "degree": 32, "build_ef": 96, "alpha": 1.1, "insert_order": "random", "seed": 0}
INSERT_ORDERS = ("given", "random", "lid")
#: the largest insertion batch, as a fraction of the rows (ParlayANN's prefix doubling stops here)
MAX_BATCH_FRACTION = 0.02
#: during construction rows may hold SLACK * degree neighbours before a re-prune (FreshDiskANN's slack)
SLACK = 1.3
#: how many times a search doubles its width for queries that found fewer than k allowed rows
MAX_EF_GROWTH = 4
#: most rows sampled as extra search starting points
MAX_SEEDS = 1024
#: a filtered search also starts from up to this many passing rows, found among FILTER_DRAWS random rows:
#: passing rows may form islands (a filter correlated with clusters) that the sqrt(n) seeds miss; at 1M rows
#: and 1.1% passing (11 clusters of 1,000) seeds alone gave recall@10 0.63
FILTER_ENTRIES = 256
FILTER_DRAWS = 65_536
#: most rows the build's 8-bit walk codec is fitted on
WALK_SAMPLE = 65_536
LID_NEIGHBOURS = 20
LID_SAMPLE = 4096


def graph_params(params: dict[str, Any]) -> dict[str, Any]:
    """Build parameters with defaults filled in; InvalidInput naming a bad one."""
    out = with_defaults("graph", params, DEFAULTS)
    for name in ("degree", "build_ef"):
        if isinstance(out[name], bool) or not isinstance(out[name], int) or not 2 <= out[name] <= 1024:
            raise InvalidInput(f"graph {name} must be an int in 2..1024, got {out[name]!r}")
    if not isinstance(out["alpha"], int | float) or not 1.0 <= out["alpha"] <= 2.0:
        raise InvalidInput(f"graph alpha must be a number in 1..2, got {out['alpha']!r}")
    if out["insert_order"] not in INSERT_ORDERS:
        raise InvalidInput(f"graph insert_order must be one of {INSERT_ORDERS}, got {out['insert_order']!r}")
    return out


class GraphIndex(Index):
    kind = IndexKind.GRAPH
    search_param = "ef"

    def __init__(self, rows: int, params: dict[str, Any], graph: np.ndarray, entry: int, seeds: np.ndarray) -> None:
        super().__init__(rows, params)
        self.graph = graph
        self.entry = entry  # the medoid: construction starts here
        self.seeds = seeds  # sampled rows where searches also start
        self._entries = np.concatenate([[entry], seeds]).astype(np.int64)

    @classmethod
    def build(cls, vectors, codes, live, params):
        params = graph_params(params)
        n = vectors.shape[0]
        graph = np.full((n, params["degree"]), -1, dtype=np.int32)
        rows = np.flatnonzero(live[:n])
        if rows.size == 0:
            return cls(n, params, graph, 0, np.zeros(0, np.int64))
        index = cls(n, params, graph, _medoid(vectors, rows, params["metric"]), _seeds(rows, params["seed"]))
        index._insert(vectors, insertion_order(vectors, rows[rows != index.entry], params))
        return index

    def extend(self, vectors, codes, live):
        n = vectors.shape[0]
        graph = np.full((n, self.graph.shape[1]), -1, dtype=np.int32)
        graph[: self.rows] = self.graph
        index = GraphIndex(n, self.params, graph, self.entry, _seeds(np.flatnonzero(live[:n]), self.params["seed"]))
        new = np.arange(self.rows, n)[live[self.rows : n] != 0]
        index._insert(vectors, insertion_order(vectors, new, self.params))
        return index

    def _insert(self, vectors: np.ndarray, order: np.ndarray) -> None:
        """Insert rows ``order`` (in that order) in batches that double up to MAX_BATCH_FRACTION of the graph."""
        if order.size == 0:
            return
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        alpha2 = _alpha2(self)
        degree = self.graph.shape[1]
        graph = np.full((x.shape[0], int(SLACK * degree)), -1, dtype=np.int32)
        graph[:, :degree] = self.graph
        walk_codec, walk_codes = _walk_codes(x, order)
        tok = kind_token(walk_codec.probe(x[:1]).kind)
        entries = np.array([self.entry], dtype=np.int64)
        max_batch = max(1, int(MAX_BATCH_FRACTION * graph.shape[0]))
        done, size = 0, 1
        while done < order.size:
            batch = order[done : done + size].astype(np.int64)
            probe = walk_codec.probe(x[batch])
            new_out = insert_batch(x, tok, probe.qf, probe.qw, walk_codes, graph, entries, batch,
                                   self.params["build_ef"], alpha2, degree)
            add_reverse_edges(x, graph, batch, new_out, alpha2)
            done += batch.size
            size = min(2 * size, max_batch)
        self.graph = trim_rows(x, graph, alpha2, degree)

    def search(self, q, probe: Probe, codes, allowed, k_out, *, ef=None, nprobe=None, filtered=False, fallback=None):
        """Beam search of width max(ef, k_out); queries left with fewer than k_out allowed rows
        (deleted or filtered-out rows fill their pools) are searched again with a doubled width, up to
        MAX_EF_GROWTH times. ``filtered``: the beam holds only allowed rows and starts from the allowed
        seeds plus up to FILTER_ENTRIES sampled allowed rows.
        ``fallback`` = (min_allowed, walk_ef) post-filters (``allowed`` is a filter's bitmap): one beam of
        width ef through every row; a query whose beam holds fewer than min_allowed passing rows (the
        filter passes few rows near it) is searched again as ``filtered`` with width walk_ef."""
        ef = self.default_search_param(k_out) if ef is None else ef
        if fallback is None:
            return self._search(probe, codes, allowed, k_out, ef, filtered)
        min_allowed, walk_ef = fallback
        width = max(k_out, min_allowed)
        scores, rows = graph_search(probe.kind, probe.qf, probe.qw, probe.view(codes), self.graph, self._entries,
                                    max(ef, width), allowed, width)
        sparse = np.flatnonzero(rows[:, min_allowed - 1] < 0)
        scores, rows = scores[:, :k_out].copy(), rows[:, :k_out].copy()
        if sparse.size:
            scores[sparse], rows[sparse] = self._search(probe.subset(sparse), codes, allowed, k_out, walk_ef, True)
        return scores, rows

    def _search(self, probe: Probe, codes, allowed, k_out, ef, filtered):
        entries = self._entries
        if filtered:  # start from passing seeds and passing rows sampled across the graph (every island of them)
            draws = np.random.default_rng(0).integers(0, self.rows, min(FILTER_DRAWS, 64 * self.rows))
            entries = np.unique(np.concatenate([entries, draws[allowed[draws] != 0][:FILTER_ENTRIES]]))
            entries = entries[allowed[entries] != 0]
            if entries.size == 0:
                passing = np.flatnonzero(allowed[: self.rows])
                if passing.size == 0:
                    m = probe.qf.shape[0]
                    return np.full((m, k_out), -np.inf, np.float32), np.full((m, k_out), -1)
                entries = passing[:FILTER_ENTRIES]
        codes = probe.view(codes)
        ef = max(ef, k_out)
        scores, rows = graph_search(probe.kind, probe.qf, probe.qw, codes, self.graph, entries, ef, allowed, k_out,
                                    filtered)
        for _ in range(MAX_EF_GROWTH):
            short = np.flatnonzero(rows[:, -1] < 0)
            if short.size == 0 or ef >= self.rows:
                break
            ef *= 2
            scores[short], rows[short] = graph_search(
                probe.kind, probe.qf[short], probe.qw[short], codes, self.graph, entries, ef, allowed, k_out, filtered)
        return scores, rows

    def compact(self, vectors, codes, live, keep):
        covered = keep[keep < self.rows]
        repaired = repair_deleted(np.ascontiguousarray(vectors, dtype=np.float32), self.graph, live, _alpha2(self))
        new_row = np.full(self.rows + 1, -1, dtype=np.int32)  # the last slot maps -1 to -1
        new_row[covered] = np.arange(covered.size, dtype=np.int32)
        graph = new_row[repaired[covered]]
        entry = self.entry if live[self.entry] or covered.size == 0 else int(covered[0])
        seeds = _seeds(np.arange(covered.size), self.params["seed"])
        return GraphIndex(covered.size, self.params, np.ascontiguousarray(graph), max(int(new_row[entry]), 0), seeds)

    def check(self) -> None:
        if self.graph.shape[0] != self.rows or not 0 <= self.entry < max(self.rows, 1):
            raise CorruptData(f"graph index: {self.graph.shape[0]} adjacency rows and entry {self.entry} "
                              f"for {self.rows} rows")
        if self.graph.size and not -1 <= int(self.graph.min()) <= int(self.graph.max()) < self.rows:
            raise CorruptData("graph index: a neighbour id is out of range")
        if self.seeds.size and not 0 <= int(self.seeds.min()) <= int(self.seeds.max()) < self.rows:
            raise CorruptData("graph index: a search seed is out of range")

    def default_search_param(self, k_out):
        return max(64, k_out)

    def arrays(self):
        return {"graph": self.graph, "entry": np.array([self.entry], dtype=np.int64), "seeds": self.seeds}

    @classmethod
    def from_arrays(cls, rows, params, arrays):
        return cls(rows, params, arrays["graph"], int(arrays["entry"][0]), arrays.get("seeds", np.zeros(0, np.int64)))


def _walk_codes(x: np.ndarray, rows: np.ndarray) -> tuple[Int8Codec, np.ndarray]:
    """The 8-bit codec (fitted on up to WALK_SAMPLE of ``rows``) and codes of x that construction searches walk over.

    Reading a quarter of float32's bytes per scored row took the 50k-sentence build's
    searches from 10.1 to about 8 s with the same recall (docs/results/ann_scifact-sentences.md);
    pruning still uses float32. The codes hold n x dim bytes while the build runs. Unit rows rank
    by inner product, others by L2, as the prune's distance does.
    """
    sample = x[inliers(x, np.sort(np.random.default_rng(0).permutation(rows)[:WALK_SAMPLE]))]
    norms = np.einsum("ij,ij->i", sample, sample)
    metric = "ip" if np.all(np.abs(norms - 1.0) < 1e-3) else "l2"
    codec = Int8Codec(x.shape[1], metric, "int8").fit(sample)
    return codec, codec.encode(x)


def _medoid(vectors: np.ndarray, rows: np.ndarray, metric: str) -> int:
    """The row of ``rows`` nearest the mean of the typical rows (outliers would drag the mean away from the rest):
    by L2, or for "ip" by cosine (the nearest by L2 would be a zero row, similar to nothing, when the mean is short).
    """
    core = inliers(vectors, rows)
    chunks = [core[a : a + WALK_SAMPLE] for a in range(0, core.size, WALK_SAMPLE)]  # no copy of every row at once
    mean = (sum(vectors[c].sum(axis=0, dtype=np.float64) for c in chunks) / core.size).astype(np.float32)
    best, entry = np.inf, int(core[0])
    for c in chunks:
        x = vectors[c]
        sq = np.einsum("ij,ij->i", x, x)
        if metric == "l2":
            d = sq - 2.0 * (x @ mean)
        else:
            d = np.where(sq > 0, -(x @ mean) / np.sqrt(np.maximum(sq, 1e-30)), np.inf)
        if d.min() < best:
            best, entry = float(d.min()), int(c[np.argmin(d)])
    return entry


def _seeds(rows: np.ndarray, seed: int) -> np.ndarray:
    """sqrt(len(rows)) (at most MAX_SEEDS) of ``rows``, sampled, ascending: extra starting points of searches."""
    count = min(MAX_SEEDS, int(np.sqrt(rows.size)))
    return np.sort(np.random.default_rng(seed).choice(rows, size=count, replace=False)).astype(np.int64)


def _alpha2(index: GraphIndex) -> np.float32:
    return np.float32(index.params["alpha"] ** 2)


def insertion_order(vectors: np.ndarray, rows: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Rows in the order they are inserted: shuffled (default), as given, or by descending local intrinsic dimension.

    "lid" is the order Elliott & Clark (2024) recommend for HNSW (high-LID points first).
    Measured here (docs/results/insertion_order_*.md) it does not help this graph: 0 to
    -1.3 points of recall@10 against random orders. "given" can cost 10 points when the
    input is correlated (sentences of one document in a row): rows of one insertion batch
    cannot link to each other, so a batch must not hold a whole cluster. Hence "random".
    LID is the maximum-likelihood estimate (Levina & Bickel) from each row's
    LID_NEIGHBOURS nearest rows in a random sample of LID_SAMPLE rows.
    """
    order = params["insert_order"]
    if order == "given" or rows.size < 2:
        return rows
    rng = np.random.default_rng(params["seed"])
    if order == "random":
        return rng.permutation(rows)
    return rows[np.argsort(-local_intrinsic_dim(vectors, rows, rng), kind="stable")]


def local_intrinsic_dim(vectors: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MLE local intrinsic dimensionality (float64 (len(rows),)) of vectors[rows] against a random reference sample."""
    ref = vectors[np.sort(rng.choice(rows, size=min(LID_SAMPLE, rows.size), replace=False))]
    k = min(LID_NEIGHBOURS, ref.shape[0] - 1)
    ref_sq = np.einsum("ij,ij->i", ref, ref)
    lid = np.empty(rows.size)
    for a in range(0, rows.size, 8192):
        xb = vectors[rows[a : a + 8192]]
        d2 = ref_sq[None, :] - 2.0 * (xb @ ref.T) + np.einsum("ij,ij->i", xb, xb)[:, None]
        near = np.sqrt(np.maximum(np.partition(d2, k, axis=1)[:, 1 : k + 1], 1e-12))  # skip self (distance ~0)
        near.sort(axis=1)
        logs = np.log(near / near[:, -1:])
        lid[a : a + xb.shape[0]] = -(k - 1) / np.minimum(logs[:, :-1].sum(axis=1), -1e-12)
    return lid
