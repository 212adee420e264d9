"""A/B: the same public-API workload on two source trees of vecpack, interleaved in one run.

    python bench/ab.py --a <old tree> --b <new tree> [--rows 100000] [--rounds 3]

Each tree (a folder holding ``src/vecpack``, e.g. a ``git worktree`` of an older commit) runs
the workload in a child process of its own (``PYTHONPATH=<tree>/src``), rounds alternating
A, B, A, B, ... so drift of the machine hits both alike. The workload, through
``Collection.search`` only (one query per call, 1 thread, after warm-up calls so no numba
compile is timed):

- ``flat``: int8, no index, 2,000 queries;
- ``graph``: int8 graph (default ef);
- ``filtered``: the graph collection with a 10% and a 1% filter on an indexed field;
- ``tenants``: a multi-tenant graph collection of 20 tenants, queries of one large and one small tenant.

Rows are synthetic: the seeded generator fitted to MiniLM embeddings of SciFact
(``vecpack.bench.datasets.synthetic``, 384-d, unit norm). The report is median QPS per case and
tree, and B / A: a refactoring should land within noise of 1.0.
Results: ``docs/results/ab_<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from vecpack.bench.datasets import synthetic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"

# The child: builds the collections once per tree (in its own folder), then times every case.
CHILD = textwrap.dedent("""
    import json, sys, tempfile, time
    import numpy as np
    import vecpack

    rows, dim, queries, folder = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    data = np.load(folder + "/rows.npy")
    q = np.load(folder + "/queries.npy")[:queries]
    db = vecpack.connect(folder + "/db")
    names = set(db.list_collections())

    def build(name, into=db, rows=rows, **kw):
        if into is db and name in names:
            return db.get_collection(name)
        col = into.create_collection(name, dim=dim, codec="int8", **kw)
        meta = [{"tag": i % 10, "rare": i % 100} for i in range(rows)]
        tenant = kw.get("multi_tenant")
        if tenant:  # tenant 0 holds half the rows, 19 others share the rest
            owner = np.where(np.arange(rows) % 2 == 0, 0, 1 + np.arange(rows) % 19)
            for t in range(20):
                picked = np.flatnonzero(owner == t)
                for a in range(0, picked.size, 20_000):
                    part = picked[a : a + 20_000]
                    col.add(part.tolist(), data[part], [meta[i] for i in part], tenant=f"t{t}")
        else:
            for a in range(0, rows, 20_000):
                col.add(list(range(a, min(rows, a + 20_000))), data[a : min(rows, a + 20_000)], meta[a : a + 20_000])
        col.create_field_index("tag")
        col.create_field_index("rare")
        col.optimize()
        return col

    if not names:  # the same builds on 2,000 rows, untimed: numba compiles their kernels here, not in built_s
        with tempfile.TemporaryDirectory() as tmp:
            warm = vecpack.connect(tmp)
            for name, kw in (("flat", {}), ("graph", {"index": "graph"}),
                             ("tenants", {"index": "graph", "multi_tenant": True})):
                build(name, warm, 2_000, **kw)
            warm.close()
    t0 = time.perf_counter()
    flat, graph = build("flat"), build("graph", index="graph")
    tenants = build("tenants", index="graph", multi_tenant=True)
    built_s = time.perf_counter() - t0 if not names else None
    cases = {
        "flat": lambda x: flat.search(x, 10),
        "graph": lambda x: graph.search(x, 10),
        "filtered 10%": lambda x: graph.search(x, 10, where={"tag": 3}),
        "filtered 1%": lambda x: graph.search(x, 10, where={"rare": 7}),
        "tenant large": lambda x: tenants.search(x, 10, tenant="t0"),
        "tenant small": lambda x: tenants.search(x, 10, tenant="t5"),
    }
    out = {}
    for name, call in cases.items():
        for x in q[:20]:
            call(x)  # warm: compile and caches
        t = time.perf_counter()
        for x in q:
            call(x)
        out[name] = len(q) / (time.perf_counter() - t)
    print(json.dumps({"qps": out, "build_s": built_s}))
""")


def make_rows(n: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(rows, queries, how they were made): the seeded synthetic generator fitted to MiniLM on SciFact."""
    ds = synthetic(n, 384, n_queries=queries, seed=seed)
    return ds.corpus, ds.queries, f"{ds.note}; seed {seed}"


def run_tree(tree: Path, folder: Path, rows: int, dim: int, queries: int) -> dict[str, Any]:
    """QPS per case (and the build's seconds, if this call built the collections) of one tree's child."""
    # no background kernel warm-up or maintenance in the tree under test: only the workload's own calls run
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", VECPACK_WARMUP="0", VECPACK_MAINTENANCE="0")
    done = subprocess.run([sys.executable, "-c", CHILD, str(rows), str(dim), str(queries), str(folder)],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: the workload failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="source tree A (the baseline)")
    parser.add_argument("--b", type=Path, default=ROOT, help="source tree B (default: this checkout)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="refactor")
    parser.add_argument("--work", type=Path, help="keep the built collections here (reused by a later run with the "
                        "same rows); default: a temporary folder")
    args = parser.parse_args()
    x, q, how = make_rows(args.rows, args.queries, seed=0)
    qps: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    build_s: dict[str, float | None] = {"A": None, "B": None}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        folders = {}
        for side in ("A", "B"):  # each tree builds its own collections (file formats may differ)
            folders[side] = work / f"{side}-{args.rows}"
            folders[side].mkdir(parents=True, exist_ok=True)
            np.save(folders[side] / "rows.npy", x)
            np.save(folders[side] / "queries.npy", q)
        for r in range(args.rounds):
            for side, tree in (("A", args.a), ("B", args.b)) if r % 2 == 0 else (("B", args.b), ("A", args.a)):
                got = run_tree(tree, folders[side], args.rows, x.shape[1], args.queries)
                build_s[side] = got["build_s"] if got["build_s"] is not None else build_s[side]
                for case, v in got["qps"].items():
                    qps[side].setdefault(case, []).append(v)
                print(f"round {r + 1} {side}: " + ", ".join(f"{c} {v:,.0f}" for c, v in got["qps"].items()),
                      flush=True)
    cases = list(qps["A"])
    table = {c: {"A": statistics.median(qps["A"][c]), "B": statistics.median(qps["B"][c])} for c in cases}
    report = {"rows": args.rows, "queries": args.queries, "rounds": args.rounds, "data": how,
              "a": str(args.a), "b": str(args.b), "qps": qps, "median": table, "build_s": build_s}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"ab_{args.name}.json").write_text(json.dumps(report, indent=1))
    lines = [f"# A/B through Collection.search: {args.name}", "",
             f"{args.rows:,} rows ({how}), {args.queries:,} queries one per call, 1 thread, k=10, int8; "
             f"{args.rounds} rounds alternating A and B, median QPS. A = `{args.a}`, B = `{args.b}`. Times exclude "
             "numba compilation: each case's timed queries followed 20 untimed ones, and each tree's build an "
             "untimed build of the same collections on 2,000 rows.", "",
             "| case | A QPS | B QPS | B / A | rounds A | rounds B |", "|---|---|---|---|---|---|"]
    for c in cases:
        a, b = table[c]["A"], table[c]["B"]
        lines.append(f"| {c} | {a:,.0f} | {b:,.0f} | {b / a:.2f} | "
                     f"{', '.join(f'{v:,.0f}' for v in qps['A'][c])} | {', '.join(f'{v:,.0f}' for v in qps['B'][c])} |")
    if build_s["A"] is not None and build_s["B"] is not None:
        lines += ["", f"Building the three collections (add in 20k batches, two field indexes, optimize): "
                  f"A {build_s['A']:.0f} s, B {build_s['B']:.0f} s (one build each, not interleaved)."]
    (RESULTS / f"ab_{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
