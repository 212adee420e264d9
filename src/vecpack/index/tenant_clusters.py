"""Curator-style tenant search: one shared clustering, and per tenant its own rows grouped by cluster.

A multi-tenant collection with an index also clusters its sealed rows once
(k-means, about sqrt(n) clusters, shared by every tenant; ``TenantClusters``,
saved in the index folder with the index). Each tenant's rows, grouped by
cluster, form its own compact posting lists (``Postings``: the rows plus one
offset per cluster, built on the tenant's first query and cached). A query of a
large tenant ranks the shared centroids, keeps the clusters its tenant has rows
in, and scans exactly the tenant's rows in the nearest of them: its cost follows
the tenant's size, as with an index of its own, while memory stays one shared
structure (4 bytes per row, plus the cached postings). Small tenants are scanned
exactly instead (``planner``).

This is Curator's idea (a shared clustering tree with per-tenant postings) with a
single level: at the sizes measured here one level of sqrt(n) clusters keeps the
centroid ranking under 0.1 ms.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vecpack.errors import CorruptData
from vecpack.kernels.kmeans import assign, kmeans
from vecpack.kernels.rowset import ascending
from vecpack.search import ScanData, search_subset

#: k-means training rows (as an IVF index's coarse quantizer)
TRAIN_ROWS = 65536
#: clusters: sqrt(rows), with at least ROWS_PER_CLUSTER rows per cluster
ROWS_PER_CLUSTER = 39
#: a query visits clusters nearest first until it has visited at least sqrt(clusters) * PROBE_FACTOR of the
#: tenant's clusters and gathered at least CANDIDATES_PER_RESULT * max(k, rerank) of its rows
PROBE_FACTOR = 3
CANDIDATES_PER_RESULT = 256


class TenantClusters:
    """The shared clustering of rows 0 .. rows-1: centroids float32 (c, d) and each row's cluster int32 (rows,)."""

    def __init__(self, centroids: np.ndarray, labels: np.ndarray) -> None:
        self.centroids = centroids
        self.labels = labels
        self._half_sq = (np.einsum("ij,ij->i", centroids, centroids) / 2).astype(np.float32)
        self._postings: dict[int, Postings] = {}

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def build(cls, vectors: np.ndarray, live: np.ndarray, seed: int = 0) -> TenantClusters:
        """Cluster the live rows of vectors float32 (n, d) (prepared) and label every row."""
        rows = np.flatnonzero(live[: vectors.shape[0]])
        n_clusters = int(max(1, min(np.sqrt(rows.size), rows.size // ROWS_PER_CLUSTER)))
        sample = np.sort(np.random.default_rng(seed).permutation(rows)[:TRAIN_ROWS])
        centroids = kmeans(np.ascontiguousarray(vectors[sample]), n_clusters, iters=10, seed=seed)
        return cls(centroids, np.zeros(0, np.int32)).extend(vectors)

    def extend(self, vectors: np.ndarray) -> TenantClusters:
        """A new clustering that also labels rows self.rows .. len(vectors)-1 (same centroids)."""
        new = np.zeros(0, np.int32)
        if vectors.shape[0] > self.rows:
            new = assign(np.ascontiguousarray(vectors[self.rows :]), self.centroids)[0].astype(np.int32)
        return TenantClusters(self.centroids, np.concatenate([self.labels, new]))

    def compact(self, keep: np.ndarray) -> TenantClusters:
        """After compaction: rows keep[i] (ascending) become row i; rows not labelled yet stay unlabelled."""
        return TenantClusters(self.centroids, np.ascontiguousarray(self.labels[keep[keep < self.rows]]))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"tenant_centroids": self.centroids, "tenant_labels": self.labels}

    @classmethod
    def from_arrays(cls, rows: int, arrays: dict[str, Any]) -> TenantClusters | None:
        """The clustering saved among an index's arrays (None if there is none); CorruptData if inconsistent."""
        if "tenant_labels" not in arrays:
            return None
        centroids, labels = np.asarray(arrays["tenant_centroids"]), np.asarray(arrays["tenant_labels"])
        if labels.shape != (rows,) or centroids.ndim != 2 or (
            rows and not 0 <= int(labels.min()) <= int(labels.max()) < centroids.shape[0]
        ):
            raise CorruptData("tenant clusters: labels do not match the rows or the centroids")
        return cls(centroids, labels)

    @property
    def nbytes(self) -> int:
        return self.centroids.nbytes + self.labels.nbytes + sum(p.nbytes for p in self._postings.values())

    def postings(self, tenant_no: int, rows: np.ndarray) -> Postings:
        """Tenant ``tenant_no``'s postings, given its rows (ascending, deleted ones included); cached per tenant."""
        found = self._postings.get(tenant_no)
        if found is None:
            found = self._postings[tenant_no] = Postings(self, rows[rows < self.rows])
        return found

    def forget(self, tenant_no: int) -> None:
        """Drop tenant ``tenant_no``'s cached postings (deactivation)."""
        self._postings.pop(tenant_no, None)


class Postings:
    """One tenant's rows grouped by shared cluster: ``rows`` int32, cluster c's at rows[offsets[c]:offsets[c+1]]."""

    def __init__(self, clusters: TenantClusters, rows: np.ndarray) -> None:
        self.clusters = clusters
        labels = clusters.labels[rows]
        self.rows = rows[np.argsort(labels, kind="stable")].astype(np.int32)
        self.offsets = np.zeros(clusters.centroids.shape[0] + 1, np.int64)
        np.cumsum(np.bincount(labels, minlength=clusters.centroids.shape[0]), out=self.offsets[1:])

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.offsets.nbytes

    def candidates(self, q: np.ndarray, width: int) -> np.ndarray:
        """The rows (int64) of the nearest clusters to one query q float32 (d,): see PROBE_FACTOR."""
        clusters = self.clusters
        counts = np.diff(self.offsets)
        owned = np.flatnonzero(counts)
        if owned.size == 0:
            return np.zeros(0, np.int64)
        # L2 to the centroids, as rows were assigned (cosine centroids are not unit vectors)
        order = owned[np.argsort((clusters._half_sq - clusters.centroids @ q)[owned])]
        gathered = np.cumsum(counts[order])
        enough_rows = int(np.searchsorted(gathered, CANDIDATES_PER_RESULT * width)) + 1
        enough_clusters = round(PROBE_FACTOR * np.sqrt(clusters.centroids.shape[0]))
        chosen = order[: max(enough_rows, enough_clusters)]
        return np.concatenate([self.rows[self.offsets[c] : self.offsets[c + 1]] for c in chosen]).astype(np.int64)

    def search(
        self, q: np.ndarray, k: int, tail: np.ndarray, live: np.ndarray, data: ScanData
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) (m, k) of queries q (m, d) over the tenant's live rows (``live``: 0 = deleted) of
        ``data`` in its nearest clusters, plus ``tail`` (its live rows the clustering does not cover yet,
        ascending)."""
        width = max(k, data.rerank)
        scores = np.empty((q.shape[0], k), np.float32)
        rows = np.empty((q.shape[0], k), np.int64)
        for i in range(q.shape[0]):
            # live rows only, in row order (a 10k-row microbenchmark read them ~20% faster than in cluster order;
            # end to end at 1M the gain was within noise)
            picked = np.concatenate([ascending(self.candidates(q[i], width), self.clusters.rows, live), tail])
            scores[i], rows[i] = search_subset(q[i : i + 1], k, picked, data)
        return scores, rows
