"""codec="auto" against the full budget sweep: how long tuning takes and how close its choice lands.

For each budget of ``bench/budget.py``'s sweep on one dataset, run the tuner
(``vecpack.tuning.tune``) on the dataset's rows as a collection would (a sample, held-out
rows as queries), then measure the chosen codec on the whole dataset with the real
queries and its default re-rank, and compare with the best recall@10 any of our codecs
reached at that budget in ``docs/results/budget_<dataset>.json`` (raw or with 40
candidates re-ranked). A synthetic 100k set times the tuner at the issue's size.

Writes docs/results/autotune.{json,md}.

    python bench/autotune.py --dataset scifact --timing synthetic:100000:384
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vecpack.bench.datasets import load_dataset
from vecpack.bench.timing import machine_info
from vecpack.codecs import make_codec
from vecpack.search import ScanData, exact_knn, prepare, search_rows
from vecpack.tuning import tune

K = 10
TARGET = 0.95
WARM_ROWS = 2048  # rows of the untimed tuning runs that compile every candidate's kernels before tune_s is timed


def recall_of(spec: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray, metric: str) -> float:
    codec_metric = "l2" if metric == "l2" else "ip"
    codec = make_codec(spec, x.shape[1], codec_metric).fit(x[np.random.default_rng(0).permutation(len(x))[:65536]])
    codes = codec.encode(x)
    rerank = 0 if codec.exact else codec.default_rerank(K)
    rows = search_rows(q, K, ScanData(codec, codes, x, metric, rerank), np.ones(len(x), np.uint8))[1]
    return float(np.mean([len(set(r) & set(t)) / K for r, t in zip(rows, truth, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--timing", default="synthetic:100000:384")
    ap.add_argument("--out", type=Path, default=Path("docs/results"))
    args = ap.parse_args()
    sweep = json.loads((args.out / f"budget_{args.dataset}.json").read_text())
    ds = load_dataset(args.dataset)
    metric = sweep["metric"]
    x = prepare(ds.corpus, metric)
    q = prepare(ds.queries, metric)
    truth = exact_knn(x, q, K, metric)[0]
    rows = []
    for budget in sweep["budgets"]:  # untimed, on a few rows: numba compiles every candidate's kernels here
        tune(x[:WARM_ROWS], metric, budget["bytes"], TARGET, time_limit=float("inf"))
    for budget in sweep["budgets"]:
        t = time.perf_counter()
        spec, report = tune(x, metric, budget["bytes"], TARGET)
        seconds = time.perf_counter() - t
        best = max((side["recall"], side["name"]) for fam in budget["ours"].values() for side in fam.values() if side)
        # with sample queries: the even-numbered real queries; the choice is measured on the odd ones
        spec_q, _ = tune(x, metric, budget["bytes"], TARGET, queries=q[::2])
        rows.append({"bytes": budget["bytes"], "chosen": spec, "tune_s": seconds,
                     "recall": recall_of(spec, x, q, truth, metric), "best_recall": best[0], "best_spec": best[1],
                     "measured": len(report["candidates"]), "skipped": len(report["skipped_for_time"]),
                     "chosen_with_queries": spec_q,
                     "recall_with_queries": recall_of(spec_q, x, q[1::2], truth[1::2], metric)})
        print(rows[-1], flush=True)
    timing = None
    if args.timing:
        big = load_dataset(args.timing, max_queries=10)
        xb = prepare(big.corpus, "cosine")
        tune(xb[:WARM_ROWS], "cosine", 96, TARGET, time_limit=float("inf"))  # untimed: compiles its candidates
        t = time.perf_counter()
        spec, report = tune(xb[np.random.default_rng(0).permutation(len(xb))[:65536]], "cosine", 96, TARGET)
        timing = {"dataset": args.timing, "rows": len(xb), "budget": 96, "chosen": spec,
                  "seconds": time.perf_counter() - t, "measured": len(report["candidates"])}
        print(timing, flush=True)
    out = {"dataset": args.dataset, "target_recall": TARGET, "budgets": rows, "timing": timing,
           "machine": machine_info()}
    (args.out / "autotune.json").write_text(json.dumps(out, indent=1))
    lines = [f"# codec=\"auto\" vs the full budget sweep ({args.dataset}, target recall@10 {TARGET})", "",
             "The tuner sees a sample of the rows with held-out rows as queries; its choice is then measured on the "
             "whole dataset with the real queries and the codec's default re-rank. 'Best' is the best recall@10 of "
             f"any of our codecs at that budget in `budget_{args.dataset}.md` (raw or +40 re-rank); the chosen codec "
             "re-ranks its own default depth (100 for PQ and binary codes), so it can beat the sweep. The last two "
             "columns tune again with `sample_queries` = the even-numbered real queries and measure the choice on "
             "the odd-numbered ones. Machine shared with other work: times are upper bounds. Times exclude numba "
             f"compilation: each timed tuning followed an untimed one at the same budget on {WARM_ROWS:,} rows.", "",
             "| bytes | chosen | recall@10 | best in sweep | gap (points) | tune s | measured / skipped for time | "
             "chosen with sample queries | its recall@10 (other half) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['bytes']} | `{r['chosen']}` | {r['recall']:.3f} | {r['best_recall']:.3f} "
                     f"(`{r['best_spec']}`) | {100 * (r['best_recall'] - r['recall']):.1f} | {r['tune_s']:.1f} | "
                     f"{r['measured']} / {r['skipped']} | `{r['chosen_with_queries']}` | "
                     f"{r['recall_with_queries']:.3f} |")
    if timing:
        lines += ["", f"Tuning on {timing['rows']:,} rows of `{timing['dataset']}` (synthetic, fitted to MiniLM "
                  f"embeddings; 65,536-row sample as a collection uses) at 96 bytes/vector: {timing['seconds']:.1f} s, "
                  f"{timing['measured']} configurations measured, chose `{timing['chosen']}`."]
    (args.out / "autotune.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
