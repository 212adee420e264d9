"""Orchestration: load a dataset, measure every codec and its FAISS peer, write JSON, markdown and a plot."""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vecpack.bench import ours
from vecpack.bench import peers as peers_mod
from vecpack.bench.datasets import Dataset, load_dataset
from vecpack.bench.metrics import ndcg_at_k, recall_at_k
from vecpack.bench.timing import best_time, cpu_busy, limit_threads, load_average, machine_info
from vecpack.codecs import make_codec
from vecpack.errors import InvalidInput
from vecpack.search import exact_knn
from vecpack.validate import MAX_K

DEFAULT_SWEEP = (0, 20, 50, 100, 200)
Timer = Callable[[Callable[[], Any]], float]
FAMILY_ORDER = ("float32", "float16", "int8", "binary", "pq")


def default_codecs(dim: int) -> list[str]:
    """float32, float16, int8, binary and pq48 (pq<d/8> for d != 384; no pq when 8 does not divide d)."""
    specs = ["float32", "float16", "int8", "binary"]
    if dim == 384:
        specs.append("pq48")
    elif dim % 8 == 0:
        specs.append(f"pq{dim // 8}")
    return specs


def file_stem(name: str) -> str:
    """A file-name-safe stem for a dataset name (``synthetic:2000:64`` -> ``synthetic-2000-64``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "dataset"


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


class _Steps:
    """A rich progress bar over the benchmark's steps, or nothing."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.progress = None
        if enabled:
            try:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            except ImportError:
                return
            self.progress = Progress(
                TextColumn("[bold]{task.description:<48}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=False,
            )
            self.task = self.progress.add_task("benchmark", total=total)

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        if self.progress is not None:
            self.progress.update(self.task, description=description)
        yield
        if self.progress is not None:
            self.progress.advance(self.task)

    def set_total(self, total: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, total=total)

    def __enter__(self) -> _Steps:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description="done")
            self.progress.stop()


@dataclass(frozen=True)
class _Run:
    """What every measurement of one benchmark run shares: the dataset, the timed batch, k, thread counts, the
    re-rank sweep, the timer, the quality function, the progress steps and FAISS (None without peers)."""

    ds: Dataset
    batch: np.ndarray
    k: int
    threads: list[int]
    sweep: list[int]
    timer: Timer
    evaluate: Callable[[np.ndarray], dict[str, Any]]
    steps: _Steps
    faiss: Any

    def qps(self, fn: Callable[[], Any]) -> dict[str, float]:
        """Queries per second of ``fn`` (one call answers the timed batch), per thread count."""
        out = {}
        for t in self.threads:
            with limit_threads(t, self.faiss):
                out[str(t)] = _r(len(self.batch) / self.timer(fn), 1)
        return out


def run_benchmark(
    dataset: str,
    out_dir: Path,
    *,
    codecs: list[str] | None = None,
    k: int = 10,
    n_queries: int = 1000,
    threads: list[int] | None = None,
    peers: bool = True,
    progress: bool = True,
    sweep: list[int] | None = None,
    repeats: int = 3,
    min_time_s: float = 0.3,
) -> dict[str, Any]:
    """Benchmark vecpack's codecs (and FAISS peers) on one dataset; write ``<name>.json/.md/.png`` to ``out_dir``.

    Parameters
    ----------
    dataset : ``scifact``, ``msmarco-dl19``, ``mnist`` or ``synthetic:N[:D]``.
    out_dir : folder for the result files (created).
    codecs : codec specs (``"pq"`` alone = ``pq<d/8>``); default :func:`default_codecs`.
    k : neighbours per query (recall@k, nDCG@k).
    n_queries : queries per timed batch; datasets with fewer queries are tiled up to it.
    threads : thread counts to time at; default ``[1, os.cpu_count()]``.
    peers : also run FAISS (skipped with a note when faiss is not importable).
    progress : show a rich progress bar.
    sweep : re-rank depths timed for binary and PQ (plus the codec default); default 0, 20, 50, 100, 200.
    repeats, min_time_s : each QPS is the best of at least ``repeats`` timed calls, repeated (up to 25)
        until they add up to ``min_time_s`` seconds, after one warm-up call.

    Returns
    -------
    The JSON-serialisable result dict that is also written to ``<name>.json``.
    """
    _check_k(k)
    if n_queries < 1:
        raise InvalidInput(f"n_queries must be >= 1, got {n_queries}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = sorted({max(1, int(t)) for t in (threads or [1, os.cpu_count() or 1])})
    sweep_base = sorted(set(DEFAULT_SWEEP if sweep is None else sweep))
    timer = functools.partial(best_time, repeats=repeats, min_time_s=min_time_s)
    timing = {"repeats": repeats, "min_time_s": min_time_s, "max_repeats": 25, "warmup": 1}
    notes: list[str] = []
    load_start = load_average()
    busy_start = cpu_busy()
    faiss = None
    if peers:
        faiss, why = peers_mod.import_faiss()
        if why:
            notes.append(why)

    with _Steps(progress, 3) as steps:
        with steps.step(f"loading {dataset}"):
            ds, specs, families = _load(dataset, codecs, n_queries, notes)
            steps.set_total(3 + 2 * len(specs) + (len(families) if faiss is not None else 0))

        with steps.step(f"queries and exact top-{k}"):
            batch = _timed_batch(ds, dataset, n_queries)
            truth, _ = exact_knn(ds.corpus, ds.queries, k, ds.metric)
            evaluate = _evaluator(ds, truth, k)
            result = _new_result(ds, k, n_queries, threads, timing, evaluate(truth), notes)

        run = _Run(ds, batch, k, threads, sweep_base, timer, evaluate, steps, faiss)
        for spec in specs:
            result["codecs"].append(_measure_codec(spec, run))
        if faiss is not None:
            result["peers"] = _measure_peers(run, specs, families)
            result["comparisons"] = _compare(result)

        _note_thread_scaling(result, threads, notes)
        _record_machine(result, faiss, load_start, busy_start, notes)
        with steps.step("writing results"):
            _write_results(result, out_dir)
    return result


def _load(
    dataset: str, codecs: list[str] | None, n_queries: int, notes: list[str]
) -> tuple[Dataset, list[str], set[str]]:
    """(the dataset, the codec specs to run, their codec families); skipped specs are explained in ``notes``.

    Synthetic sets generate ``n_queries`` queries; real sets keep all theirs (quality uses every one)."""
    ds = load_dataset(dataset, max_queries=n_queries if dataset.startswith("synthetic") else None)
    d = ds.corpus.shape[1]
    specs = _resolve_specs(codecs, d, ds.metric, notes)
    families = {make_codec(s, d, ours.codec_metric(ds.metric)).family for s in specs}
    return ds, specs, families


def _timed_batch(ds: Dataset, dataset: str, n_queries: int) -> np.ndarray:
    """The timed batch: the dataset's first ``n_queries`` queries, repeated when it has fewer (contiguous).

    InvalidInput when the dataset has no queries."""
    m_eval = len(ds.queries)
    if m_eval == 0:
        raise InvalidInput(f"dataset {dataset!r} has no queries")
    reps = -(-n_queries // m_eval)
    return np.ascontiguousarray(np.tile(ds.queries, (reps, 1))[:n_queries])


def _new_result(
    ds: Dataset,
    k: int,
    n_queries: int,
    threads: list[int],
    timing: dict[str, Any],
    exact_quality: dict[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    """The result dict before any measurement: the setup, the exact reference, empty codecs / peers /
    comparisons, and ``notes`` itself (the list, so notes added later land in the result)."""
    n, d = ds.corpus.shape
    m_eval = len(ds.queries)
    return {
        "dataset": ds.name,
        "note": ds.note,
        "n": n,
        "d": d,
        "metric": ds.metric,
        "k": k,
        "queries": {
            "unique": m_eval,
            "batch": n_queries,
            "tiled": n_queries > m_eval,  # the batch repeats the queries
            "subset": n_queries < m_eval,
            "judged": exact_quality["judged"],
        },
        "threads": threads,
        "timing": timing,
        "exact": {
            "recall@k": 1.0,
            "ndcg@k": exact_quality["ndcg@k"],
            "truth": "vecpack.search.exact_knn (numpy float32 brute force)",
        },
        "codecs": [],
        "peers": [],
        "comparisons": [],
        "notes": notes,
    }


def _measure_peers(run: _Run, specs: list[str], families: set[str]) -> list[dict[str, Any]]:
    """One FAISS flat peer per codec family in ``families`` (in FAMILY_ORDER; pq only when a pq spec sets its
    size), each built and measured in its own step, re-ranked at the sweep depths and the codecs' default."""
    ds = run.ds
    n, d = ds.corpus.shape
    pq_m = next((make_codec(s, d, "ip").code_size for s in specs if s.startswith("pq")), None)
    sweep_peer = sorted({r for r in run.sweep if r <= n} | {_default_rerank(specs, d, ds.metric, run.k)})
    built = peers_mod.build_peers(run.faiss, ds.corpus, ds.metric, pq_m, families, sweep_peer)
    measured = []
    for fam in [f for f in FAMILY_ORDER if f in families]:
        if fam == "pq" and not pq_m:
            continue
        with run.steps.step(f"FAISS {fam}"):
            measured.append(_measure_peer(next(built), run))
    return measured


def _note_thread_scaling(result: dict[str, Any], threads: list[int], notes: list[str]) -> None:
    """Add a note naming the codec runs whose scan is slower at the most threads than at the fewest."""
    if len(threads) < 2:
        return
    t1, tn = str(threads[0]), str(threads[-1])
    slower = [
        f"{c['name']} (rerank {run['rerank']})"
        for c in result["codecs"]
        for run in c["runs"]
        if run["qps"][tn] < run["qps"][t1]
    ]
    if slower:
        notes.append(
            f"vecpack's scan is slower at {tn} threads than at {t1} for: {', '.join(slower)}. Causes seen "
            "so far: other processes taking a core; and, for the BLAS-based scans (float32, float16, "
            "int8, PQ batches, which alternate OpenBLAS's thread pool and numba's OpenMP pool block by "
            "block), the two pools spin-waiting against each other (OMP_WAIT_POLICY=PASSIVE avoids it)."
        )


def _record_machine(
    result: dict[str, Any], faiss: Any, load_start: list[float] | None, busy_start: float | None, notes: list[str]
) -> None:
    """Set ``result["machine"]`` (machine_info, load average and CPU busy share before the run); add a note
    when other processes kept the CPU at least 25% busy."""
    result["machine"] = machine_info(faiss)
    result["machine"]["load_average_start"] = load_start
    result["machine"]["cpu_busy_start"] = busy_start
    if busy_start is not None and busy_start >= 0.25:
        notes.append(
            f"Other processes kept the CPU {busy_start:.0%} busy just before the run started: timings, "
            "multi-thread ones above all, include waiting for cores."
        )


def _write_results(result: dict[str, Any], out_dir: Path) -> None:
    """Set ``result["files"]`` and write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` to ``out_dir``."""
    from vecpack.bench import report

    stem = file_stem(result["dataset"])
    result["files"] = {"json": f"{stem}.json", "markdown": f"{stem}.md", "plot": f"{stem}.png"}
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(report.markdown(result))
    report.plot(result, out_dir / f"{stem}.png")


def _resolve_specs(codecs: list[str] | None, d: int, metric: str, notes: list[str]) -> list[str]:
    if codecs is None:
        specs = default_codecs(d)
        if not any(s.startswith("pq") for s in specs):
            notes.append(f"pq skipped: 8 does not divide d={d}")
        return specs
    specs = []
    for raw in codecs:
        spec = raw.strip().lower()
        if spec == "pq":
            if d % 8:
                notes.append(f"pq skipped: 8 does not divide d={d}")
                continue
            spec = "pq48" if d == 384 else f"pq{d // 8}"
        m = re.fullmatch(r"pq(\d+)", spec)
        if m and (int(m.group(1)) < 1 or d % int(m.group(1))):
            notes.append(f"{spec} skipped: {m.group(1)} sub-spaces do not divide d={d}")
            continue
        make_codec(spec, d, ours.codec_metric(metric))  # UnknownSpec for anything else
        if spec not in specs:
            specs.append(spec)
    return specs


def _default_rerank(specs: list[str], d: int, metric: str, k: int) -> int:
    return max((make_codec(s, d, ours.codec_metric(metric)).default_rerank(k) for s in specs), default=0)


def _evaluator(ds: Any, truth: np.ndarray, k: int) -> Callable[[np.ndarray], dict[str, Any]]:
    """rows (m, k) for all the dataset's queries -> {"recall@k", "ndcg@k", "judged"}."""
    judged = 0 if ds.qrels is None else sum(1 for q in ds.query_ids if ds.qrels.get(q))

    def evaluate(rows: np.ndarray) -> dict[str, Any]:
        rows = np.asarray(rows)
        out: dict[str, Any] = {"recall@k": recall_at_k(rows, truth, k), "ndcg@k": None, "judged": judged}
        if judged:
            ranked = [[ds.corpus_ids[r] for r in row if r >= 0] for row in rows.tolist()]
            # exponential gains (2^grade - 1), as in the reference figures (msmarco-dl19: 0.704);
            # SciFact's labels are binary, so both gain forms agree there
            out["ndcg@k"] = ndcg_at_k(ranked, ds.query_ids, ds.qrels, k, gain="exponential")
        return out

    return evaluate


def _measure_codec(spec: str, run: _Run) -> dict[str, Any]:
    """One codec: fit + encode, scan-level quality and QPS at each re-rank depth, then end to end through a
    collection at its default and without re-ranking."""
    ds, batch, k, evaluate, steps = run.ds, run.batch, run.k, run.evaluate, run.steps
    n, d = ds.corpus.shape
    metric = ds.metric
    with steps.step(f"vecpack {spec}: fit + encode, scan level"):
        enc = ours.encode_corpus(spec, ds.corpus, metric)
        codec = enc.codec
        default = 0 if codec.exact else codec.default_rerank(k)
        # codecs that re-rank by default get the sweep (for the Pareto curve); the others run as configured
        reranks = sorted({r for r in run.sweep if r <= n} | {0, default}) if default else [0]
        live = np.ones(n, dtype=np.uint8)
        runs = []
        for r in reranks:

            def fn(q: np.ndarray = batch, r: int = r) -> tuple[np.ndarray, np.ndarray]:
                return ours.scan_search(codec, enc.codes, ds.corpus, live, q, k, r, metric, enc.layout)

            quality = evaluate(fn(ds.queries)[1])
            runs.append(
                {
                    "rerank": r,
                    "recall@k": _r(quality["recall@k"]),
                    "ndcg@k": _r(quality["ndcg@k"]),
                    "qps": run.qps(fn),
                }
            )
    with steps.step(f"vecpack {spec}: collection, end to end"):
        cut = ours.CollectionUnderTest(spec, ds.corpus, ds.corpus_ids, metric)
        try:
            stats = cut.stats()
            for point in runs:
                r = point["rerank"]
                if r not in (0, default):
                    continue
                hits = cut.search(ds.queries, k, r)
                e2e = evaluate(cut.rows(hits, k))
                point["recall@k_e2e"] = _r(e2e["recall@k"])
                point["qps_e2e"] = run.qps(lambda r=r: cut.search(batch, k, r))
            add_s, optimize_s = cut.add_s, cut.optimize_s
        finally:
            cut.close()
    bpv = codec.code_size
    return {
        "system": "vecpack",
        "name": spec,
        "family": codec.family,
        "bytes_per_vector": bpv,
        "compression": _r(4 * d / bpv, 2),
        "default_rerank": default,
        "fit_s": _r(enc.fit_s),
        "encode_s": _r(enc.encode_s),
        "fit_encode_s": _r(enc.fit_s + enc.encode_s),
        "collection_add_s": _r(add_s),
        "collection_optimize_s": _r(optimize_s),
        "memory_bytes": stats["memory_bytes"],
        "disk_bytes": stats["disk_bytes"],
        "runs": runs,
    }


def _measure_peer(peer: peers_mod.Peer, run: _Run) -> dict[str, Any]:
    """One built FAISS peer: quality and QPS at each of its re-rank depths."""
    batch, k = run.batch, run.k
    d = batch.shape[1]
    runs = []
    for r in peer.reranks:

        def fn(q: np.ndarray = batch, r: int = r) -> np.ndarray:
            return peer.search(q, k, r)

        quality = run.evaluate(fn(run.ds.queries))
        runs.append(
            {
                "rerank": r,
                "recall@k": _r(quality["recall@k"]),
                "ndcg@k": _r(quality["ndcg@k"]),
                "qps": run.qps(fn),
            }
        )
    return {
        "system": "faiss",
        "name": peer.name,
        "short": peer.short,
        "family": peer.family,
        "bytes_per_vector": peer.bytes_per_vector,
        "compression": _r(4 * d / peer.bytes_per_vector, 2),
        "build_s": _r(peer.build_s),
        "note": peer.note,
        "runs": runs,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else _r(a / b, 3)


def _compare(result: dict[str, Any]) -> list[dict[str, Any]]:
    """ours / FAISS ratios for each codec against the same family, at rerank 0 and at the codec's default."""
    out = []
    by_family = {p["family"]: p for p in result["peers"]}
    for c in result["codecs"]:
        peer = by_family.get(c["family"])
        if peer is None:
            continue
        peer_runs = {run["rerank"]: run for run in peer["runs"]}
        for run in c["runs"]:
            r = run["rerank"]
            if r not in (0, c["default_rerank"]) or r not in peer_runs:
                continue
            pr = peer_runs[r]
            out.append(
                {
                    "ours": c["name"],
                    "faiss": peer["name"] + (f" + re-rank {r}" if r else ""),
                    "rerank": r,
                    "bytes_ours": c["bytes_per_vector"],
                    "bytes_faiss": peer["bytes_per_vector"],
                    "recall_ours": run["recall@k"],
                    "recall_faiss": pr["recall@k"],
                    "recall_ratio": _ratio(run["recall@k"], pr["recall@k"]),
                    "ndcg_ours": run["ndcg@k"],
                    "ndcg_faiss": pr["ndcg@k"],
                    "ndcg_ratio": _ratio(run["ndcg@k"], pr["ndcg@k"]),
                    "qps_ours": run["qps"],
                    "qps_faiss": pr["qps"],
                    "qps_ratio": {t: _ratio(run["qps"][t], pr["qps"].get(t)) for t in run["qps"]},
                }
            )
    return out


def _check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be in 1..{MAX_K}, got {k}")
