"""ANN peers (hnswlib, usearch, FAISS HNSW / IVF, ScaNN, SVS Vamana) built in-process for the graph and IVF benchmark.

Each peer is built on the same corpus, in the same process, with the same
build thread count, and exposes ``search(queries, k, knob) -> rows int64 (m, k)``
(-1 = missing) plus the knob sweep the benchmark runs:

* ``hnswlib``: ``hnswlib.Index``, M=16, ef_construction=200; knob ``ef`` (``set_ef``);
* ``usearch``: ``usearch.index.Index``, connectivity=16, expansion_add=200, f32
  storage; knob ``ef`` (``expansion_search``);
* ``faiss-hnsw``: ``IndexHNSWFlat(d, 16)``, efConstruction=200; knob ``ef`` (``hnsw.efSearch``);
* ``faiss-ivf`` (one peer per entry of ``ivf_codes``): ``IndexIVFScalarQuantizer(QT_8bit)``
  (``"sq8"``) and ``IndexIVFPQ(m, 8 bits)`` (``"pq<m>"`` = d/8 sub-quantizers, the
  code size of vecpack's pq<m>; ``"pqN"`` = N), flat coarse quantizer, ``nlist``
  lists (default :func:`default_nlist`), trained on at most 100k rows (seeded
  sample); knob ``nprobe``. ``"faiss-ivf-sq8"``-style entries of ``which``
  select single codes.
* ``scann`` (``scann.scann_ops_pybind``, the numpy API): ``builder(x, 10,
  "dot_product" | "squared_l2").tree(num_leaves, training_sample_size=min(n, 100k))
  .score_ah(2, anisotropic_quantization_threshold=0.2).reorder(100)``: a k-means
  tree, asymmetric hashing with 2-dim blocks (16 centres a block, 4 bits a
  dimension pair) and float32 re-ordering. ``num_leaves`` is
  :func:`scann_num_leaves` (n // 100, in [1, 1000]: 1,000 leaves at 100k rows as
  the issue runs, 20 at 2,000). One build, one peer per ``SCANN_REORDER`` depth
  R (``pre_reorder_num_neighbors = max(R, k)``); knob ``leaves_to_search``
  (:func:`leaves_sweep`). One query goes through ``searcher.search``, several
  through ``search_batched`` (``search_batched_parallel`` when
  ``search_threads > 1``).
* ``svs-vamana`` (``scalable-vs``, import ``svs``): ``svs.Vamana.build(
  VamanaBuildParameters(graph_max_degree=R, window_size=200), data, L2 | MIP)``
  with the library's default alpha (1.2 for L2, 0.95 for MIP), for R in
  ``SVS_DEGREES`` and data float32 and float16 (queries stay float32); knob
  ``search_window_size`` (``index.search_window_size = max(w, k)``, the same
  sweep as ef). ``svs-vamana-lvq8`` builds the same graphs over LVQ-8 codes
  (``LVQLoader(VectorDataLoader(fvecs file), primary=8)``; writing the fvecs
  file is not timed, compressing it is). SVS ships LVQ / LeanVec for Intel CPUs
  only, and on others its check may end the process (``exit(1)`` in
  ``svs/cpuid.h``), so an LVQ build is first tried once in a child process
  (:func:`svs_lvq_refusal`); where it fails, the peer is skipped with SVS's message.

Metrics: ``"l2"`` is squared L2, ``"ip"`` inner product, and ``"cosine"`` is
both sides unit-normalised (``vecpack.search.prepare``) + inner product in every
library, so no library pays for norms the others do not compute. Query
preparation is inside the timed search, as it is for vecpack.

Graph knobs: a search needs ``ef >= k``, so ``search`` runs with
``max(ef, k)``; sweep values below k therefore repeat the ``ef = k`` point.

``build_s`` is ``time.perf_counter`` around construction + (train +) add;
the memory measurement below is outside it.

``memory_bytes`` is the size of the built index's data structures, taken the
same way for every library, from its own serialisation (vectors / codes, graph
links, ids, centroids), all of which these libraries keep in RAM:

* hnswlib: size of the ``save_index`` file (``max_elements = n``, so no
  reserved slack). Not counted: the label -> slot hash map (~40 B/vector),
  the visited-list buffers (2 B/vector per search thread) and malloc overhead
  of the upper-level link lists.
* usearch: ``index.serialized_length``. ``index.memory_usage`` is not used:
  it counts what usearch's allocators reserved (capacity grown to a power of
  two, arenas; ~16 MiB even for 2,000 vectors), not what is resident. It and
  ``capacity`` are recorded in the peer's ``note``.
* FAISS: ``faiss.serialize_index(index).nbytes`` (for IVF: codes, int64 ids,
  coarse centroids, quantizer parameters).
* ScaNN: the summed file sizes of ``searcher.serialize(dir)`` (float32 dataset
  for re-ordering, AH codes, datapoint -> leaf tokens, AH codebooks, the
  partitioner's centroids, configs); both reorder peers report the one index.
* SVS: the summed file sizes of ``index.save(config_dir, graph_dir, data_dir)``
  (graph with R slots a vector, float32 / float16 / LVQ data, configs).

Measured process RSS growth while building 200,000 x 32 float32 (ip, M=16,
efC=200) against these figures: hnswlib 78 MB vs 55 MB file; usearch 77 MB
vs 55 MB serialized (memory_usage 120 MB); faiss HNSW 59 MB vs 54 MB. So the
serialized figure is a lower bound, about 1.4x low for hnswlib / usearch at
d=32 (less at larger d, where vectors dominate) and ~1.1x for FAISS.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from vecpack.bench.peers import import_faiss, quiet_stderr
from vecpack.search import prepare

GRAPH_M = 16
EF_CONSTRUCTION = 200
EF_SWEEP = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
NPROBE_SWEEP = (1, 2, 4, 8, 16, 32, 64, 128)
IVF_TRAIN_ROWS = 100_000
PQ_NBITS = 8
SCANN_MAX_LEAVES = 1000
SCANN_ROWS_PER_LEAF = 100  # twice ScaNN's min_partition_size (50)
SCANN_AH_DIMS = 2
SCANN_AVQ_THRESHOLD = 0.2
SCANN_REORDER = (40, 100)
LEAVES_SWEEP = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
SVS_DEGREES = (32, 64)
SVS_BUILD_WINDOW = EF_CONSTRUCTION
ALL_PEERS = ("hnswlib", "usearch", "faiss-hnsw", "faiss-ivf", "scann", "svs-vamana", "svs-vamana-lvq8")
METRICS = ("cosine", "ip", "l2")


@dataclass
class AnnPeer:
    """One built ANN index: ``search(queries float32 (m, d), k, knob_value) -> rows int64 (m, k)``, -1 = missing.

    ``family`` is ``"graph"`` or ``"ivf"``; ``knob`` is ``"ef"``, ``"search_window_size"``
    (SVS; graph), ``"nprobe"`` or ``"leaves_to_search"`` (ScaNN; ivf) and ``knob_values``
    the sweep to run. ``memory_bytes`` is measured as the
    module docstring says; ``note`` says how, per peer.
    """

    name: str
    family: str
    build_s: float
    memory_bytes: int
    knob: str
    search: Callable[[np.ndarray, int, int], np.ndarray]
    knob_values: list[int]
    note: str = ""


def default_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: round(4 sqrt(n)), in [1, n]."""
    return max(1, min(n, round(4 * math.sqrt(n))))


def nprobe_sweep(nlist: int) -> list[int]:
    """``NPROBE_SWEEP`` capped at ``nlist`` (so ``nlist`` itself, the exhaustive probe, ends a short sweep)."""
    return sorted({min(p, nlist) for p in NPROBE_SWEEP})


def scann_num_leaves(n: int) -> int:
    """ScaNN tree leaves for ``n`` vectors: n // SCANN_ROWS_PER_LEAF, in [1, SCANN_MAX_LEAVES]."""
    return max(1, min(SCANN_MAX_LEAVES, n // SCANN_ROWS_PER_LEAF))


def leaves_sweep(num_leaves: int) -> list[int]:
    """``LEAVES_SWEEP`` capped at ``num_leaves`` (so searching every leaf ends a short sweep)."""
    return sorted({min(v, num_leaves) for v in LEAVES_SWEEP})


def _dir_bytes(path: str) -> int:
    """Summed size of the files under ``path``."""
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


@contextmanager
def omp_threads(faiss: Any, threads: int) -> Iterator[None]:
    """FAISS's OpenMP thread count set to ``threads`` for the body, restored afterwards."""
    saved = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(saved)


def _padded(rows: np.ndarray, m: int, k: int) -> np.ndarray:
    """``rows`` (m, <= k) as int64 (m, k), right-padded with -1."""
    out = np.full((m, k), -1, dtype=np.int64)
    out[:, : rows.shape[1]] = rows
    return out


def _ivf_code_size(code: str, d: int) -> tuple[str, int]:
    """("sq8", 0) or ("pq", m) for an ``ivf_codes`` entry; ValueError if unknown."""
    if code == "sq8":
        return "sq8", 0
    if code == "pq<m>":
        return "pq", d // 8
    if code.startswith("pq") and code[2:].isdigit():
        return "pq", int(code[2:])
    raise ValueError(f"unknown IVF code {code!r} (expected 'sq8', 'pq<m>' or 'pqN')")


def _build_hnswlib(x: np.ndarray, metric: str, threads: int, search_threads: int) -> tuple[AnnPeer | None, str | None]:
    try:
        import hnswlib
    except ImportError as exc:
        return None, f"hnswlib peer skipped: hnswlib is not importable ({exc})"
    n, d = x.shape
    t0 = time.perf_counter()
    index = hnswlib.Index(space="l2" if metric == "l2" else "ip", dim=d)
    index.init_index(max_elements=n, ef_construction=EF_CONSTRUCTION, M=GRAPH_M, random_seed=100)
    index.add_items(x, np.arange(n, dtype=np.int64), num_threads=threads)
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hnswlib.bin")
        index.save_index(path)
        memory = os.path.getsize(path)

    def search(q: np.ndarray, k: int, ef: int) -> np.ndarray:
        qp = prepare(q, metric)
        kk = min(k, n)
        if qp.shape[0] == 0 or kk == 0:
            return np.full((qp.shape[0], k), -1, dtype=np.int64)
        index.set_ef(max(ef, kk))
        labels, _ = index.knn_query(qp, k=kk, num_threads=search_threads)
        return _padded(labels.astype(np.int64, copy=False), qp.shape[0], k)

    name = f"hnswlib HNSW M={GRAPH_M} efC={EF_CONSTRUCTION}"
    note = "memory: save_index file size (excludes the label hash map and visited lists)"
    return AnnPeer(name, "graph", build_s, memory, "ef", search, list(EF_SWEEP), note), None


def _build_usearch(x: np.ndarray, metric: str, threads: int, search_threads: int) -> tuple[AnnPeer | None, str | None]:
    try:
        from usearch.index import Index
    except ImportError as exc:
        return None, f"usearch peer skipped: usearch is not importable ({exc})"
    n, d = x.shape
    t0 = time.perf_counter()
    index = Index(
        ndim=d,
        metric="l2sq" if metric == "l2" else "ip",
        dtype="f32",
        connectivity=GRAPH_M,
        expansion_add=EF_CONSTRUCTION,
        expansion_search=EF_SWEEP[0],
    )
    index.add(np.arange(n, dtype=np.uint64), x, threads=threads)
    build_s = time.perf_counter() - t0
    memory = int(index.serialized_length)
    usage = getattr(index, "memory_usage", None)
    note = f"memory: serialized_length; allocators hold memory_usage={usage} B, capacity {index.capacity}"

    def search(q: np.ndarray, k: int, ef: int) -> np.ndarray:
        qp = prepare(q, metric)
        m = qp.shape[0]
        if m == 0 or k == 0:
            return np.full((m, k), -1, dtype=np.int64)
        index.expansion_search = max(ef, k)
        res = index.search(qp, k, threads=search_threads)
        keys = np.asarray(res.keys).reshape(m, -1)
        counts = np.asarray(getattr(res, "counts", [len(res)])).reshape(m, 1)
        rows = np.where(np.arange(keys.shape[1]) < counts, keys.astype(np.int64), -1)
        return _padded(rows, m, k)

    name = f"usearch HNSW M={GRAPH_M} efC={EF_CONSTRUCTION}"
    return AnnPeer(name, "graph", build_s, memory, "ef", search, list(EF_SWEEP), note), None


def _faiss_search(
    faiss: Any, index: Any, metric: str, search_threads: int, set_knob: Callable[[int, int], None]
) -> Callable[[np.ndarray, int, int], np.ndarray]:
    def search(q: np.ndarray, k: int, knob: int) -> np.ndarray:
        qp = prepare(q, metric)
        set_knob(knob, k)
        with omp_threads(faiss, search_threads):
            return index.search(qp, k)[1]

    return search


def _build_faiss_hnsw(faiss: Any, x: np.ndarray, metric: str, threads: int, search_threads: int) -> AnnPeer:
    d = x.shape[1]
    mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    with omp_threads(faiss, threads):
        t0 = time.perf_counter()
        index = faiss.IndexHNSWFlat(d, GRAPH_M, mt)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        index.add(x)
        build_s = time.perf_counter() - t0
    memory = int(faiss.serialize_index(index).nbytes)

    def set_ef(ef: int, k: int) -> None:
        index.hnsw.efSearch = max(ef, k)

    search = _faiss_search(faiss, index, metric, search_threads, set_ef)
    name = f"faiss IndexHNSWFlat M={GRAPH_M} efC={EF_CONSTRUCTION}"
    return AnnPeer(name, "graph", build_s, memory, "ef", search, list(EF_SWEEP), "memory: serialize_index nbytes")


def _build_faiss_ivf(
    faiss: Any,
    x: np.ndarray,
    metric: str,
    threads: int,
    search_threads: int,
    nlist: int,
    kind: str,
    pq_m: int,
    sample: np.ndarray,
) -> AnnPeer:
    d = x.shape[1]
    mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    with omp_threads(faiss, threads), quiet_stderr():
        t0 = time.perf_counter()
        quantizer = faiss.IndexFlat(d, mt)
        if kind == "sq8":
            index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, mt)
        else:
            index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, PQ_NBITS, mt)
        index.train(x[sample])
        index.add(x)
        build_s = time.perf_counter() - t0
    index.referenced_objects = [quantizer]  # keep the coarse quantizer alive as long as the index
    memory = int(faiss.serialize_index(index).nbytes)

    def set_nprobe(nprobe: int, k: int) -> None:
        index.nprobe = max(1, min(nprobe, nlist))

    search = _faiss_search(faiss, index, metric, search_threads, set_nprobe)
    what = "IndexIVFScalarQuantizer(QT_8bit)" if kind == "sq8" else f"IndexIVFPQ(M={pq_m}, nbits={PQ_NBITS})"
    name = f"faiss {what} nlist={nlist}"
    note = "memory: serialize_index nbytes (codes + int64 ids + centroids)"
    return AnnPeer(name, "ivf", build_s, memory, "nprobe", search, nprobe_sweep(nlist), note)


def _build_scann(x: np.ndarray, metric: str, threads: int, search_threads: int) -> tuple[list[AnnPeer], str | None]:
    try:
        from scann import scann_ops_pybind
    except ImportError as exc:
        return [], f"scann peer skipped: scann is not importable ({exc})"
    n = x.shape[0]
    leaves = scann_num_leaves(n)
    with quiet_stderr():  # absl logs the partitioner's training
        t0 = time.perf_counter()
        builder = scann_ops_pybind.builder(x, 10, "squared_l2" if metric == "l2" else "dot_product")
        builder.set_n_training_threads(threads)
        searcher = (
            builder.tree(num_leaves=leaves, num_leaves_to_search=leaves, training_sample_size=min(n, IVF_TRAIN_ROWS))
            .score_ah(SCANN_AH_DIMS, anisotropic_quantization_threshold=SCANN_AVQ_THRESHOLD)
            .reorder(max(SCANN_REORDER))
            .build()
        )
        build_s = time.perf_counter() - t0
    searcher.set_num_threads(search_threads)
    with tempfile.TemporaryDirectory() as tmp:
        searcher.serialize(tmp)
        memory = _dir_bytes(tmp)

    def make_search(reorder: int) -> Callable[[np.ndarray, int, int], np.ndarray]:
        def search(q: np.ndarray, k: int, leaves_to_search: int) -> np.ndarray:
            qp = prepare(q, metric)
            m, kk = qp.shape[0], min(k, n)
            if m == 0 or kk == 0:
                return np.full((m, k), -1, dtype=np.int64)
            args = {
                "final_num_neighbors": kk,
                "leaves_to_search": max(1, min(leaves_to_search, leaves)),
                "pre_reorder_num_neighbors": max(reorder, kk),
            }
            if m == 1:
                idx, dist = searcher.search(qp[0], **args)
                idx, dist = idx[None, :], dist[None, :]
            elif search_threads > 1:
                idx, dist = searcher.search_batched_parallel(qp, **args)
            else:
                idx, dist = searcher.search_batched(qp, **args)
            # a batch pads short result lists with row 0 at distance NaN
            return _padded(np.where(np.isnan(dist), -1, idx.astype(np.int64)), m, k)

        return search

    peers = []
    for reorder in SCANN_REORDER:
        name = f"scann tree-AH{SCANN_AH_DIMS} leaves={leaves} reorder={reorder}"
        note = f"memory: serialize() file sizes; one build shared by the reorder {SCANN_REORDER} curves"
        peers.append(
            AnnPeer(name, "ivf", build_s, memory, "leaves_to_search", make_search(reorder), leaves_sweep(leaves), note)
        )
    return peers, None


def _build_svs_one(
    svs: Any, x: np.ndarray, metric: str, threads: int, search_threads: int, degree: int, storage: str, tmp: str
) -> AnnPeer:
    n = x.shape[0]
    params = svs.VamanaBuildParameters(graph_max_degree=degree, window_size=SVS_BUILD_WINDOW)
    distance = svs.DistanceType.L2 if metric == "l2" else svs.DistanceType.MIP
    if storage == "lvq8":
        path = os.path.join(tmp, "data.fvecs")
        if not os.path.exists(path):
            svs.write_vecs(x, path)
        t0 = time.perf_counter()
        loader = svs.LVQLoader(svs.VectorDataLoader(path, svs.DataType.float32), primary=8)
        index = svs.Vamana.build(params, loader, distance, num_threads=threads)
    else:
        t0 = time.perf_counter()
        data = x if storage == "float32" else x.astype(np.float16)
        index = svs.Vamana.build(params, data, distance, num_threads=threads)
    build_s = time.perf_counter() - t0
    index.num_threads = search_threads
    saved = os.path.join(tmp, f"index_{degree}_{storage}")
    os.makedirs(saved)
    index.save(os.path.join(saved, "config"), os.path.join(saved, "graph"), os.path.join(saved, "data"))
    memory = _dir_bytes(saved)

    def search(q: np.ndarray, k: int, window: int) -> np.ndarray:
        qp = prepare(q, metric)
        m, kk = qp.shape[0], min(k, n)  # k > n would return invalid rows
        if m == 0 or kk == 0:
            return np.full((m, k), -1, dtype=np.int64)
        index.search_window_size = max(window, kk)
        rows, _ = index.search(qp, kk)
        return _padded(rows.astype(np.int64), m, k)

    name = f"svs Vamana R={degree} L={SVS_BUILD_WINDOW} {storage.upper() if storage == 'lvq8' else storage}"
    note = "memory: index.save() file sizes (config, graph, data)"
    return AnnPeer(name, "graph", build_s, memory, "search_window_size", search, list(EF_SWEEP), note)


_LVQ_PROBE = """
import os, tempfile
import numpy as np
import svs
x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "x.fvecs")
    svs.write_vecs(x, path)
    loader = svs.LVQLoader(svs.VectorDataLoader(path, svs.DataType.float32), primary=8)
    params = svs.VamanaBuildParameters(graph_max_degree=8, window_size=16)
    svs.Vamana.build(params, loader, svs.DistanceType.L2, num_threads=1).search(x[:2], 3)
"""


@functools.cache
def svs_lvq_refusal() -> str | None:
    """None if SVS builds and searches a tiny LVQ-8 index in a child process, else why not (its last stderr line)."""
    try:
        done = subprocess.run([sys.executable, "-c", _LVQ_PROBE], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"LVQ probe did not run: {exc}"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return f"exit status {done.returncode}: {lines[-1] if lines else 'no message'}"


def _build_svs(
    x: np.ndarray, metric: str, threads: int, search_threads: int, storages: Sequence[str]
) -> tuple[list[AnnPeer], list[str]]:
    try:
        import svs
    except ImportError as exc:
        return [], [f"svs peer skipped: svs (scalable-vs) is not importable ({exc}) (svs-vamana, svs-vamana-lvq8)"]
    peers: list[AnnPeer] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for storage in storages:
            refusal = svs_lvq_refusal() if storage == "lvq8" else None
            if refusal is not None:  # SVS's LVQ / LeanVec run on Intel CPUs only
                skipped.append(f"svs-vamana-lvq8 skipped: SVS refused the LVQ build ({refusal})")
                continue
            for degree in SVS_DEGREES:
                try:
                    peers.append(_build_svs_one(svs, x, metric, threads, search_threads, degree, storage, tmp))
                except Exception as exc:
                    if storage != "lvq8":
                        raise
                    skipped.append(f"svs-vamana-lvq8 skipped: SVS refused the LVQ build ({exc})")
                    break
    return peers, skipped


def build_ann_peers(
    x: np.ndarray,
    metric: str,
    *,
    threads: int,
    which: Sequence[str] = ALL_PEERS,
    nlist: int | None = None,
    ivf_codes: Sequence[str] = ("sq8", "pq<m>"),
    search_threads: int = 1,
) -> tuple[list[AnnPeer], list[str]]:
    """Build the requested peers on corpus ``x`` (n, d); return (peers, skipped-with-reason messages).

    ``which`` holds names from ``ALL_PEERS``; ``"faiss-ivf"`` builds one peer per
    ``ivf_codes`` entry and ``"faiss-ivf-<code>"`` just that code; ``"scann"``
    one peer per ``SCANN_REORDER`` depth; ``"svs-vamana"`` one per degree and
    float32 / float16, ``"svs-vamana-lvq8"`` one per degree. ``threads`` is
    used to build, ``search_threads`` by every ``search``. A peer whose library
    is not importable, whose IVF code does not fit (d % m, too few training
    rows), or whose LVQ build SVS refuses (non-Intel CPU), is skipped with a
    reason. Unknown names, metrics or codes raise ValueError.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    ivf: list[str] = []
    for w in which:
        if w == "faiss-ivf":
            ivf.extend(ivf_codes)
        elif w.startswith("faiss-ivf-"):
            ivf.append(w.removeprefix("faiss-ivf-"))
        elif w not in ALL_PEERS:
            raise ValueError(f"unknown peer {w!r}; expected one of {ALL_PEERS} or 'faiss-ivf-<code>'")
    ivf = list(dict.fromkeys(ivf))
    xp = prepare(x, metric)
    n, d = xp.shape
    if n == 0:
        raise ValueError("build_ann_peers needs a non-empty corpus")
    parsed = [(code, *_ivf_code_size(code, d)) for code in ivf]  # validate codes before building anything

    peers: list[AnnPeer] = []
    skipped: list[str] = []

    def keep(result: tuple[AnnPeer | list[AnnPeer] | None, str | list[str] | None]) -> None:
        peer, why = result
        if isinstance(peer, AnnPeer):
            peers.append(peer)
        elif peer:
            peers.extend(peer)
        if isinstance(why, str):
            skipped.append(why)
        elif why:
            skipped.extend(why)

    if "hnswlib" in which:
        keep(_build_hnswlib(xp, metric, threads, search_threads))
    if "usearch" in which:
        keep(_build_usearch(xp, metric, threads, search_threads))
    if "scann" in which:
        keep(_build_scann(xp, metric, threads, search_threads))
    storages = ["float32", "float16"] if "svs-vamana" in which else []
    storages += ["lvq8"] if "svs-vamana-lvq8" in which else []
    if storages:
        keep(_build_svs(xp, metric, threads, search_threads, storages))
    if "faiss-hnsw" in which or parsed:
        faiss, why = import_faiss()
        if faiss is None:
            skipped.append(f"{why} (faiss-hnsw, faiss-ivf)")
            return peers, skipped
        if "faiss-hnsw" in which:
            peers.append(_build_faiss_hnsw(faiss, xp, metric, threads, search_threads))
        if parsed:
            lists = default_nlist(n) if nlist is None else nlist
            if not 1 <= lists <= n:
                raise ValueError(f"nlist must be in [1, n={n}], got {lists}")
            rng = np.random.default_rng(0)
            sample = np.sort(rng.choice(n, size=min(n, IVF_TRAIN_ROWS), replace=False))
            for code, kind, pq_m in parsed:
                if kind == "pq" and (pq_m < 1 or d % pq_m):
                    skipped.append(f"faiss-ivf-{code} skipped: d={d} is not divisible into m={pq_m} sub-quantizers")
                elif kind == "pq" and sample.size < 2**PQ_NBITS:
                    skipped.append(f"faiss-ivf-{code} skipped: {sample.size} training rows < {2**PQ_NBITS} centroids")
                else:
                    peers.append(
                        _build_faiss_ivf(faiss, xp, metric, threads, search_threads, lists, kind, pq_m, sample)
                    )
    return peers, skipped
