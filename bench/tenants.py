"""Multi-tenancy benchmark: one multi-tenant collection against one collection per tenant and against a
metadata filter on a shared collection, with Zipf-distributed tenant sizes.

Tenant sizes follow Zipf (exponent 1): tenant r of T holds about N / (r H_T) rows
(at least 1), and rows are dealt to tenants at random (a tenant's rows are spread
over the whole space, the harder case for a shared index). All three set-ups use
int8 codes and a graph index (a tenant collection below 1,024 rows has no index:
a flat scan is as fast), are filled the same way and optimized once:

* ``multi-tenant``: ``create_collection(..., multi_tenant=True)``, ``search(q, tenant=t)``;
* ``per-tenant collections``: one collection per tenant, ``search(q)``;
* ``metadata filter``: one collection, ``{"tenant": t}`` in each record's metadata, a
  field index on it, ``search(q, where={"tenant": t})``.

Each tenant gets the same queries in every set-up (dataset queries, dealt round-robin);
latency is one query per call through the public API, 1 thread, after one untimed query per
tenant (this host reclaims file pages that go cold while the other set-ups build); recall@10 is against
the exact top 10 of the tenant's own rows. Memory is ``stats()["memory_bytes"]`` (codes,
index, live mask, codec, field index columns, tenant row lists), summed over collections.

    python bench/tenants.py --dataset synthetic:200000:384 --tenants 200
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import vecpack
from vecpack.bench.datasets import load_dataset
from vecpack.bench.timing import limit_threads, machine_info
from vecpack.query import planner
from vecpack.search import exact_knn, prepare

K = 10
BATCH = 50_000


def zipf_owners(n: int, tenants: int, seed: int = 0) -> np.ndarray:
    """Owner tenant (0 .. tenants-1) of each of n rows: Zipf(1) sizes, at least 1 row each, dealt at random."""
    sizes = np.maximum(1, np.floor(n / (np.arange(1, tenants + 1) * np.sum(1 / np.arange(1, tenants + 1)))))
    sizes = sizes.astype(np.int64)
    sizes[0] += n - sizes.sum()
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(tenants), sizes))


def run(dataset: str, n_tenants: int, queries_per_tenant: int, out_dir: Path) -> dict[str, Any]:
    ds = load_dataset(dataset)
    x = np.ascontiguousarray(ds.corpus, dtype=np.float32)
    q = np.ascontiguousarray(ds.queries, dtype=np.float32)
    n, d = x.shape
    owner = zipf_owners(n, n_tenants)
    names = [f"t{t:04d}" for t in range(n_tenants)]
    tenant_rows = [np.flatnonzero(owner == t) for t in range(n_tenants)]
    tenant_queries = [q[(np.arange(queries_per_tenant) + t * queries_per_tenant) % q.shape[0]]
                      for t in range(n_tenants)]
    xp, truth = prepare(x, "cosine"), []
    for rows, qs in zip(tenant_rows, tenant_queries, strict=True):
        local = exact_knn(xp[rows], prepare(qs, "cosine"), min(K, rows.size), "ip")[0]
        truth.append([set(rows[t].tolist()) for t in local])
    setups = {}
    with tempfile.TemporaryDirectory() as tmp, limit_threads(2):
        db = vecpack.connect(Path(tmp) / "db")
        warm = db.create_collection("warm", dim=d, codec="int8", index="graph", multi_tenant=True)
        for t in range(4):  # untimed, on a few rows: numba compiles the build kernels here, not in build (s)
            warm.add(list(range(t, 2048, 4)), x[t:2048:4], tenant=names[t % n_tenants])
        warm.optimize()
        db.drop_collection("warm")
        t0 = time.perf_counter()
        col = db.create_collection("mt", dim=d, codec="int8", index="graph", multi_tenant=True)
        for t, rows in enumerate(tenant_rows):
            for a in range(0, rows.size, BATCH):
                part = rows[a : a + BATCH]
                col.add(part.tolist(), x[part], tenant=names[t])
        col.optimize()
        setups["multi-tenant"] = (lambda t, qi, col=col: col.search(qi, K, tenant=names[t]), [col],
                                  time.perf_counter() - t0)
        print(f"multi-tenant built in {setups['multi-tenant'][2]:.1f}s", flush=True)
        t0 = time.perf_counter()
        cols = []
        for t, rows in enumerate(tenant_rows):
            c = db.create_collection(f"sep-{names[t]}", dim=d, codec="int8", index="graph")
            for a in range(0, rows.size, BATCH):
                part = rows[a : a + BATCH]
                c.add(part.tolist(), x[part])
            c.optimize()
            cols.append(c)
        setups["per-tenant collections"] = (lambda t, qi: cols[t].search(qi, K), cols, time.perf_counter() - t0)
        print(f"per-tenant collections built in {setups['per-tenant collections'][2]:.1f}s", flush=True)
        t0 = time.perf_counter()
        shared = db.create_collection("shared", dim=d, codec="int8", index="graph")
        for a in range(0, n, BATCH):
            shared.add(list(range(a, min(a + BATCH, n))), x[a : a + BATCH],
                       [{"tenant": names[owner[i]]} for i in range(a, min(a + BATCH, n))])
        shared.create_field_index("tenant")
        shared.optimize()
        setups["metadata filter"] = (lambda t, qi: shared.search(qi, K, where={"tenant": names[t]}), [shared],
                                     time.perf_counter() - t0)
        print(f"metadata-filter collection built in {setups['metadata filter'][2]:.1f}s", flush=True)

        large = np.array([rows.size > planner.DEFAULT.exact_rows for rows in tenant_rows])
        plans = {t: col.explain(K, tenant=names[t])["plan"] for t in (0, int(np.argmax(~large)))}
        print(f"multi-tenant plans: largest tenant {plans[0]}, first small one {plans[int(np.argmax(~large))]}")
        results = []
        with limit_threads(1):
            for name, (search, collections, build_s) in setups.items():
                results.append(_measure(name, search, collections, build_s, tenant_queries, truth, large))
                r = results[-1]
                print(f"{name:<24} median tenant latency {r['median_tenant_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                      f"recall {r['recall']:.3f}  memory {r['memory_bytes'] / 2**20:.1f} MiB", flush=True)
        db.close()
    sizes = np.bincount(owner, minlength=n_tenants)
    res = {"dataset": dataset, "synthetic": dataset.startswith("synthetic"), "n": n, "dim": d,
           "tenants": n_tenants, "queries_per_tenant": queries_per_tenant, "k": K,
           "tenant_sizes": {"max": int(sizes.max()), "median": float(np.median(sizes)), "min": int(sizes.min())},
           "large_tenants": int(large.sum()), "exact_rows": planner.DEFAULT.exact_rows, "largest_tenant_plan": plans[0],
           "machine": machine_info(), "results": results}
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"tenants_{dataset.replace(':', '_')}_{n_tenants}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
    stem.with_suffix(".md").write_text(markdown(res))
    return res


def _measure(name, search, collections, build_s, tenant_queries, truth, large) -> dict[str, Any]:
    """``large``: bool per tenant, above planner.DEFAULT.exact_rows rows (in the multi-tenant set-up, searched through
    its postings in the shared clusters)."""
    per_tenant, every, recalls = [], [], []
    for t, qs in enumerate(tenant_queries):  # one untimed pass: file pages of a set-up built earlier go cold
        search(t, qs[0])
    for t, qs in enumerate(tenant_queries):
        times = []
        for qi, expected in zip(qs, truth[t], strict=True):
            t0 = time.perf_counter()
            hits = search(t, qi)
            times.append(time.perf_counter() - t0)
            recalls.append(len({int(h.id) for h in hits} & expected) / len(expected))
        per_tenant.append(float(np.median(times)))
        every += times
    per_query = np.array(recalls).reshape(len(tenant_queries), -1).mean(axis=1)
    stats = [c.stats() for c in collections]
    memory = sum(s["memory_bytes"] for s in stats)
    return {"setup": name, "build_s": build_s, "memory_bytes": memory, "recall": float(np.mean(recalls)),
            "field_index_bytes": sum(s["field_index_bytes"] for s in stats),
            "median_tenant_ms": 1e3 * float(np.median(per_tenant)), "p99_ms": 1e3 * float(np.percentile(every, 99)),
            "largest_tenant_ms": 1e3 * per_tenant[0],
            "large_tenants_ms": 1e3 * float(np.median(np.array(per_tenant)[large])),
            "large_tenants_recall": float(per_query[large].mean())}


def markdown(res: dict[str, Any]) -> str:
    src = ("synthetic data (seeded generator fitted to MiniLM SciFact embeddings)" if res["synthetic"]
           else "real embeddings")
    by = {r["setup"]: r for r in res["results"]}
    base = by["per-tenant collections"]
    one_index = by["metadata filter"]["memory_bytes"] - by["metadata filter"]["field_index_bytes"]
    sizes = res["tenant_sizes"]
    lines = [f"# Multi-tenancy: {res['tenants']:,} tenants over {res['dataset']} ({res['n']:,} x {res['dim']}, {src})",
             "", f"Zipf(1) tenant sizes: largest {sizes['max']:,} rows, median {sizes['median']:,.0f}, smallest "
             f"{sizes['min']:,}. {res['queries_per_tenant']} queries per tenant, one per call, 1 thread; int8 codes "
             f"+ graph index everywhere. Machine: {res['machine'].get('cpu', '?')}. Times exclude numba compilation: "
             "the timed builds followed an untimed multi-tenant build on 2,048 rows, and the timed queries one "
             "untimed query per tenant and set-up.", "",
             "| set-up | median tenant latency (ms) | vs per-tenant | p99 (ms) | largest tenant (ms) | "
             f"{res['large_tenants']} tenants over {res['exact_rows']:,} rows: median latency (ms) / recall | "
             "recall@10 | memory (MiB) | vs one shared index | build (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["results"]:
        lines.append(
            f"| {r['setup']} | {r['median_tenant_ms']:.3f} | {r['median_tenant_ms'] / base['median_tenant_ms']:.2f}x"
            f" | {r['p99_ms']:.3f} | {r['largest_tenant_ms']:.3f} | {r['large_tenants_ms']:.3f} / "
            f"{r['large_tenants_recall']:.3f} | {r['recall']:.3f} | "
            f"{r['memory_bytes'] / 2**20:.1f} | {r['memory_bytes'] / one_index:.2f}x | {r['build_s']:.1f} |")
    lines += ["", "\"One shared index\" is the metadata-filter collection without its field index: the same "
              "rows, codes and graph in one collection, nothing per tenant.", "",
              f"Multi-tenant plans: tenants up to {res['exact_rows']:,} rows are scanned exactly; larger ones (the "
              f"largest: `{res['largest_tenant_plan']}`) scan their own rows in the shared clusters nearest the query "
              "(`vecpack.index.tenant_clusters`, Curator-style; memory counts the clusters and the postings built)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="synthetic:200000:384")
    ap.add_argument("--tenants", type=int, default=200)
    ap.add_argument("--queries-per-tenant", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("docs/results"))
    args = ap.parse_args()
    run(args.dataset, args.tenants, args.queries_per_tenant, args.out)


if __name__ == "__main__":
    main()
