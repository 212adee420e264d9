"""``codec="auto"``: choose a codec for a memory budget and a recall target from a collection's own vectors.

The question the compression-benchmark paper (Zhang et al., PVLDB 2024) leaves to
the user, "which method for this budget and this data?", answered by measurement
on a sample instead of a rule of thumb:

1. Split a sample of the collection's rows into a base set and held-out queries
   (or use sample queries the user supplied); exact float32 kNN is the truth.
2. For the largest codec spec of each shape that fits the per-vector budget
   (``codecs.space``, ``shortlist``), fit on a sample, encode the base set and search
   it flat with the codec's default re-rank: recall@10 and queries per second.
   Without sample queries, chains that reduce dimensions (pca, mrl, leanvec) are
   measured only when nothing else fits: held-out rows share the rows' principal
   subspace and flatter PCA, real queries need not (on SciFact at 96 bytes held-out
   rows chose ``pca48,lvq4x8``, 0.945 on the real queries, where ``opq96,pq96`` gave 1.000).
3. Pick the fastest spec that reaches the target recall and stays within RECALL_SLACK
   of the most accurate spec measured; if none reaches the target, the most accurate
   one. Every measurement goes into the report.

Budgets: ``memory_budget`` is the resident bytes for the whole collection (codes and
index structure); divided by the rows present at tuning time, less the index's
bytes per row, it gives the bytes per vector. ``bytes_per_vector`` sets that directly.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import numpy as np

from vecpack.codecs import Codec, make_codec
from vecpack.codecs.space import REDUCTION, candidate_specs, family_of
from vecpack.errors import InvalidInput
from vecpack.search import ScanData, exact_knn, search_rows

K = 10
BASE_ROWS = 20_000
TRAIN_ROWS = 10_000
HELD_OUT_QUERIES = 200
#: stop measuring new candidates after this many seconds (the report lists the skipped ones)
TIME_LIMIT_S = 30.0
#: the chosen spec may trade at most this much recall@10 (on the sample) below the most accurate one for speed:
#: "fastest that reaches 0.95" alone chose pca48,bf16 at 96 bytes on SciFact, 0.945 where opq96,pq96 gave 1.000
RECALL_SLACK = 0.02
#: rows of the untimed search that loads (or, on a fresh install, compiles) a candidate's kernels before its timing
WARM_ROWS = 512
#: fewest rows worth tuning on; below it the collection stays exact and tunes later
MIN_TUNE_ROWS = 1000
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
#: the largest byte count a budget may name (1 EiB): larger ones are typing errors, and overflow int64 arithmetic
MAX_BYTES = 2**60


def parse_bytes(value: object, name: str) -> int:
    """A byte count in 1 .. MAX_BYTES from an int or a string like ``"64MB"`` / ``"1.5 GiB"``; InvalidInput
    otherwise."""
    count = None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        count = int(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
        if match and match.group(2).lower() in _UNITS:
            count = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if count is None or not 0 < count <= MAX_BYTES:
        raise InvalidInput(f"{name} must be a byte count from 1 to 2**60 like 67108864 or '64MB', got {value!r}")
    return count


def check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Validated tuning settings {memory_budget | bytes_per_vector, target_recall}; InvalidInput naming a bad one."""
    unknown = set(settings) - {"memory_budget", "bytes_per_vector", "target_recall"}
    if unknown:
        raise InvalidInput(f"unknown tuning settings {sorted(unknown)}")
    given = [n for n in ("memory_budget", "bytes_per_vector") if settings.get(n) is not None]
    if len(given) != 1:
        raise InvalidInput("codec='auto' needs exactly one of memory_budget (e.g. '64MB') or bytes_per_vector")
    out: dict[str, Any] = {given[0]: parse_bytes(settings[given[0]], given[0])}
    target = settings.get("target_recall", 0.95)
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0.0 < target <= 1.0:
        raise InvalidInput(f"target_recall must be a number in (0, 1], got {target!r}")
    out["target_recall"] = float(target)
    return out


def bytes_per_vector(settings: dict[str, Any], rows: int, index_bytes_per_row: int) -> int:
    """The code bytes each vector may use under ``settings`` for a collection of ``rows`` rows."""
    if "bytes_per_vector" in settings:
        return settings["bytes_per_vector"]
    return settings["memory_budget"] // max(rows, 1) - index_bytes_per_row - 1  # 1: the live mask


def tune(
    x: np.ndarray, metric: str, budget: int, target_recall: float, *, queries: np.ndarray | None = None,
    time_limit: float = TIME_LIMIT_S, seed: int = 0,
) -> tuple[str, dict[str, Any]]:
    """The chosen codec spec and the tuning report.

    x : float32 (n, d) sample rows as codecs see them (unit norm for cosine).
    metric : the collection metric ("cosine", "ip", "l2").
    budget : code bytes per vector.
    queries : sample queries (m, d), prepared like x; default: rows held out of x.
    """
    n, dim = x.shape
    codec_metric = "l2" if metric == "l2" else "ip"
    specs = candidate_specs(dim, budget, metric=codec_metric)
    if queries is None:  # held-out rows lie in the rows' principal subspace; real queries need not
        specs = [s for s in specs if family_of(s) != REDUCTION] or [s for s in specs if "leanvec" not in s]
    specs = shortlist(specs, dim, codec_metric)
    if not specs:
        raise InvalidInput(f"no codec fits {budget} bytes per vector for dim {dim}; the smallest needs more: "
                           "raise memory_budget / bytes_per_vector")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    if queries is None:
        held = min(HELD_OUT_QUERIES, n // 5)
        queries, order = x[order[:held]], order[held:]
        query_source = f"{held} rows held out of the sample"
    else:
        queries = queries[:HELD_OUT_QUERIES]
        query_source = f"{queries.shape[0]} supplied sample queries"
    base = np.ascontiguousarray(x[np.sort(order[:BASE_ROWS])])
    truth = exact_knn(base, queries, K, metric)[0]
    train = base[rng.permutation(base.shape[0])[:TRAIN_ROWS]]
    live = np.ones(base.shape[0], dtype=np.uint8)
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    for spec in specs:
        if time.perf_counter() - start > time_limit:
            skipped.append(spec)
            continue
        results.append(_measure(spec, dim, codec_metric, metric, train, base, queries, truth, live))
    best = max(r["recall"] for r in results)
    ok = [r for r in results if r["recall"] >= max(target_recall, best - RECALL_SLACK)]
    if ok and best >= target_recall:
        chosen = max(ok, key=lambda r: r["qps"])
        reason = (f"fastest of {len(ok)} configurations reaching recall@{K} >= {target_recall} and within "
                  f"{RECALL_SLACK} of the best ({best:.3f})")
    else:
        chosen = max(results, key=lambda r: (r["recall"], r["qps"]))
        reason = f"no configuration reached recall@{K} >= {target_recall} in the budget: the most accurate one"
    report = {
        "chosen": chosen["spec"], "reason": reason, "budget_bytes_per_vector": budget,
        "target_recall": target_recall, "sample_rows": int(base.shape[0]), "train_rows": int(train.shape[0]),
        "queries": query_source, "seconds": round(time.perf_counter() - start, 2),
        "candidates": sorted(results, key=lambda r: -r["recall"]), "skipped_for_time": skipped,
    }
    return chosen["spec"], report


def shortlist(specs: list[str], dim: int, metric: str) -> list[str]:
    """The largest spec of each shape (the spec with its numbers removed: "pq<m>", "pca<d>,int8", ...):
    within one shape more bytes means more accuracy, so only the one nearest the budget can be the
    most accurate. Largest first, product quantizers last: their k-means training takes seconds
    to tens of seconds each, and one must not use up the time of all the others."""
    best: dict[str, tuple[int, str]] = {}
    for spec in specs:
        size = make_codec(spec, dim, metric).code_size
        shape = re.sub(r"\d+", "", spec)
        if shape not in best or size > best[shape][0]:
            best[shape] = (size, spec)
    return [spec for _, spec in sorted(best.values(), key=lambda b: ("pq" in b[1], -b[0], b[1]))]


def fidelity(codec: Codec, x: np.ndarray, metric: str, *, seed: int = 0) -> float:
    """How well a trained codec ranks rows like ``x`` (prepared, float32 (n, d)): recall@K of its own scores (no
    re-rank) for up to HELD_OUT_QUERIES rows of x, held out, among the rest. A codec fitted on other data (the
    collection has drifted since) scores lower than one fitted on x; ``Collection.optimize`` compares the two."""
    order = np.random.default_rng(seed).permutation(x.shape[0])
    held = min(HELD_OUT_QUERIES, x.shape[0] // 5)
    queries, base = x[order[:held]], np.ascontiguousarray(x[np.sort(order[held:])])
    truth = exact_knn(base, queries, K, metric)[0]
    rows = search_rows(queries, K, ScanData(codec, codec.encode(base), base, metric, rerank=0),
                       np.ones(base.shape[0], np.uint8))[1]
    hits = [len(set(r[r >= 0]) & set(g[g >= 0])) for r, g in zip(rows, truth, strict=True)]
    return float(np.sum(hits) / max(np.sum(truth >= 0), 1))


def _measure(spec, dim, codec_metric, metric, train, base, queries, truth, live) -> dict[str, Any]:
    """Fit, encode and flat-search one candidate: its recall@K, QPS and costs."""
    t = time.perf_counter()
    codec: Codec = make_codec(spec, dim, codec_metric).fit(train)
    codes = codec.encode(base)
    fit_s = time.perf_counter() - t
    rerank = 0 if codec.exact else codec.default_rerank(K)
    few = min(base.shape[0], WARM_ROWS)  # untimed: the same kernels on a few rows, compiled or loaded first
    search_rows(queries, K, ScanData(codec, codes[:few], base[:few], metric, rerank), live[:few])
    t = time.perf_counter()
    rows = search_rows(queries, K, ScanData(codec, codes, base, metric, rerank), live)[1]
    search_s = max(time.perf_counter() - t, 1e-9)
    hits = [len(set(r[r >= 0]) & set(g[g >= 0])) for r, g in zip(rows, truth, strict=True)]
    return {"spec": spec, "bytes_per_vector": codec.code_size, "rerank": rerank,
            "recall": float(np.sum(hits) / max(np.sum(truth >= 0), 1)), "qps": queries.shape[0] / search_s,
            "fit_encode_s": round(fit_s, 3)}
