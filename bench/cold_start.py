"""Cold start: the first call of every public path in a fresh process with an empty numba cache.

Each scenario runs in its own ``python`` process, three ways:

* ``compile in-process``: ``VECPACK_WARMUP=0`` and an empty ``NUMBA_CACHE_DIR`` (a fresh install, as numba
  alone behaves: the first call compiles what it runs);
* ``background warm-up``: the default, with an empty numba cache and no warm-up stamp (a fresh install):
  ``connect`` starts the warm-up child (``kernels.warm``) and the first calls answer through the numpy
  twins or compile what has none; the child is stopped when the scenario ends;
* ``after one warm-up``: a fresh process on a cache one finished warm-up filled (the next run of a script).

A scenario times its set-up calls and its first and second call of the path under test; importing numba
itself is timed apart and excluded. Data: 2,000 seeded random rows of 384 dims (synthetic, 20 Gaussian
clusters: the scenarios measure compile and call overheads, not recall).

    python bench/cold_start.py --out docs/results          # cold_start.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N, DIM = 2_000, 384
#: scenario -> (set-up code, the call under test); ``col`` / ``x`` / ``meta`` exist when they run
SCENARIOS: dict[str, tuple[str, str]] = {
    **{f"add + search ({codec}, flat)": (f"col = new(codec={codec!r}); col.add(ids, x, meta)",
                                         "col.search(x[0], 10)")
       for codec in ("float32", "float16", "int8", "binary", "pq48")},
    **{f"search sealed rows ({codec}, flat)": (f"col = new(codec={codec!r}); col.add(ids, x, meta); col.optimize()",
                                               "col.search(x[0], 10)")
       for codec in ("int8", "binary", "pq48")},
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


def run_scenario(setup: str, call: str, env: dict[str, str]) -> dict[str, float]:
    code = CHILD.format(n=N, dim=DIM, setup=setup, call=call)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=os.environ | env, capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t
    return result


def stop_warm_up(stamp_dir: Path) -> None:
    """End the warm-up child a scenario left running (it outlives its parent to finish the cache)."""
    subprocess.run(["pkill", "-f", f"vecpack.kernels.warm {stamp_dir}"], check=False)
    time.sleep(0.5)


def warm_once(env: dict[str, str]) -> float:
    """Seconds one background warm-up takes to finish, from a process that only connects."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import vecpack; vecpack.connect()"], env=os.environ | env, check=True)
    stamps = Path(env["VECPACK_CACHE"]) / "warm"
    while not [p for p in stamps.glob("*") if not p.name.startswith("warm.")]:
        time.sleep(0.5)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--only", default="", help="run scenarios whose name contains this")
    args = parser.parse_args()
    chosen = {name: sc for name, sc in SCENARIOS.items() if args.only in name}
    rows = {name: {"scenario": name} for name in chosen}
    with tempfile.TemporaryDirectory(prefix="vecpack-cold-") as tmp:
        for i, (name, (setup, call)) in enumerate(chosen.items()):
            plain = {"VECPACK_WARMUP": "0", "NUMBA_CACHE_DIR": f"{tmp}/plain-{i}"}
            rows[name]["compile"] = run_scenario(setup, call, plain)
            fresh = {"VECPACK_WARMUP": "1", "NUMBA_CACHE_DIR": f"{tmp}/fresh-{i}", "VECPACK_CACHE": f"{tmp}/vc-{i}"}
            rows[name]["warmup"] = run_scenario(setup, call, fresh)
            stop_warm_up(Path(fresh["VECPACK_CACHE"]))
            c, w = rows[name]["compile"], rows[name]["warmup"]
            print(f"{name:34s} first call: compile in-process {c['first_call_s']:6.2f} s (set-up "
                  f"{c['setup_s']:5.2f}), background warm-up {w['first_call_s']:5.2f} s (set-up {w['setup_s']:5.2f})",
                  flush=True)
        shared = {"VECPACK_WARMUP": "1", "NUMBA_CACHE_DIR": f"{tmp}/shared", "VECPACK_CACHE": f"{tmp}/vc-shared"}
        warm_s = warm_once(shared)
        print(f"one background warm-up: {warm_s:.0f} s", flush=True)
        for name, (setup, call) in chosen.items():
            rows[name]["after"] = run_scenario(setup, call, shared)
    report = {"n": N, "dim": DIM, "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
              "warm_up_s": warm_s, "rows": list(rows.values())}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cold_start.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "cold_start.md").write_text(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        "# Cold start: first calls in a fresh process",
        "",
        f"{report['n']:,} synthetic rows x {report['dim']} dims (seeded Gaussian clusters), "
        f"{report['cpu_count']} cores, {report['date']}. Each scenario ran in a new process: with an empty numba "
        "cache and no warm-up (`VECPACK_WARMUP=0`: numba compiles on first use), with an empty cache and the "
        "background warm-up (the default after a fresh install), and after one warm-up had finished "
        f"({report['warm_up_s']:.0f} s in the background). Set-up is the calls before the one measured "
        "(create, `add`, `optimize()` where listed); importing numba is excluded. `bench/cold_start.py`. Unlike "
        "the other benchmarks, this one measures numba compilation on purpose: the set-up and first-call columns "
        "include whatever compiling (or loading from numba's cache) their calls do; only the second call is warm.",
        "",
        "| path | compile in-process: set-up s | first call s | warm-up running: set-up s | first call s "
        "| after one warm-up: set-up s | first call s | second call ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        c, w, a = r["compile"], r["warmup"], r["after"]
        lines.append(f"| {r['scenario']} | {c['setup_s']:.2f} | {c['first_call_s']:.2f} | {w['setup_s']:.2f} | "
                     f"{w['first_call_s']:.2f} | {a['setup_s']:.2f} | {a['first_call_s']:.2f} | "
                     f"{a['second_call_s'] * 1e3:.1f} |")
    lines += [
        "",
        "While the warm-up runs, searches answer through plain-numpy twins (top-k, exact re-rank, int8) or, for "
        "an index still compiling, an exact flat scan (collections up to 100k rows); `optimize()` on an index "
        "collection compresses the rows and leaves the graph / IVF build to background maintenance, which runs "
        "it once the warm-up reports the index's group (the `optimize` rows of that column). With "
        "`VECPACK_WARMUP=0` or an index over 100k rows, a first index build compiles in the calling process "
        "(the first column).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
