"""Markdown tables and the two-panel PNG for one benchmark result dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MARKERS = {"float32": "o", "float16": "s", "int8": "^", "binary": "D", "pq": "P"}
COLORS = {"vecpack": "tab:blue", "faiss": "tab:orange"}


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and digits == 0:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _qps(q: dict[str, float] | None, t: str) -> str:
    if not q or q.get(t) is None:
        return "–"
    return f"{q[t]:,.0f}"


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def _batch_text(q: dict[str, Any]) -> str:
    if q["tiled"]:
        return f"the {q['unique']:,} queries repeated to {q['batch']:,}"
    if q.get("subset"):
        return f"the first {q['batch']:,} of them"
    return f"all {q['batch']:,}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    return [_row(header), _row(sep), *(_row(r) for r in rows), ""]


def _default_runs(c: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in c["runs"] if r["rerank"] in (0, c.get("default_rerank", 0))]


def markdown(res: dict[str, Any]) -> str:
    """A readable report: setup, vecpack table, FAISS table, ours/FAISS ratios, re-rank sweep, caveats."""
    lines = _setup(res)
    lines += _codec_table(res)
    lines += _size_table(res)
    lines += _peer_table(res)
    lines += _comparison_table(res)
    lines += _sweep_table(res)
    lines += _caveats(res)
    return "\n".join(lines)


def _setup(res: dict[str, Any]) -> list[str]:
    """The title, the setup bullets (data, queries, machine, threads, exact reference) and the codecs' intro."""
    k = res["k"]
    ts = [str(t) for t in res["threads"]]
    m = res["machine"]
    q = res["queries"]
    return [
        f"# vecpack benchmark: {res['dataset']}",
        "",
        f"- **data**: {res['note'] or res['dataset']}; n = {res['n']:,}, d = {res['d']}, metric = {res['metric']}",
        f"- **queries**: {q['unique']:,}"
        + (f" ({q['judged']:,} with relevance labels, for nDCG@{k})" if q["judged"] else " (no relevance labels)")
        + f"; QPS batch: {_batch_text(q)}",
        f"- **machine**: {m['cpu']}, {m['cores']} cores; numpy {m['numpy']}, numba {m['numba']}"
        + (f", faiss {m['faiss']}" if m.get("faiss") else "")
        + f"; {m['date']}"
        + (
            f"; CPU busy with other work at start: {m['cpu_busy_start']:.0%}"
            if m.get("cpu_busy_start") is not None
            else ""
        ),
        f"- **threads**: {', '.join(ts)} (numba, BLAS/OpenMP via threadpoolctl, FAISS OpenMP)",
        f"- **exact float32 reference**: recall@{k} = 1, nDCG@{k} = {_num(res['exact']['ndcg@k'])}",
        "- **timing**: times exclude numba compilation: each codec's fit, encode and collection build ran once "
        "untimed on a few rows first, and each QPS follows an untimed call of the same search.",
        "",
        "## vecpack codecs",
        "",
        "Scan level = the codec scan + re-rank + top-k on in-memory arrays, returning row numbers "
        "(comparable to FAISS `index.search`). End to end = `Collection.search` on an on-disk collection "
        "(adds validation, normalisation, SQLite id/metadata lookup and `Hit` objects).",
        "",
    ]


def _codec_table(res: dict[str, Any]) -> list[str]:
    """One row per vecpack codec and re-rank depth (0 and the codec's default): quality, scan and e2e QPS."""
    k = res["k"]
    ts = [str(t) for t in res["threads"]]
    header = ["codec", "bytes/vec", "vs f32", "rerank", f"recall@{k}", f"nDCG@{k}"]
    header += [f"QPS scan {t}t" for t in ts] + [f"QPS e2e {t}t" for t in ts] + ["fit+encode s"]
    rows = []
    for c in res["codecs"]:
        for run in _default_runs(c):
            rows.append(
                [
                    f"`{c['name']}`",
                    str(c["bytes_per_vector"]),
                    f"{c['compression']:.1f}×",
                    str(run["rerank"]),
                    _num(run["recall@k"]),
                    _num(run["ndcg@k"]),
                    *(_qps(run["qps"], t) for t in ts),
                    *(_qps(run.get("qps_e2e"), t) for t in ts),
                    _num(c["fit_encode_s"], 2),
                ]
            )
    return _table(header, rows)


def _size_table(res: dict[str, Any]) -> list[str]:
    """Its intro and one row per vecpack codec: memory and disk MB, fit / encode / add / optimize seconds."""
    lines = [
        "Sizes and build times (memory = what search keeps resident; disk = the collection folder, "
        "which always holds the float32 vectors too):",
        "",
    ]
    header = ["codec", "memory MB", "disk MB", "fit s", "encode s", "collection add s", "optimize s"]
    rows = [
        [
            f"`{c['name']}`",
            f"{c['memory_bytes'] / 1e6:.2f}",
            f"{c['disk_bytes'] / 1e6:.2f}",
            _num(c["fit_s"], 3),
            _num(c["encode_s"], 3),
            _num(c["collection_add_s"], 3),
            _num(c["collection_optimize_s"], 3),
        ]
        for c in res["codecs"]
    ]
    return lines + _table(header, rows)


def _peer_table(res: dict[str, Any]) -> list[str]:
    """The FAISS section: one row per peer at re-rank 0 and the largest codec default; [] without peers."""
    if not res["peers"]:
        return []
    k = res["k"]
    ts = [str(t) for t in res["threads"]]
    lines = ["## FAISS peers (same queries, same threads, flat indexes)", ""]
    header = ["index", "bytes/vec", "vs f32", "rerank", f"recall@{k}", f"nDCG@{k}"]
    header += [f"QPS {t}t" for t in ts] + ["build s"]
    rows = []
    default_r = max((c.get("default_rerank", 0) for c in res["codecs"]), default=0)
    for p in res["peers"]:
        for run in p["runs"]:
            if run["rerank"] not in (0, default_r):
                continue
            rows.append(
                [
                    p["name"],
                    str(p["bytes_per_vector"]),
                    f"{p['compression']:.1f}×",
                    str(run["rerank"]),
                    _num(run["recall@k"]),
                    _num(run["ndcg@k"]),
                    *(_qps(run["qps"], t) for t in ts),
                    _num(p["build_s"], 2),
                ]
            )
    return lines + _table(header, rows)


def _comparison_table(res: dict[str, Any]) -> list[str]:
    """The vecpack / FAISS section: recall, nDCG and QPS ratios per compared pair; [] without comparisons."""
    if not res["comparisons"]:
        return []
    k = res["k"]
    ts = [str(t) for t in res["threads"]]
    lines = ["## vecpack / FAISS (scan level vs `index.search`; > 1 = vecpack higher)", ""]
    header = ["vecpack", "FAISS", f"recall@{k} ours", "FAISS", "ratio", f"nDCG@{k} ratio"]
    header += [f"QPS ratio {t}t" for t in ts]
    rows = []
    for cmp in res["comparisons"]:
        rows.append(
            [
                f"`{cmp['ours']}` (rerank {cmp['rerank']})",
                cmp["faiss"],
                _num(cmp["recall_ours"]),
                _num(cmp["recall_faiss"]),
                _ratio(cmp["recall_ratio"]),
                _ratio(cmp["ndcg_ratio"]),
                *(_ratio(cmp["qps_ratio"].get(t)) for t in ts),
            ]
        )
    return lines + _table(header, rows)


def _sweep_table(res: dict[str, Any]) -> list[str]:
    """The re-rank sweep section: recall @ QPS per system (codec or peer with > 2 runs) and depth; [] if none."""
    sweeps = [c for c in res["codecs"] if len(c["runs"]) > 2] + [p for p in res["peers"] if len(p["runs"]) > 2]
    if not sweeps:
        return []
    k = res["k"]
    ts = [str(t) for t in res["threads"]]
    tmax = ts[-1]
    at = "1 thread" + (f" / {tmax} threads" if tmax != "1" else "")
    lines = [f"## Re-rank sweep (recall@{k} @ QPS at {at})", ""]
    depths = sorted({r["rerank"] for s in sweeps for r in s["runs"]})
    header = ["system", *(f"k'={r}" for r in depths)]
    rows = []
    for s in sweeps:
        by = {r["rerank"]: r for r in s["runs"]}
        label = f"`{s['name']}`" if s["system"] == "vecpack" else f"FAISS {s['name']}"
        cells = []
        for r in depths:
            run = by.get(r)
            if run is None:
                cells.append("–")
                continue
            qps = " / ".join(_qps(run["qps"], t) for t in ts if t in ("1", tmax))
            cells.append(f"{_num(run['recall@k'])} @ {qps}")
        rows.append([label, *cells])
    return lines + _table(header, rows)


def _caveats(res: dict[str, Any]) -> list[str]:
    """The caveats section (ground truth, timing, what is compared, batch tiling or subset, the run's notes)."""
    k = res["k"]
    q = res["queries"]
    tm = res.get("timing", {})
    caveats = [
        f"recall@{k} is measured against exact float32 brute force (`vecpack.search.exact_knn`) on the "
        f"{q['unique']:,} queries; nDCG@{k} uses the dataset's relevance labels"
        + (f" ({q['judged']} judged queries; gain 2^grade - 1)." if q["judged"] else " (none here)."),
        f"QPS = {q['batch']:,} queries / the best wall time of at least {tm.get('repeats', 3)} timed calls, "
        f"repeated until they add up to {tm.get('min_time_s', 0)} s, after a warm-up call. The machine may be "
        "shared: best-of hides short interruptions, not sustained load.",
        "Scan-level and FAISS numbers are both 'batch in, row numbers out'; query normalisation, query "
        "encoding and the float32 re-rank are inside the timed call for both.",
        "vecpack's binary codec scores 4-bit quantised queries against the 1-bit codes (asymmetric); FAISS "
        "IndexBinaryFlat ranks by Hamming distance between sign codes (symmetric). FAISS re-rank = numpy gather "
        "of the k' candidates' float32 vectors + batched matmul.",
        "Re-rank reads float32 vectors that vecpack keeps on disk (mmap), so bytes/vector counts only the "
        "in-memory codes; with re-rank the process also touches k' float32 rows per query.",
        "fit+encode = array-level codec training on the rows a collection trains on (all rows up to 65,536) "
        "plus encoding the corpus, at the default thread count.",
    ]
    if q["tiled"]:
        caveats.insert(
            1,
            f"The dataset has only {q['unique']} queries: the QPS batch repeats them to "
            f"{q['batch']:,} queries (recall/nDCG use each query once).",
        )
    elif q.get("subset"):
        caveats.insert(
            1,
            f"QPS uses the first {q['batch']:,} of the {q['unique']:,} queries; recall and nDCG use all of them.",
        )
    caveats += res.get("notes", [])
    return ["## Caveats", "", *(f"- {c}" for c in caveats), ""]


def plot(res: dict[str, Any], path: Path) -> None:
    """Two panels: recall@k vs bytes/vector (log x), and 1-thread QPS vs recall@k; vecpack and FAISS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    k = res["k"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    for i, entry in enumerate([*res["codecs"], *res["peers"]]):
        sys_, fam = entry["system"], entry["family"]
        color, marker = COLORS[sys_], MARKERS.get(fam, "x")
        runs = sorted(entry["runs"], key=lambda r: r["rerank"])
        label = entry.get("short", entry["name"])
        # panel 1: one point per re-rank depth at the codec's size (nudged apart: vecpack left, FAISS right)
        x = entry["bytes_per_vector"] * (0.95 if sys_ == "vecpack" else 1.05)
        ys = [r["recall@k"] for r in runs]
        ax1.plot([x] * len(runs), ys, marker=marker, color=color, lw=0.8, ms=7, alpha=0.9)
        ours_side = sys_ == "vecpack"
        if len(runs) > 1:  # a vertical sweep: name its bottom (k' = 0) point, vecpack left, FAISS right
            where, ha = ((-7, -3), "right") if ours_side else ((7, -3), "left")
        else:  # a lone point: vecpack above, FAISS below
            where, ha = ((0, 7), "center") if ours_side else ((0, -13), "center")
        ax1.annotate(label, (x, ys[0]), textcoords="offset points", xytext=where, ha=ha, fontsize=7, color=color)
        # panel 2: QPS (1 thread) vs recall, a curve over re-rank depths, labelled at k' = 0
        xs = [r["recall@k"] for r in runs]
        qs = [r["qps"].get("1") for r in runs]
        if all(q is not None for q in qs):
            ax2.plot(xs, qs, marker=marker, color=color, lw=1.2, ms=7)
            ax2.annotate(
                label, (xs[0], qs[0]), textcoords="offset points", xytext=(6, 6 - 9 * (i % 3)), fontsize=7, color=color
            )
    ax1.set_xscale("log")
    ax1.set_xlabel("bytes / vector in memory (log)")
    ax1.set_ylabel(f"recall@{k} vs exact float32")
    ax1.set_title("memory vs recall (vertical lines: re-rank depth k')")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.margins(x=0.15)
    ax2.set_yscale("log")
    ax2.set_xlabel(f"recall@{k}")
    ax2.set_ylabel(f"QPS, 1 thread, batch of {res['queries']['batch']:,}")
    ax2.set_title("speed vs recall (curves: re-rank depth k')")
    ax2.grid(True, which="both", alpha=0.3)
    handles = [
        Line2D([], [], color=c, marker="o", lw=0, label=s)
        for s, c in COLORS.items()
        if any(e["system"] == s for e in [*res["codecs"], *res["peers"]])
    ]
    families = {e["family"] for e in [*res["codecs"], *res["peers"]]}
    handles += [Line2D([], [], color="gray", marker=mk, lw=0, label=f) for f, mk in MARKERS.items() if f in families]
    ax2.legend(handles=handles, fontsize=8, loc="best")
    fig.suptitle(
        f"{res['dataset']}: n={res['n']:,}, d={res['d']}, {res['metric']}  ({res['machine']['cpu']})", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
