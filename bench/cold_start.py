"""Cold start: the first call of every public path in a fresh process with an empty numba cache.

Each scenario runs in its own ``python`` process with ``NUMBA_CACHE_DIR`` pointing at a new empty folder
(as after ``pip install``), then once more with that folder as the first run left it (a second run of a
user's script). A scenario times its set-up calls and its first and second call of the path under test;
importing numba itself is timed apart and excluded, as the issue asks. Data: 2,000 seeded random rows of
384 dims (synthetic, 20 Gaussian clusters: the scenarios measure compile and call overheads, not recall).

    python bench/cold_start.py --out docs/results          # cold_start.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

N, DIM = 2_000, 384
#: scenario -> (set-up code, the call under test); ``col`` / ``x`` / ``meta`` exist when they run
SCENARIOS: dict[str, tuple[str, str]] = {
    **{f"add + search ({codec}, flat)": (f"col = new(codec={codec!r}); col.add(ids, x, meta)",
                                         "col.search(x[0], 10)")
       for codec in ("float32", "float16", "int8", "binary", "pq48")},
    "search sealed rows (int8, flat)": ("col = new(codec='int8'); col.add(ids, x, meta); col.optimize()",
                                        "col.search(x[0], 10)"),
    "optimize (int8, graph)": ("col = new(codec='int8', index='graph'); col.add(ids, x, meta)", "col.optimize()"),
    "optimize (int8, ivf)": ("col = new(codec='int8', index='ivf'); col.add(ids, x, meta)", "col.optimize()"),
    "graph search (int8)": ("col = new(codec='int8', index='graph'); col.add(ids, x, meta); col.optimize()",
                            "col.search(x[0], 10)"),
    "filtered search (int8, graph)": (
        "col = new(codec='int8', index='graph'); col.add(ids, x, meta); col.optimize()",
        "col.search(x[0], 10, where={'group': 3})"),
    "tenant search (int8, graph)": (
        "col = new(codec='int8', index='graph', multi_tenant=True)\n"
        "for t in range(4): col.add(ids[t::4], x[t::4], meta[t::4], tenant=f't{t}')\n"
        "col.optimize()",
        "col.search(x[0], 10, tenant='t1')"),
}

CHILD = """
import json, time
t0 = time.perf_counter()
import numba, numpy as np
t1 = time.perf_counter()
import vecpack
t2 = time.perf_counter()
rng = np.random.default_rng(0)
centres = rng.normal(size=(20, {dim}))
x = (centres[rng.integers(0, 20, {n})] + 0.5 * rng.normal(size=({n}, {dim}))).astype(np.float32)
ids = list(range({n})); meta = [{{"group": i % 10}} for i in ids]
db = vecpack.connect()
def new(**kw): return db.create_collection("c", dim={dim}, **kw)
t3 = time.perf_counter()
{setup}
t4 = time.perf_counter()
{call}
t5 = time.perf_counter()
{call}
t6 = time.perf_counter()
print(json.dumps({{"import_numba_s": t1 - t0, "import_vecpack_s": t2 - t1, "setup_s": t4 - t3,
                  "first_call_s": t5 - t4, "second_call_s": t6 - t5}}))
"""


def run_scenario(setup: str, call: str, cache: Path) -> dict[str, float]:
    code = CHILD.format(n=N, dim=DIM, setup=setup, call=textwrap.indent(call, ""))
    env = os.environ | {"NUMBA_CACHE_DIR": str(cache)}
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--only", default="", help="run scenarios whose name contains this")
    args = parser.parse_args()
    rows = []
    for name, (setup, call) in SCENARIOS.items():
        if args.only not in name:
            continue
        with tempfile.TemporaryDirectory(prefix="vecpack-cold-") as cache:
            cold = run_scenario(setup, call, Path(cache))
            warm = run_scenario(setup, call, Path(cache))
        rows.append({"scenario": name, "cold": cold, "warm": warm})
        print(f"{name:34s} cold: set-up {cold['setup_s']:6.2f} s, first call {cold['first_call_s']:6.2f} s, "
              f"second {cold['second_call_s'] * 1e3:7.1f} ms | cached: set-up {warm['setup_s']:5.2f} s, "
              f"first call {warm['first_call_s']:5.2f} s", flush=True)
    report = {"n": N, "dim": DIM, "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cold_start.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "cold_start.md").write_text(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        "# Cold start: first calls in a fresh process",
        "",
        f"{report['n']:,} synthetic rows x {report['dim']} dims (seeded Gaussian clusters), "
        f"{report['cpu_count']} cores, {report['date']}. Each scenario ran in a new process with an empty numba "
        "cache (`NUMBA_CACHE_DIR` a new folder: a fresh install), then again with the cache it left. Set-up is "
        "the calls before the one measured (creating the collection, `add`, `optimize()` where listed); importing "
        "numba is excluded. `bench/cold_start.py`.",
        "",
        "| path | empty cache: set-up s | first call s | second call ms | cached: set-up s | first call s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        c, w = r["cold"], r["warm"]
        lines.append(f"| {r['scenario']} | {c['setup_s']:.2f} | {c['first_call_s']:.2f} | "
                     f"{c['second_call_s'] * 1e3:.1f} | {w['setup_s']:.2f} | {w['first_call_s']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
