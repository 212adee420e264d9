"""Filtered search benchmark: vecpack's planner against post-filtering, FAISS with IDSelector and hnswlib
with a filter function, at selectivities 0.1% .. 50%, uncorrelated and correlated with vector clusters.

Attributes (one collection, both fields indexed with ``create_field_index``):

* ``u``: a uniform random integer in [0, 1000) per row, independent of the vector;
  ``{"u": {"$lt": 1000 s}}`` passes a fraction s of the rows (uncorrelated);
* ``c``: the rank, in a random order of 1000 k-means clusters of the corpus, of the
  row's cluster; ``{"c": {"$lt": 1000 s}}`` passes whole clusters, about a fraction s
  of the rows (correlated: matching rows sit together, mostly away from a given query).

Methods, each timed one query per call with 1 thread, recall@10 against the exact
float32 top 10 among the matching rows:

* ``vecpack``: ``Collection.search(q, 10, where=...)`` end to end (filter evaluated on
  the field index on every call, plan chosen by selectivity, ids and metadata fetched);
  and the same call with each plan forced (``exact``, ``filtered``, ``postfilter``), to
  check the planner's thresholds;
* ``post-filter xF``: the same graph searched without the filter for 10 F candidates
  (ef = 10 F) then filtered, with the filter bitmap precomputed and free (a lower bound
  on what post-filtering costs); F in 10, 100;
* ``faiss HNSW + IDSelectorBitmap`` and ``hnswlib + filter function`` (M=16, efC=200),
  each at ef 64 and 256.

Batching: the queries, each with one of the eight filters in turn, searched one call per
query and in one call with a list of filters (``where=[...]``: queries sharing a filter
share its evaluation and its scan), 1 thread.

Writes docs/results/filtered_<dataset>.{json,md,png}. Synthetic data is labelled as such.

    python bench/filtered.py --dataset scifact-sentences
    python bench/filtered.py --dataset synthetic:1000000:384 --only 'c:0.01' --no-peers --suffix _c1  # one point again
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import vecpack
from vecpack.bench.datasets import load_dataset
from vecpack.bench.peers import import_faiss
from vecpack.bench.timing import limit_threads, machine_info, timed
from vecpack.kernels.kmeans import assign, kmeans
from vecpack.search import ScanData, exact_knn, prepare, search_rows

K = 10
SELECTIVITIES = (0.001, 0.01, 0.1, 0.5)
BUCKETS = 1000
POSTFILTER_FACTORS = (10, 100)
PEER_EFS = (64, 256)
FORCED_QUERIES = 300
GRAPH_M, EF_CONSTRUCTION = 16, 200


def attributes(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(u, c) per row: uniform buckets, and cluster ranks (1000 k-means clusters in a random order)."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, BUCKETS, x.shape[0])
    sample = x[rng.permutation(x.shape[0])[: 64 * BUCKETS]]
    centroids = kmeans(sample, BUCKETS, iters=10, seed=seed)
    labels = assign(x, centroids)[0]
    rank = rng.permutation(BUCKETS)
    return u, rank[labels]


#: the plans measured forced on every filter (``Collection.search(plan=...)``; a graph's forced post-filter
#: keeps its fallback to the walk)
FORCED = ("exact", "filtered", "postfilter")


def timed_queries(search, q: np.ndarray, repeat_first: bool = True) -> tuple[np.ndarray, float]:
    """Rows (m, K) of search(one query) per query, and queries per second (after one warm-up call)."""
    if repeat_first:
        search(q[0])
    out = np.full((q.shape[0], K), -1, dtype=np.int64)
    t = time.perf_counter()
    for i in range(q.shape[0]):
        r = np.asarray(search(q[i]), dtype=np.int64)[:K]
        out[i, : r.size] = r
    return out, q.shape[0] / (time.perf_counter() - t)


def recall(rows: np.ndarray, truth: list[np.ndarray]) -> float:
    return float(np.mean([len(set(r[r >= 0].tolist()) & set(t.tolist())) / max(t.size, 1) if t.size else 1.0
                          for r, t in zip(rows, truth, strict=True)]))


def run(dataset: str, n_queries: int, peer_queries: int, out_dir: Path, only: str | None = None,
        peers: bool = True, suffix: str = "") -> dict[str, Any]:
    """``only``: a regex; measure just the points "u:<s>" / "c:<s>" it matches (s in SELECTIVITIES).
    ``peers``: build and measure FAISS and hnswlib. ``suffix`` is appended to the result files' names."""
    ds = load_dataset(dataset, max_queries=n_queries)
    x = np.ascontiguousarray(ds.corpus, dtype=np.float32)
    q = np.ascontiguousarray(ds.queries, dtype=np.float32)
    xp, qp = prepare(x, "cosine"), prepare(q, "cosine")
    n, d = x.shape
    u, c = attributes(xp)
    faiss, why = import_faiss()
    if faiss is None:
        raise SystemExit(why)
    hnsw = hl = None

    with tempfile.TemporaryDirectory() as tmp, limit_threads(2, faiss):
        if peers:
            import hnswlib

            t0 = time.perf_counter()
            hnsw = faiss.IndexHNSWFlat(d, GRAPH_M, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = EF_CONSTRUCTION
            hnsw.add(xp)
            print(f"faiss HNSW built in {time.perf_counter() - t0:.1f}s", flush=True)
            t0 = time.perf_counter()
            hl = hnswlib.Index(space="ip", dim=d)
            hl.init_index(max_elements=n, ef_construction=EF_CONSTRUCTION, M=GRAPH_M, random_seed=100)
            hl.add_items(xp, np.arange(n), num_threads=2)
            print(f"hnswlib built in {time.perf_counter() - t0:.1f}s", flush=True)
        # ours last, then one untimed pass: its codes and graph are file pages, which this host reclaims
        # when they go cold (the peers' indexes are anonymous memory); the first 1M run measured cold pages
        db = vecpack.connect(Path(tmp) / "db")
        warm = db.create_collection("warm", dim=d, metric="cosine", codec="int8", index="graph")
        _fill(warm, x[:2048], u[:2048], c[:2048])  # untimed: numba compiles the build's kernels here, not in build_s
        db.drop_collection("warm")
        col = db.create_collection("bench", dim=d, metric="cosine", codec="int8", index="graph")
        (_, build_s) = timed(lambda: _fill(col, x, u, c))
        print(f"vecpack: filled and indexed {n} rows in {build_s:.1f}s", flush=True)
        col.search(q, K)

        with limit_threads(1, faiss):
            reference = _unfiltered(col, xp, qp)
            print(f"unfiltered: {reference}", flush=True)
            points = []
            for field, values in (("u", u), ("c", c)):
                for s in SELECTIVITIES:
                    if only is not None and not re.fullmatch(only, f"{field}:{s}"):
                        continue
                    where = {field: {"$lt": round(s * BUCKETS)}}
                    allowed = values < round(s * BUCKETS)
                    points.append(_measure(col, hnsw, hl, faiss, where, allowed, xp, qp, peer_queries))
                    p = points[-1]
                    print(f"{'correlated' if field == 'c' else 'uncorrelated':<12} s={p['selectivity']:.4f}  plan "
                          f"{p['plan']:<10} " + "  ".join(f"{m['method']} {m['recall']:.3f}/{m['qps']:,.0f}"
                                                       for m in p["methods"] if m["qps"]), flush=True)
            batching = _batching(col, qp, [p["where"] for p in points])
            print(f"batching: {batching}", flush=True)
        db.close()
    res = {"dataset": dataset, "synthetic": dataset.startswith("synthetic"), "n": n, "dim": d,
           "queries": q.shape[0], "peer_queries": peer_queries if peers else 0, "k": K, "machine": machine_info(faiss),
           "vecpack_build_s": build_s, "unfiltered": reference, "points": points, "batching": batching}
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"filtered_{dataset.replace(':', '_')}{suffix}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
    stem.with_suffix(".md").write_text(markdown(res))
    if only is None:  # a partial run's few points make no curve
        plot(res, stem.with_suffix(".png"))
    return res


def _fill(col: vecpack.Collection, x: np.ndarray, u: np.ndarray, c: np.ndarray) -> None:
    for a in range(0, x.shape[0], 50_000):
        b = min(a + 50_000, x.shape[0])
        col.add(list(range(a, b)), x[a:b], [{"u": int(u[i]), "c": int(c[i])} for i in range(a, b)])
    col.create_field_index("u")
    col.create_field_index("c")
    col.optimize()


def _measure(col, hnsw, hl, faiss, where, allowed, xp, qp, peer_queries) -> dict[str, Any]:
    rows = np.flatnonzero(allowed)
    truth_local = exact_knn(xp[rows], qp, min(K, rows.size), "ip")[0]
    truth = [rows[t] for t in truth_local]
    plan = col.explain(K, where=where)
    methods = []

    def ours(qi, plan=None):
        return [int(h.id) for h in col.search(qi, K, where=where, plan=plan)]

    found, qps = timed_queries(ours, qp)
    methods.append({"method": "vecpack", "recall": recall(found, truth), "qps": qps})
    for name in FORCED:  # on FORCED_QUERIES queries; post-filtering below 5% would walk most of the graph
        if name == "postfilter" and rows.size < 0.05 * allowed.size:
            methods.append({"method": f"vecpack {name}", "recall": None, "qps": None})
            continue
        found, qps = timed_queries(lambda qi, name=name: ours(qi, name), qp[:FORCED_QUERIES])
        methods.append({"method": f"vecpack {name}", "recall": recall(found, truth[:FORCED_QUERIES]), "qps": qps})
    # post-filter: the same graph and codes, searched unfiltered for K*F candidates, filtered by a free bitmap
    seg = col._store.segments  # the collection's own codes and index, searched without its planner
    codec, index = seg.codec, seg.index
    codes, vectors = seg.codes.view(seg.sealed), seg.vectors.view(seg.n_rows, np.float32)
    live = np.ones(vectors.shape[0], dtype=np.uint8)
    for f in POSTFILTER_FACTORS:
        def post(qi, f=f):
            _, r = search_rows(qi[None, :], K * f, ScanData(codec, codes, vectors, "cosine", 0), live, index=index,
                               ef=K * f)
            r = r[0][r[0] >= 0]
            return r[allowed[r]][:K]

        found, qps = timed_queries(post, qp)
        methods.append({"method": f"post-filter x{f}", "recall": recall(found, truth), "qps": qps})
    if hnsw is None:
        return {"where": where, "correlated": "c" in where, "selectivity": float(allowed.mean()),
                "matches": int(rows.size), "plan": plan["plan"], "methods": methods}
    bitmap = np.packbits(allowed, bitorder="little")
    selector = faiss.IDSelectorBitmap(allowed.size, faiss.swig_ptr(bitmap))
    k_peer = min(K, rows.size)  # hnswlib raises when fewer than k rows pass its filter
    for ef in PEER_EFS:
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
        found, qps = timed_queries(lambda qi, p=params: hnsw.search(qi[None, :], k_peer, params=p)[1][0],
                                   qp[:peer_queries])
        methods.append({"method": f"faiss HNSW+IDSelector ef{ef}", "recall": recall(found, truth[:peer_queries]),
                        "qps": qps})
    for ef in PEER_EFS:
        hl.set_ef(ef)

        def hsearch(qi):
            try:
                return hl.knn_query(qi[None, :], k=k_peer, filter=lambda label: bool(allowed[label]))[0][0]
            except RuntimeError:  # hnswlib raises when it finds fewer than k rows
                return np.zeros(0, dtype=np.int64)

        found, qps = timed_queries(hsearch, qp[:peer_queries])
        methods.append({"method": f"hnswlib+filter ef{ef}", "recall": recall(found, truth[:peer_queries]),
                        "qps": qps})
    return {"where": where, "correlated": "c" in where, "selectivity": float(allowed.mean()),
            "matches": int(rows.size), "plan": plan["plan"], "methods": methods}


def _unfiltered(col: vecpack.Collection, xp: np.ndarray, qp: np.ndarray) -> dict[str, float]:
    """Recall and QPS of the same end-to-end call without a filter: the fixed cost every filtered call pays too."""
    truth = list(exact_knn(xp, qp, K, "ip")[0])
    found, qps = timed_queries(lambda qi: [int(h.id) for h in col.search(qi, K)], qp)
    return {"recall": recall(found, truth), "qps": qps}


def _batching(col: vecpack.Collection, qp: np.ndarray, wheres: list[dict[str, Any]]) -> dict[str, float]:
    """QPS of mixed-filter queries one call per query, and in one call with a list of filters."""
    per_query = [wheres[i % len(wheres)] for i in range(qp.shape[0])]
    col.search(qp, K, where=per_query)  # warm: the batched kernels compile on first use
    t = time.perf_counter()
    for qi, w in zip(qp, per_query, strict=True):
        col.search(qi, K, where=w)
    one_by_one = qp.shape[0] / (time.perf_counter() - t)
    t = time.perf_counter()
    col.search(qp, K, where=per_query)
    batched = qp.shape[0] / (time.perf_counter() - t)
    return {"filters": len(wheres), "queries": qp.shape[0], "qps_one_per_call": one_by_one, "qps_batched": batched}


def markdown(res: dict[str, Any]) -> str:
    names = [m["method"] for m in res["points"][0]["methods"]]
    src = ("synthetic data (seeded generator fitted to MiniLM SciFact embeddings)" if res["synthetic"]
           else "real embeddings")
    lines = [f"# Filtered search: {res['dataset']} ({res['n']:,} x {res['dim']}, {src})", "",
             f"Machine: {res['machine'].get('cpu', '?')}; {res['queries']} queries for vecpack and post-filtering, "
             + (f"{res['peer_queries']} for the peers" if res["peer_queries"] else "no peers in this run")
             + f"; recall@{res['k']} against the exact top {res['k']} among the "
             "matching rows; QPS one query per call, 1 thread. vecpack is int8 codes + graph, no re-rank, "
             "end to end through `Collection.search(where=...)`, with the planner's choice (`plan`) and with "
             "each plan forced (`vecpack exact` / `filtered` / `postfilter`, 300 queries; the forced post-filter "
             "keeps its fallback to the filtered walk). Cells: recall / QPS. QPS excludes numba compilation: each "
             "method's timed queries followed one untimed query, and the batched call one untimed call.", "",
             "| filter | selectivity | plan | " + " | ".join(names) + " | vecpack QPS / best post-filter with "
             "recall >= 0.95 |", "|" + "---|" * (len(names) + 4)]
    for p in res["points"]:
        by = {m["method"]: m for m in p["methods"]}
        ok = [m["qps"] for m in p["methods"] if m["method"].startswith("post") and m["recall"] >= 0.95]
        ratio = f"{by['vecpack']['qps'] / max(ok):.1f}x" if ok else "no post-filter reaches 0.95"
        kind = "correlated" if p["correlated"] else "uncorrelated"
        cells = [f"{by[n]['recall']:.3f} / {by[n]['qps']:,.0f}" if by[n]["qps"] else "-" for n in names]
        lines.append(f"| {kind} | {p['selectivity']:.2%} | {p['plan']} | " + " | ".join(cells) + f" | {ratio} |")
    ref = res.get("unfiltered")
    if ref:
        lines += ["", f"Reference: the same `Collection.search` without a filter, {ref['recall']:.3f} / "
                  f"{ref['qps']:,.0f} (ids and metadata fetched from SQLite on every call). The post-filter, "
                  "FAISS and hnswlib columns call the index directly and fetch nothing, so they skip that cost."]
    b = res.get("batching")
    if b:
        lines += ["", f"Batching: {b['queries']} queries cycling through the {b['filters']} filters above, one call "
                  f"per query {b['qps_one_per_call']:,.0f} QPS, one call with a list of filters "
                  f"{b['qps_batched']:,.0f} QPS ({b['qps_batched'] / b['qps_one_per_call']:.1f}x)."]
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, correlated in zip(axes, (False, True), strict=True):
        pts = [p for p in res["points"] if p["correlated"] == correlated]
        for name in [m["method"] for m in pts[0]["methods"]]:
            found = [(p["selectivity"], m["qps"], m["recall"]) for p in pts for m in p["methods"]
                     if m["method"] == name and m["qps"]]
            xs, ys, rs = zip(*found, strict=True)
            line = ax.plot(xs, ys, marker="o", label=name)[0]
            for xv, yv, rv in zip(xs, ys, rs, strict=True):
                ax.annotate(f"{rv:.2f}", (xv, yv), fontsize=6, color=line.get_color())
        ax.set(xscale="log", yscale="log", xlabel="selectivity", title="correlated" if correlated else "uncorrelated")
    axes[0].set_ylabel("QPS (1 thread; labels: recall@10)")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"Filtered search, {res['dataset']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="scifact-sentences")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--peer-queries", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("docs/results"))
    ap.add_argument("--only", default=None, help='regex over points "u:0.01", "c:0.1", ...: measure only those')
    ap.add_argument("--no-peers", action="store_true", help="skip FAISS and hnswlib")
    ap.add_argument("--suffix", default="", help="appended to the result files' names")
    args = ap.parse_args()
    run(args.dataset, args.queries, args.peer_queries, args.out, args.only, not args.no_peers, args.suffix)


if __name__ == "__main__":
    main()
