"""End-to-end run of the benchmark on a tiny synthetic set: files written, numbers sane."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from vecpack.bench.runner import default_codecs, file_stem, run_benchmark

try:
    import faiss  # noqa: F401

    HAVE_FAISS = True
except ImportError:
    HAVE_FAISS = False


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    res = run_benchmark(
        "synthetic:2000:64",
        out,
        n_queries=50,
        threads=[1],
        peers=HAVE_FAISS,
        progress=False,
        sweep=[0, 50],
        repeats=1,
        min_time_s=0,
    )
    return out, res


def test_files_written(result):
    out, res = result
    stem = file_stem(res["dataset"])
    assert stem == "synthetic-2000-64"
    for ext in ("json", "md", "png"):
        assert (out / f"{stem}.{ext}").stat().st_size > 0
    assert json.loads((out / f"{stem}.json").read_text()) == json.loads(json.dumps(res))
    md = (out / f"{stem}.md").read_text()
    assert "| `int8` |" in md and "Caveats" in md
    assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_header(result):
    _, res = result
    assert (res["n"], res["d"], res["metric"], res["k"]) == (2000, 64, "cosine", 10)
    assert "synthetic" in res["note"]
    assert res["queries"] == {"unique": 50, "batch": 50, "tiled": False, "subset": False, "judged": 0}
    assert res["threads"] == [1]
    assert res["machine"]["cores"] >= 1 and res["machine"]["numpy"]


def test_codecs(result):
    _, res = result
    by = {c["name"]: c for c in res["codecs"]}
    assert list(by) == default_codecs(64) == ["float32", "float16", "int8", "binary", "pq8"]
    expected_bytes = {"float32": 256, "float16": 128, "int8": 64, "binary": 8, "pq8": 8}
    for name, c in by.items():
        assert c["bytes_per_vector"] == expected_bytes[name]
        assert c["compression"] == pytest.approx(256 / expected_bytes[name])
        assert c["fit_encode_s"] >= 0 and c["memory_bytes"] > 0 and c["disk_bytes"] > 0
        for run in c["runs"]:
            assert 0.0 <= run["recall@k"] <= 1.0
            assert run["ndcg@k"] is None  # synthetic data has no relevance labels
            assert run["qps"]["1"] > 0
            if "qps_e2e" in run:  # end-to-end search finds exactly what the scan level finds
                assert run["qps_e2e"]["1"] > 0
                assert run["recall@k_e2e"] == pytest.approx(run["recall@k"])
    assert by["float32"]["runs"][0]["recall@k"] == 1.0
    assert [r["rerank"] for r in by["int8"]["runs"]] == [0]
    assert by["int8"]["runs"][0]["recall@k"] >= 0.95
    for name in ("binary", "pq8"):
        runs = {r["rerank"]: r for r in by[name]["runs"]}
        assert set(runs) == {0, 50, 100}
        assert runs[100]["recall@k"] >= runs[0]["recall@k"]
        assert runs[100]["recall@k"] >= 0.9


@pytest.mark.skipif(not HAVE_FAISS, reason="faiss is not installed")
def test_peers(result):
    _, res = result
    peers = {p["family"]: p for p in res["peers"]}
    assert set(peers) == {"float32", "float16", "int8", "binary", "pq"}
    assert peers["float32"]["runs"][0]["recall@k"] >= 0.99
    assert {r["rerank"] for r in peers["binary"]["runs"]} == {0, 50, 100}
    assert len(res["comparisons"]) == 7  # 3 scalar pairs + binary and pq, raw and re-ranked
    for cmp in res["comparisons"]:
        assert cmp["recall_ratio"] > 0 and cmp["qps_ratio"]["1"] > 0
        assert cmp["bytes_ours"] == cmp["bytes_faiss"]


def test_unknown_codec_rejected(tmp_path):
    from vecpack.errors import UnknownSpec

    with pytest.raises(UnknownSpec):
        run_benchmark("synthetic:300:16", tmp_path, codecs=["zstd"], progress=False, peers=False)
