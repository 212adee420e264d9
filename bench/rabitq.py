"""RaBitQ codecs against FAISS ``IndexRaBitQ``: recall@10 without re-rank, flat-scan QPS, bound-based re-rank.

For one dataset (cosine: unit vectors scored by inner product), at equal bits per dimension:

* ours: ``rabitq`` (1 bit) and ``rabitq<B>`` (extended), a flat scan through the codec's scorer
  (the query's rotation and quantisation are part of the timed search); build = fit + encode
  (compiled kernels loaded beforehand);
* FAISS ``IndexRaBitQ(d, METRIC_INNER_PRODUCT, B)`` with its default query bits (qb = 4): plain,
  as the class is (FAISS leaves the random rotation to the caller), and behind a random rotation
  (``IndexPreTransform`` + ``RandomRotationMatrix``), which is the algorithm as published;
* QPS on 1 thread (numba, BLAS and FAISS's OpenMP): batches of 1 query (the first 200 queries,
  one call each) and of 1,000 queries (the queries repeated up to 1,000), best of several runs;
* bound-based re-rank (ours): for 100 queries, estimates and error bounds of every row, then
  ``codecs.rabitq.bound_rerank`` against exact scores: how many rows it had to score exactly,
  and the recall@10 it reaches (< 1 only where a bound failed).

Writes docs/results/rabitq_<dataset>.{json,md}.

    python bench/rabitq.py --dataset scifact
    python bench/rabitq.py --dataset synthetic:100000:384 --bits 1 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from vecpack.bench.datasets import load_dataset
from vecpack.bench.metrics import recall_at_k
from vecpack.bench.peers import import_faiss
from vecpack.bench.timing import best_time, limit_threads, machine_info
from vecpack.codecs import make_codec
from vecpack.codecs.rabitq import bound_rerank
from vecpack.kernels.topk import new_heaps, sort_heaps
from vecpack.search import exact_knn, prepare

K = 10
BATCH = 1000
SINGLE = 200
BOUND_QUERIES = 100


def spec_of(bits: int) -> str:
    return "rabitq" if bits == 1 else f"rabitq{bits}"


def qps(search, q: np.ndarray) -> dict[str, float]:
    """Queries per second on 1 thread: one query per call, and batches of BATCH queries."""
    single = q[:SINGLE]
    batch = np.ascontiguousarray(np.resize(q, (BATCH, q.shape[1])))

    def one_by_one():
        for i in range(len(single)):
            search(single[i : i + 1])

    return {
        "qps_1": len(single) / best_time(one_by_one, repeats=3),
        f"qps_{BATCH}": BATCH / best_time(lambda: search(batch), repeats=3),
    }


def run_ours(bits: int, x: np.ndarray, q: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    codec = make_codec(spec_of(bits), x.shape[1], "ip")
    codec.fit(x[:256]).encode(x[:256])  # load the compiled kernels before timing the build
    t0 = time.perf_counter()
    codec.fit(x)
    codes = codec.encode(x)
    build_s = time.perf_counter() - t0
    live = np.ones(len(x), np.uint8)

    def search(qb: np.ndarray, k: int = K) -> np.ndarray:
        heaps = new_heaps(len(qb), k)
        codec.scorer(qb).scan(codes, 0, live, *heaps)
        sort_heaps(*heaps)
        return heaps[1]

    out: dict[str, Any] = {"method": f"vecpack {codec.spec}", "bits": bits, "code_bytes": codec.code_size}
    out["build_s"] = build_s
    out["recall"] = recall_at_k(search(q), truth, K)
    rerank = codec.default_rerank(K)
    out["default_rerank"] = rerank
    if rerank:
        cand = search(q, rerank)
        exact = np.take_along_axis(q @ x.T, cand, axis=1)
        out["recall_default_rerank"] = recall_at_k(np.take_along_axis(cand, np.argsort(-exact, 1), 1), truth, K)
    with limit_threads(1):
        out.update(qps(search, q))
    out["bound_rerank"] = bound_stats(codec, codes, x, q[:BOUND_QUERIES], truth[:BOUND_QUERIES])
    return out


def bound_stats(codec, codes: np.ndarray, x: np.ndarray, q: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Exact scores bound_rerank needs over all rows (mean, and as a fraction of them), and its recall@10."""
    est, bound = codec.estimate(q, codes)
    exact = q @ x.T
    found, needed = [], []
    for i in range(len(q)):
        pos, _, n_exact = bound_rerank(est[i], bound[i], exact[i], K)
        found.append(pos)
        needed.append(n_exact)
    return {
        "queries": len(q),
        "exact_scores_mean": float(np.mean(needed)),
        "exact_scores_max": int(np.max(needed)),
        "fraction_of_rows": float(np.mean(needed) / len(x)),
        "recall": recall_at_k(np.array(found), truth, K),
    }


def run_faiss(faiss, bits: int, rotate: bool, x: np.ndarray, q: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    d = x.shape[1]
    base = faiss.IndexRaBitQ(d, faiss.METRIC_INNER_PRODUCT, bits)
    index = faiss.IndexPreTransform(faiss.RandomRotationMatrix(d, d), base) if rotate else base
    t0 = time.perf_counter()
    index.train(x)
    index.add(x)
    build_s = time.perf_counter() - t0

    def search(qb: np.ndarray) -> np.ndarray:
        return index.search(qb, K)[1]

    name = "FAISS RR+IndexRaBitQ" if rotate else "FAISS IndexRaBitQ"
    out: dict[str, Any] = {"method": f"{name} nb_bits={bits} qb={base.qb}", "bits": bits}
    out.update({"code_bytes": int(base.code_size), "build_s": build_s, "recall": recall_at_k(search(q), truth, K)})
    with limit_threads(1, faiss):
        out.update(qps(search, q))
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"# RaBitQ vs FAISS IndexRaBitQ: {res['dataset']}",
        "",
        f"{res['n']} x {res['d']} vectors, {res['queries']} queries, cosine (unit vectors, inner product), "
        f"recall@{K} against exact kNN without re-rank; QPS on 1 thread, flat scan. Times exclude numba "
        "compilation: our build followed an untimed fit + encode on 256 rows, and each QPS an untimed call.",
        f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, faiss {res['machine']['faiss']}.",
        "",
        f"| method | bits/dim | bytes/vector | recall@{K} | recall@{K}, default re-rank | QPS, 1 query | "
        f"QPS, batch {BATCH} | build s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        rr = r.get("recall_default_rerank")
        rr = f"{rr:.4f} ({r['default_rerank']})" if rr is not None else "-"
        lines.append(
            f"| {r['method']} | {r['bits']} | {r['code_bytes']} | {r['recall']:.4f} | {rr} | {r['qps_1']:,.0f} | "
            f"{r[f'qps_{BATCH}']:,.0f} | {r['build_s']:.2f} |"
        )
    lines += ["", "Ours against FAISS at equal bits (FAISS with the random rotation, and plain):", ""]
    lines += ["| bits | recall − FAISS RR | recall − FAISS plain | QPS 1 / FAISS RR | QPS batch / FAISS RR |"]
    lines += ["|---|---|---|---|---|"]
    for c in res["comparison"]:
        lines.append(
            f"| {c['bits']} | {c['recall_diff_rr']:+.4f} | {c['recall_diff_plain']:+.4f} | "
            f"{c['qps_1_ratio_rr']:.2f}x | {c['qps_batch_ratio_rr']:.2f}x |"
        )
    lines += [
        "",
        f"Bound-based re-rank (ours, eps0 = 1.9): candidates are all {res['n']} rows, visited by decreasing "
        "upper bound; a row is scored exactly only while its upper bound beats the k-th exact score so far.",
        "",
        f"| codec | queries | exact scores (mean) | max | fraction of rows | recall@{K} |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        b = r.get("bound_rerank")
        if b:
            lines.append(
                f"| {r['method']} | {b['queries']} | {b['exact_scores_mean']:.1f} | {b['exact_scores_max']} | "
                f"{b['fraction_of_rows']:.4f} | {b['recall']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--bits", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "results")
    args = parser.parse_args()
    faiss, why = import_faiss()
    if faiss is None:
        raise SystemExit(why)
    ds = load_dataset(args.dataset)
    x, q = prepare(ds.corpus, "cosine"), prepare(ds.queries, "cosine")
    truth = exact_knn(x, q, K, "cosine")[0]
    runs, comparison = [], []
    for bits in args.bits:
        ours = run_ours(bits, x, q, truth)
        rr, plain = (run_faiss(faiss, bits, rotate, x, q, truth) for rotate in (True, False))
        runs += [ours, rr, plain]
        comparison.append(
            {
                "bits": bits,
                "recall_diff_rr": ours["recall"] - rr["recall"],
                "recall_diff_plain": ours["recall"] - plain["recall"],
                "qps_1_ratio_rr": ours["qps_1"] / rr["qps_1"],
                "qps_batch_ratio_rr": ours[f"qps_{BATCH}"] / rr[f"qps_{BATCH}"],
            }
        )
        print(json.dumps([ours, rr, plain], indent=1))
    res = {
        "dataset": args.dataset,
        "n": int(x.shape[0]),
        "d": int(x.shape[1]),
        "queries": int(q.shape[0]),
        "note": ds.note,
        "machine": machine_info(faiss),
        "runs": runs,
        "comparison": comparison,
    }
    stem = args.out / f"rabitq_{args.dataset.replace(':', '_')}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
