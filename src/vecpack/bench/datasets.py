"""Benchmark datasets: real embedding sets, MNIST, and a fitted synthetic generator.

``load_dataset(spec)`` understands

* ``scifact``, ``msmarco-dl19``: BEIR folders with all-MiniLM-L6-v2 embeddings
  (cosine) and graded relevance labels;
* ``scifact-sentences``: ~50k SciFact sentences embedded with all-MiniLM-L6-v2
  (cosine), SciFact claims as queries, no relevance labels; built once by
  ``python bench/embed_sentences.py`` into :func:`cache_root`;
* ``mnist``: the 10k MNIST test images as 784-d pixel vectors in [0, 1] (l2);
* ``synthetic:N`` or ``synthetic:N:D``: N seeded synthetic vectors of dimension
  D (default 384) whose spectrum and cluster structure are fitted to the
  SciFact all-MiniLM-L6-v2 corpus embeddings (see :func:`synthetic`).

Real data is never copied into the repository; it is looked up under
:func:`data_root` (derived sets under :func:`cache_root`).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import math
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vecpack.errors import InvalidInput, UnknownSpec

BEIR_SETS = ("scifact", "msmarco-dl19")
SENTENCES_SET = "scifact-sentences"
PROFILE_PATH = Path(__file__).parents[1] / "profiles" / "minilm384.npz"  # vecpack/profiles (package data)
_CHUNK_ROWS = 16_384  # generation chunk; fixed so output never depends on threads


@dataclass(repr=False)
class Dataset:
    """A corpus, its queries and (optionally) relevance labels.

    Attributes
    ----------
    corpus : float32 (n, d), C-contiguous.
    queries : float32 (m, d), C-contiguous.
    metric : ``"cosine"``, ``"ip"`` or ``"l2"``.
    corpus_ids, query_ids : str ids, one per row.
    qrels : query id -> {corpus id: grade}, or None without relevance labels.
    texts, query_texts : raw texts per row when the source has them.
    note : provenance; synthetic sets say what they were fitted to.
    """

    name: str
    corpus: np.ndarray
    queries: np.ndarray
    metric: str
    corpus_ids: list[str]
    query_ids: list[str]
    qrels: dict[str, dict[str, int]] | None
    texts: list[str] | None = None
    query_texts: list[str] | None = None
    note: str = ""

    @property
    def dim(self) -> int:
        return int(self.corpus.shape[1])

    def __repr__(self) -> str:
        judged = "none" if self.qrels is None else f"{len(self.qrels)} queries"
        note = f", note={self.note!r}" if self.note else ""
        return (
            f"Dataset({self.name!r}, corpus={self.corpus.shape}, queries={self.queries.shape}, "
            f"metric={self.metric!r}, qrels={judged}{note})"
        )


# --------------------------------------------------------------------------- locating data


def data_root() -> Path | None:
    """The shared data folder, or None when it cannot be found.

    ``$VECPACK_DATA`` wins when set (None if it is not a folder). Otherwise the
    first ``shared/data`` folder found walking up from the working directory,
    then from this file, is used (the repo keeps it at ``../shared/data``).
    """
    env = os.environ.get("VECPACK_DATA")
    if env:
        p = Path(env).expanduser()
        return p if p.is_dir() else None
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for d in (start, *start.parents):
            cand = d / "shared" / "data"
            if cand.is_dir():
                return cand
    return None


def cache_root() -> Path:
    """Base folder for derived datasets: ``$VECPACK_CACHE`` when set, else ``~/.cache/vecpack``.

    The folder may not exist yet; nothing is created here.
    """
    env = os.environ.get("VECPACK_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vecpack"


def load_dataset(spec: str, *, root: Path | None = None, max_queries: int | None = None) -> Dataset:
    """Load a dataset by name.

    Parameters
    ----------
    spec : ``"scifact"``, ``"msmarco-dl19"``, ``"scifact-sentences"``, ``"mnist"`` or ``"synthetic:N[:D]"``.
    root : data folder; defaults to :func:`data_root`. Unused for synthetic specs
        and for ``scifact-sentences``, which is read from ``cache_root()/scifact-sentences``.
    max_queries : keep at most this many queries (the first ones, in file order).
        For synthetic specs it is the number of generated queries (default 1,000).

    Notes
    -----
    BEIR sets keep every query (SciFact 1,109, of which 300 are judged;
    msmarco-dl19 50, of which 43 are judged): recall and speed use them all,
    nDCG skips the unjudged ones. ``scifact-sentences`` has qrels None (ground
    truth is exact kNN) and ids ``<docid>#<k>``. MNIST: the first 9,000 test images are the corpus, the last 1,000
    the queries; ids are row numbers within each array.

    Raises
    ------
    UnknownSpec (a ValueError) for an unknown name, InvalidInput (a ValueError)
    for a malformed synthetic spec, FileNotFoundError when the data is missing.
    """
    if not isinstance(spec, str):
        raise InvalidInput(f"dataset spec must be a str, got {type(spec).__name__}")
    if max_queries is not None and max_queries <= 0:
        raise InvalidInput(f"max_queries must be positive, got {max_queries}")
    if spec.startswith("synthetic"):
        n, d = _parse_synthetic(spec)
        return synthetic(n, d, n_queries=max_queries or 1000)
    if spec == SENTENCES_SET:
        return _load_sentences(cache_root() / SENTENCES_SET, max_queries)
    if spec not in (*BEIR_SETS, "mnist"):
        raise UnknownSpec(
            f"unknown dataset spec {spec!r}; expected one of {', '.join(BEIR_SETS)}, {SENTENCES_SET}, "
            "mnist, synthetic:N[:D]"
        )
    base = root if root is not None else data_root()
    if base is None:
        env = os.environ.get("VECPACK_DATA")
        where = (
            f"VECPACK_DATA={env!r} is not a folder"
            if env
            else f"set VECPACK_DATA, or put it at ../shared/data; searched upwards from {Path.cwd()} "
            f"and {Path(__file__).parent}"
        )
        raise FileNotFoundError(f"dataset {spec!r}: no data folder found ({where})")
    if spec == "mnist":
        return _load_mnist(Path(base) / "mnist", max_queries)
    return _load_beir(spec, Path(base) / spec, max_queries)


def _parse_synthetic(spec: str) -> tuple[int, int]:
    parts = spec.split(":")
    if parts[0] != "synthetic" or len(parts) not in (2, 3):
        raise InvalidInput(f"malformed synthetic spec {spec!r}; expected synthetic:N or synthetic:N:D")
    try:
        nums = [int(p) for p in parts[1:]]
    except ValueError:
        raise InvalidInput(
            f"malformed synthetic spec {spec!r}; N and D must be integers, e.g. synthetic:100000:384"
        ) from None
    return nums[0], (nums[1] if len(nums) == 2 else 384)


def _need(spec: str, *paths: Path, hint: str = "") -> None:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"dataset {spec!r}: missing {', '.join(missing)}{'; ' + hint if hint else ''}")


def _read_ids(path: Path) -> list[str]:
    return [s for s in (line.strip() for line in path.read_text().splitlines()) if s]


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels tsv (``query-id  corpus-id  score``, optional header) -> nested dict."""
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines():
        cols = line.split("\t")
        if len(cols) < 3:
            continue
        try:
            grade = int(cols[2])
        except ValueError:  # header row
            continue
        qrels.setdefault(cols[0], {})[cols[1]] = grade
    return qrels


def _read_texts(path: Path, ids: list[str]) -> list[str] | None:
    """``title + " " + text`` per id from a BEIR jsonl, in ``ids`` order (None if absent)."""
    if not path.is_file():
        return None
    by_id = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                by_id[str(rec["_id"])] = f"{rec.get('title', '')} {rec.get('text', '')}".strip()
    return [by_id.get(i, "") for i in ids]


def _load_beir(spec: str, base: Path, max_queries: int | None) -> Dataset:
    files = [base / f for f in ("corpus.npy", "queries.npy", "corpus_ids.txt", "queries_ids.txt")]
    _need(spec, *files, base / "qrels" / "test.tsv")
    corpus = np.ascontiguousarray(np.load(files[0]), dtype=np.float32)
    queries = np.ascontiguousarray(np.load(files[1]), dtype=np.float32)
    cids, qids = _read_ids(files[2]), _read_ids(files[3])
    if len(cids) != len(corpus) or len(qids) != len(queries):
        raise ValueError(f"dataset {spec!r}: id files do not match the embedding row counts in {base}")
    qrels = _read_qrels(base / "qrels" / "test.tsv")
    qtexts = _read_texts(base / "queries.jsonl", qids)
    keep = list(range(len(qids)))
    if max_queries is not None:
        keep = keep[:max_queries]
    return Dataset(
        name=spec,
        corpus=corpus,
        queries=np.ascontiguousarray(queries[keep]),
        metric="cosine",
        corpus_ids=cids,
        query_ids=[qids[i] for i in keep],
        qrels=qrels,
        texts=_read_texts(base / "corpus.jsonl", cids),
        query_texts=None if qtexts is None else [qtexts[i] for i in keep],
        note="all-MiniLM-L6-v2 embeddings (unit norm)",
    )


def _load_sentences(base: Path, max_queries: int | None) -> Dataset:
    """``scifact-sentences`` from the folder written by ``bench/embed_sentences.py`` (qrels None)."""
    files = [base / f for f in ("corpus.npy", "queries.npy", "corpus_ids.txt", "queries_ids.txt")]
    _need(SENTENCES_SET, *files, hint="build it with `python bench/embed_sentences.py` (about 15 min on CPU)")
    corpus = np.ascontiguousarray(np.load(files[0]), dtype=np.float32)
    queries = np.ascontiguousarray(np.load(files[1]), dtype=np.float32)
    cids, qids = _read_ids(files[2]), _read_ids(files[3])
    if len(cids) != len(corpus) or len(qids) != len(queries):
        raise ValueError(f"dataset {SENTENCES_SET!r}: id files do not match the embedding row counts in {base}")
    if max_queries is not None:
        queries, qids = queries[:max_queries], qids[:max_queries]
    return Dataset(
        name=SENTENCES_SET,
        corpus=corpus,
        queries=np.ascontiguousarray(queries),
        metric="cosine",
        corpus_ids=cids,
        query_ids=qids,
        qrels=None,
        note="SciFact sentences (title + text split on sentence ends), all-MiniLM-L6-v2 (unit norm); "
        "queries are the SciFact claims",
    )


def _read_idx_images(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        buf = f.read()
    magic, n, rows, cols = struct.unpack(">IIII", buf[:16])
    if magic != 2051 or len(buf) != 16 + n * rows * cols:
        raise ValueError(f"{path} is not an IDX image file")
    return np.frombuffer(buf, dtype=np.uint8, offset=16).reshape(n, rows * cols)


def _load_mnist(base: Path, max_queries: int | None) -> Dataset:
    path = base / "t10k-images-idx3-ubyte.gz"
    _need("mnist", path)
    x = _read_idx_images(path).astype(np.float32) / np.float32(255.0)
    n_q = min(1000, len(x) // 10)
    corpus, queries = x[:-n_q], x[-n_q:]
    if max_queries is not None:
        queries = queries[:max_queries]
    return Dataset(
        name="mnist",
        corpus=np.ascontiguousarray(corpus),
        queries=np.ascontiguousarray(queries),
        metric="l2",
        corpus_ids=[str(i) for i in range(len(corpus))],
        query_ids=[str(i) for i in range(len(queries))],
        qrels=None,
        note=f"MNIST t10k pixels / 255; first {len(corpus)} images corpus, last {n_q} queries",
    )


# --------------------------------------------------------------------------- synthetic profile


@dataclass
class Profile:
    """Mean, cluster weights and the between/within-cluster covariance split of an embedding set.

    The total covariance is exactly ``B + W`` with ``B = between_vecs @ diag(between_vals)
    @ between_vecs.T`` (weighted spread of the k-means centroids, rank < K) and
    ``W = within_vecs @ diag(within_vals) @ within_vecs.T`` (pooled within-cluster
    covariance). Eigenvalues are descending.

    Attributes
    ----------
    mean : float32 (d,) mean of the unit-normalised rows.
    between_vals : float32 (r,) eigenvalues of B.
    between_vecs : float32 (d, r) orthonormal eigenvectors of B.
    within_vals : float32 (d,) eigenvalues of W.
    within_vecs : float32 (d, d) orthonormal eigenvectors of W.
    weights : float32 (K,) cluster weights, descending, sum 1.
    anisotropy : Gamma shape ``a`` of the per-cluster axis-variance multipliers
        (inf: every cluster has the pooled shape W); see :func:`fit_profile`.
    query_noise : extra query noise, in units of the within-cluster std.
    n_fit : number of rows the profile was fitted on.
    note : what the profile was fitted to.
    """

    mean: np.ndarray
    between_vals: np.ndarray
    between_vecs: np.ndarray
    within_vals: np.ndarray
    within_vecs: np.ndarray
    weights: np.ndarray
    anisotropy: float = math.inf
    query_noise: float = 0.0
    n_fit: int = 0
    note: str = ""

    _ARRAYS = ("mean", "between_vals", "between_vecs", "within_vals", "within_vecs", "weights")

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def covariance(self) -> np.ndarray:
        """float64 (d, d) total covariance ``B + W``."""
        vb, vw = self.between_vecs.astype(np.float64), self.within_vecs.astype(np.float64)
        return (vb * self.between_vals) @ vb.T + (vw * self.within_vals) @ vw.T

    @property
    def eigvals(self) -> np.ndarray:
        """float64 (d,) eigenvalues of the total covariance, descending."""
        return np.linalg.eigvalsh(self.covariance())[::-1]

    def save(self, path: str | Path) -> None:
        """Write a compressed ``.npz`` (float32 arrays)."""
        arrays = {k: np.asarray(getattr(self, k), dtype=np.float32) for k in self._ARRAYS}
        np.savez_compressed(
            path,
            **arrays,
            anisotropy=self.anisotropy,
            query_noise=self.query_noise,
            n_fit=self.n_fit,
            note=np.str_(self.note),
        )

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                **{k: z[k].astype(np.float32) for k in cls._ARRAYS},
                anisotropy=float(z["anisotropy"]),
                query_noise=float(z["query_noise"]),
                n_fit=int(z["n_fit"]),
                note=str(z["note"]),
            )


@functools.lru_cache(maxsize=1)
def default_profile() -> Profile:
    """The packaged profile fitted to all-MiniLM-L6-v2 SciFact corpus embeddings."""
    return Profile.load(PROFILE_PATH)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def _kmeans(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """Plain Lloyd k-means from k random rows; returns int64 (n,) labels."""
    centers = x[rng.choice(len(x), k, replace=False)]
    for _ in range(iters):
        labels = np.argmin((centers * centers).sum(1) - 2 * x @ centers.T, axis=1)
        counts = np.bincount(labels, minlength=k)
        empty = counts == 0
        centers = _group_means(x, labels, k)
        centers[empty] = x[rng.choice(len(x), int(empty.sum()), replace=False)]
    return np.argmin((centers * centers).sum(1) - 2 * x @ centers.T, axis=1)


def _group_means(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    sums = np.stack([np.bincount(labels, weights=col, minlength=k) for col in x.T], axis=1)
    return sums / np.maximum(np.bincount(labels, minlength=k), 1)[:, None]


def _mean_top1(corpus: np.ndarray, queries: np.ndarray | None = None, m: int = 1000) -> float:
    """Mean best cosine of ``m`` queries (default: the first corpus rows, self excluded)."""
    q = corpus[:m] if queries is None else queries[:m]
    s = q @ corpus.T
    if queries is None:
        s[np.arange(len(q)), np.arange(len(q))] = -np.inf
    return float(s.max(axis=1).mean())


def _bisect_log(f, target: float, lo: float, hi: float, iters: int = 14) -> float:
    """Solve decreasing ``f(t) = target`` on a log scale in ``[lo, hi]``, clamped to the ends."""
    if f(lo) <= target:
        return lo
    if f(hi) >= target:
        return hi
    a, b = math.log(lo), math.log(hi)
    for _ in range(iters):
        mid = 0.5 * (a + b)
        a, b = (mid, b) if f(math.exp(mid)) > target else (a, mid)
    return math.exp(0.5 * (a + b))


def fit_profile(
    x: np.ndarray,
    n_clusters: int = 64,
    seed: int = 0,
    *,
    queries: np.ndarray | None = None,
    iters: int = 20,
    note: str = "",
) -> Profile:
    """Fit a :class:`Profile` to embeddings (rows are unit-normalised first).

    The generative model is a Gaussian mixture put back on the sphere::

        x = normalise(c_k + E_W (sqrt(within_vals * s_k) * g)),   g ~ N(0, I)

    * k-means (``n_clusters``, seeded Lloyd) gives the weights and splits the
      covariance exactly into between-centroid ``B`` and pooled within ``W``;
      centroids ``c_k`` are drawn so their weighted covariance is exactly ``B``,
      so the mixture reproduces the covariance spectrum and the between/within split.
    * ``s_k`` are per-cluster axis-variance multipliers ~ Gamma(a, 1/a) (mean 1,
      renormalised so the pooled shape stays ``W``). Real clusters are much
      flatter than the pooled residual (SciFact: participation ratio ~30-50 per
      cluster vs ~150 pooled), which is what makes real nearest neighbours
      close. The one shape ``a`` is fitted so a same-size synthetic sample has
      the real mean nearest-neighbour cosine.
    * with ``queries``, ``query_noise`` (extra noise along ``W``, in units of the
      within std) is fitted to the real mean query -> nearest-corpus cosine:
      real queries (short claims, questions) lie further from the corpus than
      corpus rows lie from each other.

    Parameters
    ----------
    x : float (n, d) embeddings, n > n_clusters.
    n_clusters : k-means clusters (K).
    queries : optional float (m, d) query embeddings from the same model.
    """
    x = _unit(np.asarray(x, dtype=np.float64))
    n, d = x.shape
    if not 1 <= n_clusters < n:
        raise InvalidInput(f"need 1 <= n_clusters < n rows, got n_clusters={n_clusters}, n={n}")
    labels = _kmeans(x, n_clusters, iters, np.random.default_rng(seed))
    w = np.bincount(labels, minlength=n_clusters) / n
    mean = x.mean(axis=0)
    cent = _group_means(x, labels, n_clusters)
    resid = x - cent[labels]
    _, sv, vt = np.linalg.svd(np.sqrt(w)[:, None] * (cent - mean), full_matrices=False)
    r = int((sv > 1e-6 * max(sv.max(), 1e-30)).sum())
    wv, wvec = np.linalg.eigh(resid.T @ resid / n)
    prof = Profile(
        mean=mean.astype(np.float32),
        between_vals=(sv[:r] ** 2).astype(np.float32),
        between_vecs=np.ascontiguousarray(vt[:r].T, dtype=np.float32),
        within_vals=np.maximum(wv[::-1], 0).astype(np.float32),
        within_vecs=np.ascontiguousarray(wvec[:, ::-1], dtype=np.float32),
        weights=np.sort(w[w > 0])[::-1].astype(np.float32),
        n_fit=n,
        note=note,
    )
    xf = x.astype(np.float32)

    def nn1_corpus(a: float) -> float:
        return _mean_top1(_generate(dataclasses.replace(prof, anisotropy=a), n, d, 0, seed)[0])

    a = _bisect_log(nn1_corpus, _mean_top1(xf), 0.02, 1000.0)
    prof.anisotropy = math.inf if a >= 1000.0 else a
    if queries is not None:
        target = _mean_top1(xf, _unit(np.asarray(queries, dtype=np.float32)))

        def nn1_queries(t: float) -> float:
            c, q = _generate(dataclasses.replace(prof, query_noise=t), n, d, 1000, seed)
            return _mean_top1(c, q)

        t = _bisect_log(nn1_queries, target, 1e-3, 10.0)
        prof.query_noise = 0.0 if t <= 1e-3 else t
    return prof


# --------------------------------------------------------------------------- generator


def _resample(v: np.ndarray, size: int) -> np.ndarray:
    """Resample a descending spectrum to ``size`` points (log-linear in relative position), same sum."""
    v = np.maximum(np.asarray(v, dtype=np.float64), 1e-12 * max(float(np.max(v)), 1e-30))
    if len(v) == size:
        return v.copy()
    t0, t1 = np.linspace(0, 1, len(v)), np.linspace(0, 1, size)
    out = np.exp(np.interp(t1, t0, np.log(v)))
    return out * (v.sum() / out.sum())


def n_clusters_for(profile: Profile, n: int) -> int:
    """Cluster count used for ``n`` rows: the profile's K, growing as sqrt(n) beyond its fit size.

    Topics in real corpora keep appearing as a corpus grows, but sublinearly
    (Heaps-like); sqrt(n) growth (the usual IVF heuristic) keeps the points per
    cluster, and hence neighbour closeness, rising slowly with n as in real
    data, and reduces to the fitted structure at the fitted size.
    """
    k0 = len(profile.weights)
    if n <= profile.n_fit or profile.n_fit <= 0:
        return k0
    return round(k0 * math.sqrt(n / profile.n_fit))


@dataclass
class _Mixture:
    centers: np.ndarray  # float32 (K, d) cluster centres, mean included
    within_t: np.ndarray  # float32 (d, d) within eigenvectors, transposed
    scales: np.ndarray  # float32 (K, d) per-cluster std along each within eigenvector
    cdf: np.ndarray  # float64 (K,) cumulative weights
    query_std: np.ndarray  # float32 (d,) extra query noise std per within eigenvector


def _orthonormal(rng: np.random.Generator, d: int, r: int) -> np.ndarray:
    q, t = np.linalg.qr(rng.standard_normal((d, r)))
    return q * np.sign(np.diag(t))


def _mixture(profile: Profile, n: int, d: int, ss: np.random.SeedSequence) -> _Mixture:
    """Draw the cluster structure for ``n`` rows of dimension ``d`` (independent of chunking)."""
    r_basis, r_centers, r_aniso = (np.random.default_rng(s) for s in ss.spawn(3))
    k = n_clusters_for(profile, n)
    w = _resample(profile.weights, k)
    w /= w.sum()
    bvals, wvals = profile.between_vals.astype(np.float64), profile.within_vals.astype(np.float64)
    if d == profile.dim:
        mean, bvecs, wvecs = profile.mean.astype(np.float64), profile.between_vecs, profile.within_vecs
    else:  # same spectra shapes and variance budget, seeded random orientation; between
        # directions are the leading within directions, as the high-variance axes carry both
        bvals = _resample(bvals, min(len(bvals), d))
        wvals = _resample(wvals, d)
        wvecs = _orthonormal(r_basis, d, d)
        bvecs = wvecs[:, : len(bvals)]
        u = r_basis.standard_normal(d)
        mean = float(np.linalg.norm(profile.mean)) * u / np.linalg.norm(u)
    # centroids: i.i.d. Gaussian coordinates, weighted-centred and whitened so that their
    # weighted covariance is exactly B (needs k > rank, true as k >= the fitted K)
    r = min(len(bvals), k - 1)
    a = r_centers.standard_normal((k, r))
    a -= w @ a
    evals, evecs = np.linalg.eigh((a * w[:, None]).T @ a)
    a = a @ (evecs / np.sqrt(np.maximum(evals, 1e-30))) @ evecs.T
    centers = mean + (a * np.sqrt(bvals[:r])) @ np.asarray(bvecs[:, :r], dtype=np.float64).T
    # per-cluster axis multipliers, renormalised so the pooled within spectrum is exact
    shape = profile.anisotropy
    s = np.ones((k, d)) if math.isinf(shape) else r_aniso.gamma(shape, 1.0 / shape, (k, d)) + 1e-12
    s /= w @ s
    return _Mixture(
        centers=centers.astype(np.float32),
        within_t=np.ascontiguousarray(np.asarray(wvecs).T, dtype=np.float32),
        scales=np.sqrt(wvals * s).astype(np.float32),
        cdf=np.cumsum(w),
        query_std=(profile.query_noise * np.sqrt(wvals)).astype(np.float32),
    )


def _fill(mix: _Mixture, out: np.ndarray, ss: np.random.SeedSequence, queries: bool) -> None:
    """Fill ``out`` (float32 (b, d)) with unit-norm mixture samples from one seed."""
    rng = np.random.Generator(np.random.SFC64(ss))  # ~2x faster normals than PCG64
    b, d = out.shape
    lab = np.minimum(np.searchsorted(mix.cdf, rng.random(b), side="right"), len(mix.cdf) - 1)
    z = rng.standard_normal((b, d), dtype=np.float32)
    z *= mix.scales[lab]
    if queries and mix.query_std.any():
        z += rng.standard_normal((b, d), dtype=np.float32) * mix.query_std
    np.matmul(z, mix.within_t, out=out)
    out += mix.centers[lab]
    out /= np.sqrt(np.einsum("ij,ij->i", out, out))[:, None]


def _generate(profile: Profile, n: int, d: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Corpus float32 (n, d) and queries float32 (n_queries, d); chunked, threaded, deterministic."""
    ss_mix, ss_corpus, ss_queries = np.random.SeedSequence(seed).spawn(3)
    mix = _mixture(profile, n, d, ss_mix)
    corpus = np.empty((n, d), dtype=np.float32)
    queries = np.empty((n_queries, d), dtype=np.float32)
    jobs = []
    for out, ss, is_q in ((corpus, ss_corpus, False), (queries, ss_queries, True)):
        starts = range(0, len(out), _CHUNK_ROWS)
        jobs += [(out[a : a + _CHUNK_ROWS], s, is_q) for a, s in zip(starts, ss.spawn(len(starts)), strict=True)]
    if len(jobs) <= 2:
        for job in jobs:
            _fill(mix, *job)
    else:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(lambda job: _fill(mix, *job), jobs))
    return corpus, queries


def synthetic(n: int, d: int = 384, *, n_queries: int = 1000, seed: int = 0, profile: Profile | None = None) -> Dataset:
    """Seeded synthetic embeddings fitted to real ones (default: MiniLM on SciFact).

    Rows follow the mixture of :func:`fit_profile`: the covariance spectrum,
    between/within-cluster variance split, cluster weights and neighbour
    closeness of the profile, normalised to unit length. For ``d`` other than
    the profile's, the between and within spectra are resampled (log-linear)
    to length ``d`` with the same total variance, in a seeded random
    orthonormal basis. The cluster count grows as sqrt(n) beyond the fitted
    size (:func:`n_clusters_for`). Queries come from the same mixture with
    their own seed stream plus the profile's fitted extra query noise, since
    real queries sit further from the corpus than corpus rows sit from each other.

    Parameters
    ----------
    n, d : corpus rows and dimension (both > 0).
    n_queries : query rows (>= 0).
    seed : same seed, same arguments -> byte-identical arrays.
    profile : defaults to the packaged ``minilm384`` profile.

    Returns
    -------
    Dataset with metric ``"cosine"``, ids ``"0".."n-1"``, qrels None and a
    ``note`` saying the data is synthetic and what it was fitted to.
    """
    for name, v, lo in (("n", n, 1), ("d", d, 1), ("n_queries", n_queries, 0)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise InvalidInput(f"synthetic: {name} must be an integer >= {lo}, got {v!r}")
    prof = profile if profile is not None else default_profile()
    corpus, queries = _generate(prof, int(n), int(d), int(n_queries), seed)
    k = n_clusters_for(prof, n)
    return Dataset(
        name=f"synthetic:{n}:{d}",
        corpus=corpus,
        queries=queries,
        metric="cosine",
        corpus_ids=[str(i) for i in range(n)],
        query_ids=[str(i) for i in range(n_queries)],
        qrels=None,
        note=(
            f"synthetic (seed {seed}, {k} clusters), spectrum and cluster structure fitted to "
            f"{prof.note or 'a fitted profile'}"
        ),
    )
