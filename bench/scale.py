"""Scale check on a 1M x 384 synthetic collection (binary codec, flat; or any codec and index).

Measures durable ingest (batches of 1,000, every batch fsync'd and committed),
reopen + first query in a fresh process, resident memory while serving, and
recall@10 against exact search. The data is synthetic: a seeded generator
fitted to the spectrum and cluster structure of all-MiniLM-L6-v2 SciFact
embeddings (vecpack.bench.datasets.synthetic).

    python bench/scale.py --n 1000000 --out docs/results
    python bench/scale.py --n 1000000 --codec int8 --index graph --out docs/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import vecpack
from vecpack.bench.datasets import synthetic

BATCH = 1000
WARM_ROWS = 2048  # rows of the untimed build that compiles the ingest and optimize kernels first


def rss_mb() -> dict[str, float]:
    """This process's resident memory (total, anonymous, file-backed) in MB, from /proc."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def serve(path: str, queries_file: str) -> None:
    """Child process: reopen, time the first query, serve a query load, report RSS as JSON."""
    t0 = time.perf_counter()
    db = vecpack.connect(path)
    col = db.get_collection("scale")
    t_open = time.perf_counter() - t0
    q = np.load(queries_file)
    t0 = time.perf_counter()
    col.search(q[0], k=10)
    t_first = time.perf_counter() - t0
    rss_after_first = rss_mb()
    col.search(q[:100], k=10)  # untimed: the batch path's kernels load here, not in batched_qps
    t0 = time.perf_counter()
    served = 0
    for a in range(0, len(q), 100):
        col.search(q[a : a + 100], k=10)
        served += len(q[a : a + 100])
    t_serve = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(50):
        col.search(q[i], k=10)
    t_single = (time.perf_counter() - t0) / 50
    print(json.dumps({
        "open_s": t_open, "first_query_s": t_first, "rss_after_first_query_mb": rss_after_first,
        "batched_qps": served / t_serve, "single_query_latency_ms": 1000 * t_single,
        "rss_while_serving_mb": rss_mb(), "stats": col.stats(),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--codec", default="binary")
    ap.add_argument("--index", default="flat", choices=["flat", "graph", "ivf"])
    ap.add_argument("--path", default=".cache/scale-db", help="database folder (deleted first)")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--serve", nargs=2, metavar=("PATH", "QUERIES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(*args.serve)
        return

    t0 = time.perf_counter()
    ds = synthetic(args.n, args.dim, n_queries=1000, seed=0)
    t_gen = time.perf_counter() - t0
    print(f"generated {ds.corpus.shape} in {t_gen:.1f}s: {ds.note}", flush=True)

    # an untimed build on a few rows: numba compiles the ingest and optimize kernels here
    with tempfile.TemporaryDirectory(prefix="vecpack-warm-") as tmp, vecpack.connect(tmp) as warm:
        col = warm.create_collection("scale", dim=args.dim, metric=ds.metric, codec=args.codec, index=args.index)
        col.add([str(i) for i in range(WARM_ROWS)], ds.corpus[:WARM_ROWS])
        col.optimize()
    shutil.rmtree(args.path, ignore_errors=True)
    db = vecpack.connect(args.path)
    col = db.create_collection("scale", dim=args.dim, metric=ds.metric, codec=args.codec, index=args.index)
    t0 = time.perf_counter()
    for a in range(0, args.n, BATCH):
        col.add([str(i) for i in range(a, min(a + BATCH, args.n))], ds.corpus[a : a + BATCH])
        if a % 100_000 == 0:
            print(f"  {a} rows, {a / max(time.perf_counter() - t0, 1e-9):.0f} rows/s", flush=True)
    t_ingest = time.perf_counter() - t0
    t0 = time.perf_counter()
    col.optimize()
    t_optimize = time.perf_counter() - t0
    stats = col.stats()
    db.close()
    print(f"ingest {args.n / t_ingest:.0f} rows/s; optimize {t_optimize:.2f}s", flush=True)

    qfile = Path(args.path) / "queries.npy"
    np.save(qfile, ds.queries)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import vecpack"], check=True)
    t_import = time.perf_counter() - t0
    runs = []
    with tempfile.TemporaryDirectory(prefix="vecpack-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for _ in range(2):  # 1st: empty numba cache (JIT compiles, once per install); 2nd: warm, as in production
            child = subprocess.run([sys.executable, __file__, "--serve", args.path, str(qfile)],
                                   check=True, capture_output=True, text=True, env=env)
            runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
    cold, served = runs

    with vecpack.connect(args.path) as db:  # recall of 200 queries against exact float32
        col = db.get_collection("scale")
        q = ds.queries[:200]
        found = [[int(h.id) for h in r] for r in col.search(q, k=10)]
    x, qn = ds.corpus, q / np.linalg.norm(q, axis=1, keepdims=True)
    scores = np.concatenate([(qn @ x[a : a + 100_000].T) / np.linalg.norm(x[a : a + 100_000], axis=1)
                             for a in range(0, len(x), 100_000)], axis=1)
    truth = np.argpartition(-scores, 10, axis=1)[:, :10]
    recall = float(np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)]))

    codes_mb = (stats["sealed_rows"] * stats["bytes_per_vector"] + stats["index_bytes"]) / 2**20
    rss = served["rss_while_serving_mb"]["VmRSS"]
    open_limit = 1.0 if args.index == "flat" else 2.0
    result = {
        "dataset": f"synthetic:{args.n}:{args.dim}", "note": ds.note, "codec": args.codec, "index": args.index,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "generate_s": t_gen, "ingest_rows_per_s": args.n / t_ingest, "optimize_s": t_optimize,
        "python_import_vecpack_s": t_import, **served, "codes_mb": codes_mb,
        "cold_cache_first_query_s": cold["first_query_s"],
        "rss_limit_mb": 3 * codes_mb + 100, "recall@10": recall,
        "targets": {
            "ingest >= 20k rows/s": args.n / t_ingest >= 20_000,
            f"reopen + first query < {open_limit:g} s": served["open_s"] + served["first_query_s"] < open_limit,
            "RSS <= 3x codes + 100 MB": rss <= 3 * codes_mb + 100,
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"scale_{args.n // 1000}k_{args.codec}" + (f"_{args.index}" if args.index != "flat" else "")
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    (out / f"{name}.md").write_text(
        f"# Scale: {result['dataset']} ({args.codec}, {args.index} index)\n\n"
        f"Data: {ds.note}.\n\n"
        "The empty-cache row includes numba compilation, on purpose, and the first query after reopen loads the "
        "kernels from numba's cache, as every new process does; every other figure excludes both: ingest and "
        f"optimize followed an untimed build on {WARM_ROWS:,} rows, and each query loop an untimed call.\n\n"
        "| measure | value | target |\n|---|---|---|\n"
        f"| durable ingest, batches of 1,000 | {result['ingest_rows_per_s']:,.0f} rows/s | >= 20,000 |\n"
        f"| reopen (connect + get_collection) | {served['open_s'] * 1000:.0f} ms | |\n"
        f"| first query after reopen | {served['first_query_s'] * 1000:.0f} ms | open + first < {open_limit:g} s |\n"
        f"| first query with an empty numba cache (JIT compile) | {cold['first_query_s'] * 1000:.0f} ms | (once) |\n"
        f"| `import vecpack` in a fresh interpreter | {t_import * 1000:.0f} ms | (not counted) |\n"
        f"| RSS while serving | {rss:.0f} MB (anon {served['rss_while_serving_mb'].get('RssAnon', 0):.0f}, "
        f"file {served['rss_while_serving_mb'].get('RssFile', 0):.0f}) | <= {3 * codes_mb + 100:.0f} MB "
        f"(3 x {codes_mb:.0f} MB codes and index + 100) |\n"
        f"| peak RSS of the serving process (VmHWM) | {served['rss_while_serving_mb'].get('VmHWM', 0):.0f} MB | |\n"
        f"| optimize (seal + index build) | {t_optimize:.1f} s | |\n"
        f"| single-query latency ({args.index} search of {args.n:,} codes, default knobs and rerank) | "
        f"{served['single_query_latency_ms']:.1f} ms | |\n"
        f"| batched QPS (batches of 100) | {served['batched_qps']:,.0f} | |\n"
        f"| recall@10 vs exact float32 (200 queries, default rerank) | {recall:.4f} | |\n"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
