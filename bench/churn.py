"""Delete/insert churn: does a graph collection keep its recall, memory and disk size? (vecpack vs hnswlib)

Through the public API (``vecpack.connect(tmpdir)``, ``create_collection(codec="int8",
index="graph")``, default graph parameters) the script

1. adds a random 80% of the corpus (id = row number) and calls ``optimize()``;
2. runs ``--cycles`` cycles of: delete a random ``--fraction`` of the live ids, add as many
   new ids (rows from the never-used pool; once it is empty, rows not currently live are
   re-added under new ids >= n), then ``optimize()`` (which compacts when >= 10% of the rows
   are deleted). The state is recorded both before and after ``optimize()``;
3. builds a fresh collection from the final live set and records the same numbers.

Recorded per state: recall@10 against exact float32 kNN over the rows live at that moment
(``--queries`` queries; default search parameters, i.e. ef = 64 and rerank 0 for int8, and
ef = 16 for a more sensitive reading), ``stats()`` memory_bytes / disk_bytes / rows /
deleted_rows / index_bytes, and ``optimize()`` seconds. Finally churned / fresh ratios.

Peers in the same run, fed the identical operation sequence: hnswlib (M=16,
efConstruction=200, float32) with ``mark_deleted`` + ``add_items``, growing ``max_elements``
by ``resize_index`` (x1.2 or to what is needed, as Chroma does; no slot reuse), and the
``allow_replace_deleted=True`` / ``replace_deleted=True`` variant. For them: element count
(``get_current_count``, deleted elements included), ``max_elements``, the ``save_index``
file size as the memory figure (as in vecpack.bench.ann_peers), recall@10 at ef 64 and 16.

Two threads (``limit_threads(2)``); the machine is shared, so seconds are
recorded, not compared. Writes docs/results/churn_<dataset>.{json,md,png}.

    python bench/churn.py --dataset scifact-sentences --cycles 10 --fraction 0.1
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import vecpack
from vecpack.bench.datasets import load_dataset
from vecpack.bench.timing import limit_threads, machine_info
from vecpack.search import prepare

K = 10
THREADS = 2
INITIAL_FRACTION = 0.8
HNSW_M = 16
HNSW_EFC = 200
HNSW_SEED = 100
RESIZE_FACTOR = 1.2  # Chroma's default hnsw:resize_factor
EF_EXTRA = 16  # a second, more sensitive ef reading (the default is 64)
ADD_BATCH = 10_000
STATS_KEYS = ("n", "rows", "sealed_rows", "growing_rows", "deleted_rows", "indexed_rows", "index_bytes",
              "memory_bytes", "disk_bytes")


# --------------------------------------------------------------------------- the operation plan


@dataclass
class Cycle:
    delete_ids: np.ndarray
    add_ids: np.ndarray
    add_rows: np.ndarray
    reused_rows: int  # how many of add_rows were live before under another id


@dataclass
class Plan:
    n: int
    initial_ids: np.ndarray  # ids = rows
    cycles: list[Cycle] = field(default_factory=list)
    id_row: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # id -> source row


def make_plan(n: int, cycles: int, fraction: float, seed: int) -> Plan:
    """Seeded operation sequence shared by every system; the live set never holds one row twice."""
    rng = np.random.default_rng(seed)
    initial = rng.choice(n, size=round(INITIAL_FRACTION * n), replace=False).astype(np.int64)
    plan = Plan(n, initial)
    id_row = list(range(n))
    live_ids = initial.copy()
    row_live = np.zeros(n, dtype=bool)
    row_live[initial] = True
    used = row_live.copy()
    next_id = n
    for _ in range(cycles):
        m = round(fraction * live_ids.size)
        pick = rng.choice(live_ids.size, size=m, replace=False)
        dels = live_ids[pick]
        live_ids = np.delete(live_ids, pick)
        row_live[np.asarray(id_row)[dels]] = False
        pool = np.flatnonzero(~used)
        fresh = rng.permutation(pool)[:m]
        rest = m - fresh.size
        reused = rng.permutation(np.flatnonzero(~row_live & used))[:rest] if rest else np.zeros(0, dtype=np.int64)
        rows = np.concatenate([fresh, reused]).astype(np.int64)
        ids = np.concatenate([fresh, np.arange(next_id, next_id + reused.size)]).astype(np.int64)
        id_row.extend(reused.tolist())
        next_id += reused.size
        used[fresh] = True
        row_live[rows] = True
        live_ids = np.concatenate([live_ids, ids])
        plan.cycles.append(Cycle(dels, ids, rows, int(reused.size)))
    plan.id_row = np.asarray(id_row, dtype=np.int64)
    return plan


def live_after(plan: Plan, cycle: int) -> np.ndarray:
    """Live ids after ``cycle`` cycles (0 = the initial set)."""
    live = set(plan.initial_ids.tolist())
    for c in plan.cycles[:cycle]:
        live.difference_update(c.delete_ids.tolist())
        live.update(c.add_ids.tolist())
    return np.array(sorted(live), dtype=np.int64)


# --------------------------------------------------------------------------- recall


class Truth:
    """Exact top-k (as source rows) over a live subset of the prepared corpus."""

    def __init__(self, x: np.ndarray, q: np.ndarray, metric: str) -> None:
        self.x, self.q, self.metric = x, q, metric
        self.sq = np.einsum("ij,ij->i", x, x) if metric == "l2" else None

    def topk(self, rows: np.ndarray) -> np.ndarray:
        xs = self.x[rows]
        s = self.q @ xs.T
        if self.sq is not None:
            s = 2.0 * s - self.sq[rows][None, :]
        top = np.argpartition(-s, K, axis=1)[:, :K]
        return rows[top]


def recall(found_rows: np.ndarray, truth_rows: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found_rows, truth_rows, strict=True))
    return hits / (K * truth_rows.shape[0])


# --------------------------------------------------------------------------- vecpack


def disk_breakdown(folder: Path) -> dict[str, dict[str, int]]:
    """Apparent size (st_size) and allocated size (st_blocks) per kind of file.

    The vector log and codes files grow by ftruncate (up to 2x ahead of the rows), so their tail
    is sparse: the apparent size overstates the blocks actually used.
    """
    out: dict[str, dict[str, int]] = {}
    for f in folder.rglob("*"):
        if not f.is_file():
            continue
        rel = f.relative_to(folder).parts[0]
        kind = rel if rel.startswith("catalog") else next(
            (k for k in ("vectors", "codes", "index") if rel.startswith(k)), "other")
        st = f.stat()
        entry = out.setdefault(kind, {"apparent": 0, "allocated": 0})
        entry["apparent"] += st.st_size
        entry["allocated"] += st.st_blocks * 512
    return out


def ours_state(col: Any, queries: np.ndarray, truth: np.ndarray, id_row: np.ndarray) -> dict[str, Any]:
    """stats() subset, disk breakdown, recall at the default search parameters and at ef=EF_EXTRA."""
    st = col.stats()
    out: dict[str, Any] = {k: st[k] for k in STATS_KEYS}
    out["disk_files"] = disk_breakdown(col.path)
    out["disk_allocated_bytes"] = sum(v["allocated"] for v in out["disk_files"].values())
    out["disk_apparent_bytes"] = sum(v["apparent"] for v in out["disk_files"].values())
    for name, kw in (("recall_default", {}), (f"recall_ef{EF_EXTRA}", {"ef": EF_EXTRA})):
        hits = col.search(queries, k=K, **kw)
        found = np.full((len(hits), K), -1, dtype=np.int64)
        for i, hs in enumerate(hits):
            for j, h in enumerate(hs):
                found[i, j] = id_row[int(h.id)]
        out[name] = recall(found, truth)
    return out


def optimize(col: Any) -> dict[str, Any]:
    """col.optimize(), timed."""
    t0 = time.perf_counter()
    col.optimize()
    return {"optimize_s": time.perf_counter() - t0}


def add_rows(col: Any, corpus: np.ndarray, ids: np.ndarray, rows: np.ndarray) -> None:
    for a in range(0, ids.size, ADD_BATCH):
        col.add(ids[a : a + ADD_BATCH].tolist(), corpus[rows[a : a + ADD_BATCH]])


def run_ours(plan: Plan, corpus: np.ndarray, queries: np.ndarray, truths: list[np.ndarray], metric: str,
             folder: Path) -> dict[str, Any]:
    db = vecpack.connect(folder)
    warm = db.create_collection("warmup", dim=corpus.shape[1], metric=metric, codec="int8", index="graph")
    warm.add(list(range(2048)), corpus[:2048])  # numba compiles the graph kernels here, not in cycle 0
    warm.optimize()
    for i in range(2):  # and two cycles' deletes, adds and optimize(): the second compacts, as cycle 2 does
        warm.delete(list(range(200 * i, 200 * i + 200)))
        warm.add(list(range(2048 + 200 * i, 2248 + 200 * i)), corpus[2048 + 200 * i : 2248 + 200 * i])
        warm.optimize()
    db.drop_collection("warmup")
    col = db.create_collection("churn", dim=corpus.shape[1], metric=metric, codec="int8", index="graph")
    t0 = time.perf_counter()
    add_rows(col, corpus, plan.initial_ids, plan.initial_ids)
    add_s = time.perf_counter() - t0
    opt = optimize(col)
    states = [{"cycle": 0, "add_s": add_s, **opt, "after": ours_state(col, queries, truths[0], plan.id_row)}]
    print(f"  ours cycle 0: {states[0]['after']}", flush=True)
    for i, c in enumerate(plan.cycles, start=1):
        t0 = time.perf_counter()
        col.delete(c.delete_ids.tolist())
        add_rows(col, corpus, c.add_ids, c.add_rows)
        write_s = time.perf_counter() - t0
        before = ours_state(col, queries, truths[i], plan.id_row)
        opt = optimize(col)
        after = ours_state(col, queries, truths[i], plan.id_row)
        states.append({"cycle": i, "write_s": write_s, "reused_rows": c.reused_rows, **opt, "before": before,
                       "after": after})
        print(f"  ours cycle {i}: rows {before['rows']}->{after['rows']} recall {after['recall_default']:.4f} "
              f"mem {after['memory_bytes'] / 1e6:.1f} MB disk {after['disk_bytes'] / 1e6:.1f} MB "
              f"(apparent {after['disk_apparent_bytes'] / 1e6:.1f}) "
              f"opt {opt['optimize_s']:.1f}s", flush=True)
    try:
        col.verify()
        verify = "ok"
    except Exception as exc:
        verify = f"{type(exc).__name__}: {exc}"
    final_ids = live_after(plan, len(plan.cycles))
    fresh_ids = np.random.default_rng(1).permutation(final_ids)
    fresh = db.create_collection("fresh", dim=corpus.shape[1], metric=metric, codec="int8", index="graph")
    t0 = time.perf_counter()
    add_rows(fresh, corpus, fresh_ids, plan.id_row[fresh_ids])
    fresh_add_s = time.perf_counter() - t0
    fopt = optimize(fresh)
    fresh_state = {"add_s": fresh_add_s, **fopt, "after": ours_state(fresh, queries, truths[-1], plan.id_row)}
    print(f"  ours fresh: {fresh_state['after']}", flush=True)
    db.close()
    return {"cycles": states, "verify_after_churn": verify, "fresh": fresh_state}


# --------------------------------------------------------------------------- hnswlib


def hnsw_state(index: Any, queries: np.ndarray, truth: np.ndarray, id_row: np.ndarray) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hnsw.bin")
        index.save_index(path)
        size = os.path.getsize(path)
    out: dict[str, Any] = {"elements": int(index.get_current_count()), "max_elements": int(index.get_max_elements()),
                           "file_bytes": size}
    for ef in (64, EF_EXTRA):
        index.set_ef(max(ef, K))
        labels, _ = index.knn_query(queries, k=K, num_threads=THREADS)
        out[f"recall_ef{ef}"] = recall(id_row[labels.astype(np.int64)], truth)
    return out


def run_hnswlib(plan: Plan, x: np.ndarray, q: np.ndarray, truths: list[np.ndarray], metric: str,
                replace: bool) -> dict[str, Any]:
    import hnswlib

    def new_index(cap: int) -> Any:
        index = hnswlib.Index(space="l2" if metric == "l2" else "ip", dim=x.shape[1])
        index.init_index(max_elements=cap, ef_construction=HNSW_EFC, M=HNSW_M, random_seed=HNSW_SEED,
                         allow_replace_deleted=replace)
        return index

    index = new_index(plan.initial_ids.size)
    t0 = time.perf_counter()
    index.add_items(x[plan.initial_ids], plan.initial_ids, num_threads=THREADS)
    states = [{"cycle": 0, "write_s": time.perf_counter() - t0, **hnsw_state(index, q, truths[0], plan.id_row)}]
    live = plan.initial_ids.size
    for i, c in enumerate(plan.cycles, start=1):
        t0 = time.perf_counter()
        for label in c.delete_ids.tolist():
            index.mark_deleted(label)
        live -= c.delete_ids.size
        needed = (live if replace else index.get_current_count()) + c.add_ids.size
        resized = False
        if needed > index.get_max_elements():
            index.resize_index(max(needed, int(index.get_max_elements() * RESIZE_FACTOR)))
            resized = True
        index.add_items(x[c.add_rows], c.add_ids, num_threads=THREADS, replace_deleted=replace)
        live += c.add_ids.size
        states.append({"cycle": i, "write_s": time.perf_counter() - t0, "resized": resized,
                       **hnsw_state(index, q, truths[i], plan.id_row)})
        s = states[-1]
        print(f"  hnswlib{' replace' if replace else ''} cycle {i}: elements {s['elements']} "
              f"file {s['file_bytes'] / 1e6:.1f} MB recall {s['recall_ef64']:.4f}", flush=True)
    return {"replace_deleted": replace, "cycles": states}


def run_hnswlib_fresh(plan: Plan, x: np.ndarray, q: np.ndarray, truth: np.ndarray, metric: str) -> dict[str, Any]:
    import hnswlib

    ids = np.random.default_rng(1).permutation(live_after(plan, len(plan.cycles)))
    index = hnswlib.Index(space="l2" if metric == "l2" else "ip", dim=x.shape[1])
    index.init_index(max_elements=ids.size, ef_construction=HNSW_EFC, M=HNSW_M, random_seed=HNSW_SEED)
    t0 = time.perf_counter()
    index.add_items(x[plan.id_row[ids]], ids, num_threads=THREADS)
    return {"write_s": time.perf_counter() - t0, **hnsw_state(index, q, truth, plan.id_row)}


# --------------------------------------------------------------------------- report


def ratios(res: dict[str, Any]) -> dict[str, Any]:
    churned = res["ours"]["cycles"][-1]["after"]
    fresh = res["ours"]["fresh"]["after"]
    out: dict[str, Any] = {"ours": {
        "recall_default_diff_pts": 100 * (churned["recall_default"] - fresh["recall_default"]),
        f"recall_ef{EF_EXTRA}_diff_pts": 100 * (churned[f"recall_ef{EF_EXTRA}"] - fresh[f"recall_ef{EF_EXTRA}"]),
        "memory_ratio": churned["memory_bytes"] / fresh["memory_bytes"],
        "disk_ratio": churned["disk_bytes"] / fresh["disk_bytes"],
        "disk_allocated_ratio": churned["disk_allocated_bytes"] / fresh["disk_allocated_bytes"],
        "disk_apparent_ratio": churned["disk_apparent_bytes"] / fresh["disk_apparent_bytes"],
        "index_ratio": churned["index_bytes"] / fresh["index_bytes"],
        "rows_ratio": churned["rows"] / fresh["rows"],
    }}
    hf = res["hnswlib_fresh"]
    for key, run in res["hnswlib"].items():
        last = run["cycles"][-1]
        out[key] = {
            "recall_ef64_diff_pts": 100 * (last["recall_ef64"] - hf["recall_ef64"]),
            f"recall_ef{EF_EXTRA}_diff_pts": 100 * (last[f"recall_ef{EF_EXTRA}"] - hf[f"recall_ef{EF_EXTRA}"]),
            "file_ratio": last["file_bytes"] / hf["file_bytes"],
            "elements_ratio": last["elements"] / hf["elements"],
            "file_growth_vs_cycle0": last["file_bytes"] / run["cycles"][0]["file_bytes"],
        }
    return out


def mb(b: float) -> str:
    return f"{b / 1e6:.2f}"


def write_markdown(path: Path, res: dict[str, Any]) -> None:
    ds, m, cfg = res["dataset"], res["machine"], res["config"]
    ours, hn, rt = res["ours"], res["hnswlib"], res["ratios"]
    out = [
        f"# Delete/insert churn on a graph collection: {ds['name']}",
        "",
        f"- **data**: {ds['note']}; n = {ds['n']:,}, d = {ds['d']}, metric = {ds['metric']}; {ds['queries']:,} "
        "queries; ground truth = exact float32 kNN over the rows live at each moment. Real data, not synthetic.",
        f"- **machine**: {m['cpu']}, {m['cores']} cores, shared with other work (load average at start "
        f"{m['load_average']}); numpy {m['numpy']}, numba {m['numba']}, hnswlib {res['hnswlib_version']}; "
        f"{m['date']}; {THREADS} threads. Seconds are recorded, not a speed claim. They exclude numba "
        "compilation: a throwaway collection went through the same add, optimize, delete and compacting optimize "
        "untimed first.",
        f"- **protocol**: start with a random {INITIAL_FRACTION:.0%} of the corpus (id = row), `optimize()`; then "
        f"{cfg['cycles']} cycles of: delete a random {cfg['fraction']:.0%} of the live ids, add as many new ids "
        "(unused rows first; once none are left, rows not currently live re-added under new ids), `optimize()` "
        "(compacts when >= 10% of rows are deleted). Same operation sequence (seed "
        f"{cfg['seed']}) for every system.",
        "- **vecpack**: `create_collection(codec=\"int8\", index=\"graph\")`, default graph parameters; recall with "
        f"default search parameters (ef 64, rerank 0) and ef={EF_EXTRA}. memory = `stats()['memory_bytes']` "
        "(int8 codes + graph + growing float32 rows + live mask + codec); disk = the collection folder "
        "(float32 vector log, codes, graph, catalog).",
        f"- **hnswlib**: M={HNSW_M}, efConstruction={HNSW_EFC}, float32; deletes by `mark_deleted`, adds by "
        f"`add_items`, `resize_index` to max(needed, {RESIZE_FACTOR} x max_elements) when full (as Chroma does). "
        "Variant `replace`: `allow_replace_deleted=True` + `add_items(replace_deleted=True)`. memory = "
        "`save_index` file size (vectors + links + labels of every element, deleted ones included).",
        "",
    ]
    out += [
        "## vecpack, per cycle (after `optimize()`; *before* = after the deletes and adds, before `optimize()`)",
        "",
        "| cycle | live | rows before | deleted before | rows after | recall@10 before | recall@10 after "
        f"| recall ef={EF_EXTRA} after | memory MB | index MB | disk MB | apparent MB | disk MB before "
        "| optimize s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in ours["cycles"]:
        a, b = c["after"], c.get("before")

        def bf(key: str, fmt: Any, b: dict[str, Any] | None = b) -> str:
            return fmt(b[key]) if b else ""

        out.append(
            f"| {c['cycle']} | {a['n']:,} | {bf('rows', '{:,}'.format)} | "
            f"{bf('deleted_rows', '{:,}'.format)} | {a['rows']:,} | {bf('recall_default', '{:.4f}'.format)} | "
            f"{a['recall_default']:.4f} | {a[f'recall_ef{EF_EXTRA}']:.4f} | {mb(a['memory_bytes'])} | "
            f"{mb(a['index_bytes'])} | {mb(a['disk_bytes'])} | {mb(a['disk_apparent_bytes'])} | "
            f"{bf('disk_bytes', mb)} | {c['optimize_s']:.1f} |")
    f = ours["fresh"]["after"]
    out.append(f"| fresh | {f['n']:,} | | | {f['rows']:,} | | {f['recall_default']:.4f} | "
               f"{f[f'recall_ef{EF_EXTRA}']:.4f} | {mb(f['memory_bytes'])} | {mb(f['index_bytes'])} | "
               f"{mb(f['disk_bytes'])} | {mb(f['disk_apparent_bytes'])} | | {ours['fresh']['optimize_s']:.1f} |")
    out.append("\ndisk MB = `stats()['disk_bytes']` (in this version: blocks allocated, `st_blocks`); apparent MB "
               "= sum of `st_size`: the vector log and codes files are grown by `ftruncate` ahead of the rows, so "
               "their tail is sparse and the apparent size overstates the disk used. The JSON splits both by file "
               "kind (`disk_files`).")
    out += ["", f"`verify()` after the churn: {ours['verify_after_churn']}.", "",
            "## hnswlib, per cycle", "",
            "| cycle | elements | max_elements | file MB | recall@10 ef=64 | recall ef=16 | replace: elements | "
            "replace: file MB | replace: recall ef=64 | replace: recall ef=16 |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for a, r in zip(hn["mark_deleted"]["cycles"], hn["replace_deleted"]["cycles"], strict=True):
        out.append(f"| {a['cycle']} | {a['elements']:,} | {a['max_elements']:,} | {mb(a['file_bytes'])} | "
                   f"{a['recall_ef64']:.4f} | {a[f'recall_ef{EF_EXTRA}']:.4f} | {r['elements']:,} | "
                   f"{mb(r['file_bytes'])} | {r['recall_ef64']:.4f} | {r[f'recall_ef{EF_EXTRA}']:.4f} |")
    hf = res["hnswlib_fresh"]
    out.append(f"| fresh | {hf['elements']:,} | {hf['max_elements']:,} | {mb(hf['file_bytes'])} | "
               f"{hf['recall_ef64']:.4f} | {hf[f'recall_ef{EF_EXTRA}']:.4f} | | | | |")
    ro, rm, rr = rt["ours"], rt["mark_deleted"], rt["replace_deleted"]
    out += ["", f"## Churned / fresh after {cfg['cycles']} cycles", "",
            "| system | recall@10 diff pts (ef 64) | diff pts (ef 16) | memory ratio | disk ratio (stats) "
            "| disk ratio (apparent) | rows/elements ratio |",
            "| :--- | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| vecpack graph | {ro['recall_default_diff_pts']:+.2f} | {ro[f'recall_ef{EF_EXTRA}_diff_pts']:+.2f} | "
            f"{ro['memory_ratio']:.3f} | {ro['disk_ratio']:.3f} | {ro['disk_apparent_ratio']:.3f} | "
            f"{ro['rows_ratio']:.3f} |",
            f"| hnswlib mark_deleted | {rm['recall_ef64_diff_pts']:+.2f} | "
            f"{rm[f'recall_ef{EF_EXTRA}_diff_pts']:+.2f} | "
            f"{rm['file_ratio']:.3f} | (same file) | | {rm['elements_ratio']:.3f} |",
            f"| hnswlib replace_deleted | {rr['recall_ef64_diff_pts']:+.2f} | "
            f"{rr[f'recall_ef{EF_EXTRA}_diff_pts']:+.2f} | {rr['file_ratio']:.3f} | (same file) | | "
            f"{rr['elements_ratio']:.3f} |",
            "", "## Findings", "", *[f"- {line}" for line in res["findings"]], "",
            f"![memory and recall per cycle](churn_{ds['name']}.png)", ""]
    path.write_text("\n".join(out))


def findings(res: dict[str, Any]) -> list[str]:
    ours, rt = res["ours"], res["ratios"]
    c0 = ours["cycles"][0]["after"]
    mem = [c["after"]["memory_bytes"] for c in ours["cycles"]]
    disk = [c["after"]["disk_bytes"] for c in ours["cycles"]]
    appar = [c["after"]["disk_apparent_bytes"] for c in ours["cycles"]]
    rec = [c["after"]["recall_default"] for c in ours["cycles"]]
    hm, hr = res["hnswlib"]["mark_deleted"]["cycles"], res["hnswlib"]["replace_deleted"]["cycles"]
    lines = [
        f"vecpack: after {len(ours['cycles']) - 1} cycles recall@10 (ef 64) is {rec[-1]:.4f} vs {rec[0]:.4f} at "
        f"the start and {ours['fresh']['after']['recall_default']:.4f} for a fresh build of the same live set "
        f"({rt['ours']['recall_default_diff_pts']:+.2f} points; ef 16: "
        f"{rt['ours'][f'recall_ef{EF_EXTRA}_diff_pts']:+.2f}); lowest after any optimize: {min(rec):.4f}.",
        f"vecpack: memory after optimize stays in {mb(min(mem))}..{mb(max(mem))} MB (start {mb(c0['memory_bytes'])}), "
        f"disk (stats) in {mb(min(disk))}..{mb(max(disk))} MB (start {mb(c0['disk_bytes'])}), apparent "
        f"{mb(min(appar))}..{mb(max(appar))} MB (start {mb(c0['disk_apparent_bytes'])}); churned/fresh: "
        f"memory {rt['ours']['memory_ratio']:.3f}x, disk {rt['ours']['disk_ratio']:.3f}x (stats), "
        f"{rt['ours']['disk_apparent_ratio']:.3f}x apparent. Between compactions the deleted rows stay in the "
        "vector log, the codes and the graph, so the size oscillates rather than grows.",
        f"hnswlib mark_deleted: elements {hm[0]['elements']:,} -> {hm[-1]['elements']:,}, file "
        f"{mb(hm[0]['file_bytes'])} -> {mb(hm[-1]['file_bytes'])} MB "
        f"({rt['mark_deleted']['file_growth_vs_cycle0']:.2f}x; {rt['mark_deleted']['file_ratio']:.2f}x a fresh "
        f"build); recall ef 64 {hm[0]['recall_ef64']:.4f} -> {hm[-1]['recall_ef64']:.4f} "
        f"({rt['mark_deleted']['recall_ef64_diff_pts']:+.2f} points vs fresh). Deleted elements are never freed: "
        "growth is linear in the number of deletes.",
        f"hnswlib replace_deleted: elements {hr[0]['elements']:,} -> {hr[-1]['elements']:,}, file "
        f"{mb(hr[0]['file_bytes'])} -> {mb(hr[-1]['file_bytes'])} MB; recall ef 64 {hr[0]['recall_ef64']:.4f} -> "
        f"{hr[-1]['recall_ef64']:.4f} ({rt['replace_deleted']['recall_ef64_diff_pts']:+.2f} points vs fresh).",
        "Absolute memory is not like for like: vecpack keeps int8 codes + graph resident and the float32 "
        "vectors on disk; hnswlib keeps float32 vectors and links in RAM. The point is the trend over cycles.",
    ]
    return lines


def plot(path: Path, res: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ours = res["ours"]["cycles"]
    hm, hr = res["hnswlib"]["mark_deleted"]["cycles"], res["hnswlib"]["replace_deleted"]["cycles"]
    cyc = [c["cycle"] for c in ours]
    last = cyc[-1]
    fo, hf = res["ours"]["fresh"]["after"], res["hnswlib_fresh"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    ax = axes[0]
    ax.plot(cyc, [c["after"]["memory_bytes"] / 1e6 for c in ours], "o-", color="tab:blue", label="vecpack memory")
    ax.plot(cyc, [c["file_bytes"] / 1e6 for c in hm], "s-", color="tab:red", label="hnswlib mark_deleted (file)")
    ax.plot(cyc, [c["file_bytes"] / 1e6 for c in hr], "^-", color="tab:orange", label="hnswlib replace (file)")
    ax.plot([last], [fo["memory_bytes"] / 1e6], "*", ms=14, color="tab:blue", label="vecpack fresh")
    ax.plot([last], [hf["file_bytes"] / 1e6], "*", ms=14, color="tab:red", label="hnswlib fresh")
    ax.set_title("memory (after each cycle)")
    ax.set_ylabel("MB")
    ax = axes[1]
    ax.plot(cyc, [c["after"]["disk_bytes"] / 1e6 for c in ours], "o-", color="tab:blue", label="after optimize")
    ax.plot(cyc[1:], [c["before"]["disk_bytes"] / 1e6 for c in ours[1:]], "o--", color="tab:cyan",
            label="before optimize")
    ax.plot(cyc, [c["after"]["disk_apparent_bytes"] / 1e6 for c in ours], "o-", color="tab:green",
            label="after optimize, apparent (st_size)")
    ax.plot([last], [fo["disk_bytes"] / 1e6], "*", ms=14, color="tab:blue", label="fresh")
    ax.plot([last], [fo["disk_apparent_bytes"] / 1e6], "*", ms=14, color="tab:green", label="fresh, apparent")
    ax.set_title("vecpack disk: stats()['disk_bytes']")
    ax.set_ylabel("MB")
    ax = axes[2]
    ax.plot(cyc, [c["after"]["recall_default"] for c in ours], "o-", color="tab:blue", label="vecpack ef=64")
    ax.plot(cyc, [c["after"][f"recall_ef{EF_EXTRA}"] for c in ours], "o:", color="tab:blue",
            label=f"vecpack ef={EF_EXTRA}")
    ax.plot(cyc, [c["recall_ef64"] for c in hm], "s-", color="tab:red", label="hnswlib mark_deleted ef=64")
    ax.plot(cyc, [c[f"recall_ef{EF_EXTRA}"] for c in hm], "s:", color="tab:red", label=f"hnswlib ef={EF_EXTRA}")
    ax.plot(cyc, [c["recall_ef64"] for c in hr], "^-", color="tab:orange", label="hnswlib replace ef=64")
    ax.plot(cyc, [c[f"recall_ef{EF_EXTRA}"] for c in hr], "^:", color="tab:orange",
            label=f"hnswlib replace ef={EF_EXTRA}")
    ax.plot([last], [fo["recall_default"]], "*", ms=14, color="tab:blue", label="vecpack fresh ef=64")
    ax.plot([last], [hf["recall_ef64"]], "*", ms=14, color="tab:red", label="hnswlib fresh ef=64")
    ax.set_title(f"recall@{K} (after each cycle)")
    for ax in axes:
        ax.set_xlabel("cycle")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    d = res["dataset"]
    fig.suptitle(f"Churn: {d['name']} (n={d['n']:,}, d={d['d']}); {res['config']['cycles']} cycles of "
                 f"{res['config']['fraction']:.0%} deletes + adds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="scifact-sentences")
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/results")
    args = ap.parse_args()

    ds = load_dataset(args.dataset, max_queries=args.queries)
    metric = ds.metric
    corpus = ds.corpus
    x, q = prepare(corpus, metric), prepare(ds.queries, metric)
    n, d = x.shape
    plan = make_plan(n, args.cycles, args.fraction, args.seed)
    truth = Truth(x, q, metric)
    truths = [truth.topk(plan.id_row[live_after(plan, i)]) for i in range(args.cycles + 1)]
    print(f"{ds.name}: n={n} d={d} metric={metric} queries={q.shape[0]}; re-added rows per cycle: "
          f"{[c.reused_rows for c in plan.cycles]}", flush=True)
    res: dict[str, Any] = {
        "dataset": {"name": ds.name, "n": n, "d": d, "metric": metric, "queries": int(q.shape[0]), "note": ds.note},
        "config": {"cycles": args.cycles, "fraction": args.fraction, "seed": args.seed, "k": K, "threads": THREADS,
                   "initial_fraction": INITIAL_FRACTION, "hnsw_m": HNSW_M, "hnsw_ef_construction": HNSW_EFC,
                   "resize_factor": RESIZE_FACTOR},
        "hnswlib_version": importlib.metadata.version("hnswlib"),
        "reused_rows_per_cycle": [c.reused_rows for c in plan.cycles],
    }
    with limit_threads(THREADS), tempfile.TemporaryDirectory(prefix="vecpack-churn-") as tmp:
        res["machine"] = machine_info()
        res["ours"] = run_ours(plan, corpus, ds.queries, truths, metric, Path(tmp) / "db")
        res["hnswlib"] = {
            "mark_deleted": run_hnswlib(plan, x, q, truths, metric, replace=False),
            "replace_deleted": run_hnswlib(plan, x, q, truths, metric, replace=True),
        }
        res["hnswlib_fresh"] = run_hnswlib_fresh(plan, x, q, truths[-1], metric)
    res["ratios"] = ratios(res)
    res["findings"] = findings(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"churn_{ds.name}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
    write_markdown(stem.with_suffix(".md"), res)
    plot(stem.with_suffix(".png"), res)
    print("\n".join(res["findings"]))
    print(f"wrote {stem}.json/.md/.png")


if __name__ == "__main__":
    main()
