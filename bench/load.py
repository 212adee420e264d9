"""Load and crash test of ``vecpack serve`` (issue 7): concurrent clients against a loopback server process.

What it measures and checks is described in ``vecpack.bench.loadtest``, which holds the code; this is the
command line.

    python bench/load.py                       # 100k rows, 16 clients, 60 s -> docs/results/load_100000.{json,md}
    python bench/load.py --crash               # -> docs/results/crash_100000.{json,md}
    python bench/load.py --rows 2000 --clients 4 --seconds 3 --out /tmp/load

Exits with status 1 when a correctness check fails (errors, lost or half-applied writes); the latency target
(p99 search under load <= 5x the embedded call's) is reported, not enforced.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vecpack.bench.loadtest import Config, run

OUT_DEFAULT = Path(__file__).resolve().parents[1] / "docs" / "results"


def main() -> None:
    d = Config()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=d.rows, help="collection size (synthetic:ROWS:DIM)")
    ap.add_argument("--dim", type=int, default=d.dim)
    ap.add_argument("--clients", type=int, default=d.clients, help="concurrent client threads")
    ap.add_argument("--seconds", type=float, default=d.seconds, help="duration of the load")
    ap.add_argument("--write-fraction", type=float, default=d.write_fraction, help="share of adds")
    ap.add_argument("--queries", type=int, default=d.queries, help="dataset queries (cycled)")
    ap.add_argument("--seed", type=int, default=d.seed, help="op mix, written vectors, kill moment")
    ap.add_argument("--crash", action="store_true", help="SIGKILL the server mid-load, restart, check the writes")
    ap.add_argument("--out", type=Path, default=OUT_DEFAULT, help="folder for the JSON and markdown results")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder for the database (default: temp)")
    args = ap.parse_args()
    cfg = Config(rows=args.rows, dim=args.dim, clients=args.clients, seconds=args.seconds,
                 write_fraction=args.write_fraction, queries=args.queries, seed=args.seed, crash=args.crash)
    report = run(cfg, args.out, args.workdir, log=lambda s: print(s, flush=True))
    for op, s in report["ops"].items():
        print(f"{op}: {s['count']:,} ok, {s['throughput_per_s']:.1f}/s, p50 {s['p50_ms']:.2f} ms, "
              f"p99 {s['p99_ms']:.2f} ms, errors {s['errors']}, lost after the kill {s['lost_after_kill']}")
    print(f"p99 search / embedded: {report['p99_ratio']:.1f}x; checks passed: {report['passed']}")
    if "batches" in report:
        print(json.dumps({k: (len(v) if isinstance(v, list) else v) for k, v in report["batches"].items()}))
    if not report["passed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
