"""vecpack.bench.budget (bench/budget.py) on tiny synthetic data: report structure, recall bounds, screening,
output files."""

from __future__ import annotations

import importlib.util
import json

import pytest

from vecpack.bench.peers import import_faiss
from vecpack.codecs.space import FAMILIES

# a few cheap configs of each system and family (regex on config names)
ONLY = r"^(int4|binary|pq8|pca8,int8|sq4|pq8x4fs|lsh64|pca8,sq8)$"


@pytest.fixture(scope="module")
def budget():
    from vecpack.bench import budget

    return budget


def test_quick_run_on_synthetic_data(budget, tmp_path):
    have_faiss = import_faiss()[0] is not None
    report = budget.run_dataset(
        "synthetic:500:16",
        tmp_path,
        max_rows=None,
        quick=True,
        only=ONLY,
        screen_rows=400,
        keep=1,
        train_limit=300,
        min_time_s=0.0,
        log=lambda s: None,
    )
    assert report["synthetic"] and report["n"] == 500 and report["dim"] == 16
    assert report["train_rows"] == 300  # every config fitted on the same 300 of the 500 rows
    assert report["queries"] == budget.QUICK_QUERIES
    # quick budgets: 1/8 and 1/32 of 64 float32 bytes, largest first
    assert [b["bytes"] for b in report["budgets"]] == [8, 2]
    runs = report["runs"]
    assert {r["system"] for r in runs} == ({"vecpack", "FAISS"} if have_faiss else {"vecpack"})
    for r in runs:
        assert 1 < r["bytes"] <= 8
        assert 0.0 <= r["recall"] <= r["recall_rerank"] <= 1.0
        assert r["qps"] > 0 and r["qps_rerank"] > 0 and r["fit_encode_s"] >= 0
        assert r["screen"]["recall"] is not None  # n > screen_rows: every full run was screened first
    # screening keeps the best per family and budget and lists the rest
    names = {r["name"] for r in runs} | {r["name"] for r in report["screened_out"]}
    assert not {r["name"] for r in runs} & {r["name"] for r in report["screened_out"]}
    assert {"int4", "binary", "pca8,int8"} <= names
    top = report["budgets"][0]
    assert set(top["ours"]) <= set(FAMILIES) and top["ours"]
    for best in top["ours"].values():
        assert 0.0 <= best["raw"]["recall"] <= best["rerank"]["recall"] <= 1.0
        assert best["raw"]["bytes"] <= 8
    assert top["ours_best"]["raw"]["recall"] == max(b["raw"]["recall"] for b in top["ours"].values())
    if have_faiss:
        assert top["faiss"]["raw"]["recall"] <= top["faiss"]["rerank"]["recall"]
        assert set(top["ours_ge_faiss"]) == {"raw", "rerank"}
    else:
        assert top["faiss"] is None and top["ours_ge_faiss"] is None

    stem = tmp_path / "budget_synthetic-500-16"
    assert json.loads(stem.with_suffix(".json").read_text())["budgets"] == report["budgets"]
    md = stem.with_suffix(".md").read_text()
    assert "**Synthetic data**" in md and "ours >= FAISS?" in md and "`int4`" in md
    assert "Codecs trained on 300 sampled rows (fewer than the 500 a collection trains on" in md
    if importlib.util.find_spec("matplotlib") is not None:  # the bench extra draws the plot
        assert stem.with_suffix(".png").stat().st_size > 0
    else:
        assert not stem.with_suffix(".png").exists()


def test_faiss_configs_fit_the_budget():
    faiss = import_faiss()[0]
    if faiss is None:
        pytest.skip("faiss is not importable")
    from vecpack.bench.codec_peers import make_index, peer_configs

    configs = peer_configs(faiss, 384, 48)
    sizes = [size for _, size in configs]
    assert sizes == sorted(sizes) and max(sizes) == 48
    names = {name for name, _ in configs}
    assert {"PQ48", "OPQ48,PQ48", "PQ96x4fs", "LSH384", "PCA96,SQ4", "PCA192,RaBitQ"} <= names
    assert not names & {"SQ4", "SQ8", "RaBitQ"}  # 192, 384 and 56 bytes at d = 384
    assert all(make_index(faiss, name, 384, "ip").sa_code_size() == size for name, size in configs)
