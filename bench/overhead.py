"""Where a ``Collection.search`` call spends its time, beside the engine-level search it wraps.

An int8 graph collection of ``--rows`` synthetic rows (the seeded generator fitted to MiniLM
embeddings of SciFact; ids and two metadata fields per row) is built untimed. Then each layer of
one search is timed on its own, one query per call and in batches, 1 thread, best of ``--rounds``:

* ``Collection.search``: the public call (checks, snapshot, plan, search, ids + metadata);
* ``Reader.search``: the same without the argument checks and normalisation;
* ``search_snapshot``: the planner and ``run_plan`` on a snapshot taken beforehand;
* ``search_rows``: the engine (codec probe, graph walk, top-k) on a snapshot taken beforehand,
  the level ``bench/ann.py`` measures; and the pieces around it: ``validate.queries``,
  ``prepare``, ``Store.fresh`` (the snapshot's freshness check), ``Segments.snapshot``, the planner,
  ``Store.records_at`` (the hits' ids and metadata from the catalog) and ``Reader._hits``.

Times exclude numba compilation: every layer runs untimed first.

    python bench/overhead.py --out docs/results          # search_overhead.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import vecpack
import vecpack.bench
from vecpack import validate
from vecpack.bench.datasets import synthetic
from vecpack.query import execute
from vecpack.query.selection import filter_groups
from vecpack.search import exact_knn, prepare, search_rows

K = 10


def best_us(call: Callable[[int], object], calls: int, rounds: int) -> float:
    """Microseconds per call of ``call(i)`` for i in 0 .. calls-1, the best of ``rounds``, after one untimed pass."""
    for i in range(min(calls, 200)):
        call(i)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for i in range(calls):
            call(i)
        best = min(best, time.perf_counter() - t)
    return best / calls * 1e6


def layers(col: vecpack.Collection, q: np.ndarray, m: int, ef: int, calls: int, rounds: int) -> dict[str, float]:
    """Microseconds per call of each layer for batches of m queries (query i of a call: rows i*m .. i*m+m-1)."""
    store, reader = col._store, col._reader  # the layers under the public call: this tool's whole point
    n_batches = q.shape[0] // m
    batch = [q[(i % n_batches) * m : (i % n_batches) * m + m] for i in range(n_batches)]
    one = [b[0] if m == 1 else b for b in batch]
    prepared = [prepare(b, col.metric) for b in batch]
    params = execute.SearchParams.check(col.name, col.index_kind, K, None, ef, None, None)
    groups = filter_groups(None, m, m == 1)
    with store.reading():
        snap = store.segments.snapshot(K, None, every_row=True)
        selection = reader.select(None, None, None)
    plan = execute._plan(params, selection, snap)
    # each call's own hits: repeating one call's rows would find them in SQLite's page cache every time
    results = [search_rows(p, K, snap.data, snap.live, index=snap.index, ef=plan.ef) for p in prepared]
    wanted = [sorted({r for r in rows.ravel().tolist() if r >= 0}) for _, rows in results]
    found = [store.records_at(w)[1] for w in wanted]

    def fresh(i: int) -> None:
        with store.fresh():
            pass

    def snapshot(i: int) -> None:
        with store.fresh():
            store.segments.snapshot(K, None, every_row=True)

    n = lambda i: i % n_batches  # noqa: E731
    timed = {
        "Collection.search": lambda i: col.search(one[n(i)], K, ef=ef),
        "Reader.search": lambda i: reader.search(prepared[n(i)], params, groups, None),
        "search_snapshot (planner + run_plan)": lambda i: execute.search_snapshot(prepared[n(i)], params, groups,
                                                                                  [selection], snap),
        "search_rows (engine)": lambda i: search_rows(prepared[n(i)], K, snap.data, snap.live, index=snap.index,
                                                      ef=plan.ef),
        "validate.queries": lambda i: validate.queries(one[n(i)], col.dim, metric=col.metric),
        "prepare": lambda i: prepare(batch[n(i)], col.metric),
        "Store.fresh": fresh,
        "Store.fresh + Segments.snapshot": snapshot,
        "planner": lambda i: execute._plan(params, selection, snap),
        "Store.records_at": lambda i: store.records_at(wanted[n(i)]),
        "Reader._hits": lambda i: reader._hits(*results[n(i)], found[n(i)]),
    }
    return {name: round(best_us(call, max(calls // m, 20), rounds), 1) for name, call in timed.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--ef", type=int, default=16, help="graph beam (16 reaches recall@10 ~0.97 at 100k)")
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    data = synthetic(args.rows, 384, n_queries=1_000)
    x, q = data.corpus, data.queries
    with tempfile.TemporaryDirectory(prefix="vecpack-overhead-") as tmp, vecpack.connect(tmp, maintenance=False) as db:
        col = db.create_collection("c", dim=384, codec="int8", index="graph")
        for a in range(0, args.rows, 20_000):
            b = min(args.rows, a + 20_000)
            col.add([f"doc-{i}" for i in range(a, b)], x[a:b], [{"tag": i % 10, "title": f"t{i}"} for i in range(a, b)])
        col.optimize()
        truth = exact_knn(prepare(x, "cosine"), prepare(q, "cosine"), K, "cosine")[0]
        found = [[int(h.id[4:]) for h in col.search(q[i], K, ef=args.ef)] for i in range(q.shape[0])]
        recall = float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))
        by_batch = {m: layers(col, q, m, args.ef, args.calls, args.rounds) for m in (1, 100)}
    report = {"rows": args.rows, "ef": args.ef, "rounds": args.rounds, "recall_at_10": recall,
              "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
              "us_per_call": {str(m): v for m, v in by_batch.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search_overhead.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "search_overhead.md").write_text(markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    one, hundred = r["us_per_call"]["1"], r["us_per_call"]["100"]
    lines = [
        "# Where a search call spends its time",
        "",
        f"int8 graph collection of {r['rows']:,} synthetic rows x 384 (the seeded generator fitted to MiniLM "
        f"embeddings of SciFact; not real embeddings), ef {r['ef']} (recall@10 {r['recall_at_10']:.3f} through "
        f"`Collection.search`), k = {K}, 1 thread, {r['cpu_count']} cores, {r['date']}. Each layer timed on its "
        f"own, best of {r['rounds']} rounds; times exclude numba compilation (every layer ran untimed first). "
        "`bench/overhead.py`.",
        "",
        "| layer | us per call, 1 query | us per query, batches of 100 |",
        "|---|---:|---:|",
    ]
    for name in one:
        lines.append(f"| {name} | {one[name]:.1f} | {hundred[name] / 100:.1f} |")
    engine, api = one["search_rows (engine)"], one["Collection.search"]
    lines += ["", f"One query per call, the public call costs {api / engine:.2f}x the engine-level search "
              f"({api - engine:.0f} us more); in batches of 100, "
              f"{hundred['Collection.search'] / hundred['search_rows (engine)']:.2f}x.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
