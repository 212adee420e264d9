"""ANN peers (hnswlib, usearch, FAISS HNSW / IVF) built in-process for the graph and IVF benchmark.

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

Measured process RSS growth while building 200,000 x 32 float32 (ip, M=16,
efC=200) against these figures: hnswlib 78 MB vs 55 MB file; usearch 77 MB
vs 55 MB serialized (memory_usage 120 MB); faiss HNSW 59 MB vs 54 MB. So the
serialized figure is a lower bound, about 1.4x low for hnswlib / usearch at
d=32 (less at larger d, where vectors dominate) and ~1.1x for FAISS.
"""

from __future__ import annotations

import math
import os
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
ALL_PEERS = ("hnswlib", "usearch", "faiss-hnsw", "faiss-ivf")
METRICS = ("cosine", "ip", "l2")


@dataclass
class AnnPeer:
    """One built ANN index: ``search(queries float32 (m, d), k, knob_value) -> rows int64 (m, k)``, -1 = missing.

    ``family`` is ``"graph"`` or ``"ivf"``; ``knob`` is ``"ef"`` or ``"nprobe"``
    and ``knob_values`` the sweep to run. ``memory_bytes`` is measured as the
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
    ``ivf_codes`` entry and ``"faiss-ivf-<code>"`` just that code. ``threads`` is
    used to build, ``search_threads`` by every ``search``. A peer whose library
    is not importable, or whose IVF code does not fit (d % m, too few training
    rows), is skipped with a reason. Unknown names, metrics or codes raise
    ValueError.
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

    def keep(result: tuple[AnnPeer | None, str | None]) -> None:
        peer, why = result
        if peer is not None:
            peers.append(peer)
        if why is not None:
            skipped.append(why)

    if "hnswlib" in which:
        keep(_build_hnswlib(xp, metric, threads, search_threads))
    if "usearch" in which:
        keep(_build_usearch(xp, metric, threads, search_threads))
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
