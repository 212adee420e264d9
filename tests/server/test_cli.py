"""The CLI through a real loopback server: keys, import, export, search, info (CliRunner), and `serve` as a process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

import vecpack
from conftest import wait_healthy
from vecpack.cli import app

runner = CliRunner()


def cli(*args: object, code: int = 0) -> str:
    """Run ``vecpack ARGS``; check the exit code; return standard output."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result.stdout


def test_keys_create_list_revoke(tmp_path):
    path = tmp_path / "db"
    key = cli("keys", "create", "--path", path, "--role", "write", "-c", "docs", "--tenant", "acme").strip()
    prefix = key.split("_")[1]
    listed = cli("keys", "list", "--path", path)
    assert prefix in listed and "write" in listed and "docs" in listed and "acme" in listed and key not in listed
    admin = cli("keys", "create", "--path", path, "--role", "admin").strip()
    cli("keys", "revoke", prefix, "--path", path)
    listed = cli("keys", "list", "--path", path)
    assert prefix not in listed and admin.split("_")[1] in listed
    result = runner.invoke(app, ["keys", "revoke", prefix, "--path", str(path)])
    assert isinstance(result.exception, vecpack.NotFound)  # main() turns it into exit code 2
    result = runner.invoke(app, ["keys", "create", "--path", str(path), "--role", "root"])
    assert isinstance(result.exception, vecpack.InvalidInput)


def test_import_export_search_info_through_server(server, admin_key, client, tmp_path):
    remote = ["--url", server, "--api-key", admin_key]
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    cli("import", tmp_path / "v.npy", "-c", "vecs", *remote, "--codec", "float32", "--batch-size", 16)
    vecs = client.get_collection("vecs")
    assert vecs.count() == 50 and vecs.stats()["codec"] == "float32"
    assert np.array_equal(np.stack([r.vector for r in vecs.get(ids=list(range(50)))]), x)  # ids = row numbers
    cli("import", tmp_path / "v.npy", "-c", "vecs", *remote, "--upsert")
    assert vecs.count() == 50
    rows = [{"id": f"d{i}", "vector": x[i].tolist(), "metadata": {"i": i, "even": i % 2 == 0}} for i in range(30)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    cli("import", tmp_path / "d.jsonl", "-c", "mt", *remote, "--tenant", "acme", "--batch-size", 7)
    mt = client.get_collection("mt")
    assert mt.multi_tenant and mt.count(tenant="acme") == 30 and mt.count(where={"even": True}, tenant="acme") == 15
    # export: every record back, exactly
    cli("export", "-c", "mt", *remote, "--tenant", "acme", "--out", tmp_path / "out.jsonl", "--batch-size", 8)
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()] == rows
    out = cli("export", "-c", "vecs", *remote)  # to standard output (progress goes to standard error)
    assert [json.loads(line)["vector"] for line in out.splitlines()] == x.tolist()
    # search: the same hits as the client's
    q = x[3] + 0.01
    out = cli("search", "-c", "mt", *remote, "--tenant", "acme", "--vector=" + ",".join(map(str, q.tolist())),
              "-k", 3, "--where", '{"even": false}', "--json")
    expected = mt.search(q, k=3, where={"even": False}, tenant="acme")
    assert [json.loads(line) for line in out.splitlines()] == [
        {"id": h.id, "score": h.score, "metadata": h.metadata} for h in expected]
    table = cli("search", "-c", "vecs", *remote, "--vector", json.dumps(q.tolist()), "-k", 2)
    assert "rank" in table and " 3 " in table  # row 3 is the nearest
    info = cli("info", *remote)
    assert "vecs" in info and "mt" in info and "float32" in info


def test_import_leaves_the_collection_compressed_and_indexed(tmp_path):
    path = tmp_path / "db"
    x = np.random.default_rng(1).normal(size=(2000, 16)).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    cli("import", tmp_path / "v.npy", "-c", "g", "--path", path, "--index", "graph", "--codec", "int8")
    cli("import", tmp_path / "v.npy", "-c", "raw", "--path", path, "--index", "ivf", "--no-optimize")
    with vecpack.connect(path) as db:
        g, raw = db.get_collection("g").stats(), db.get_collection("raw").stats()
    assert (g["growing_rows"], g["indexed_rows"], g["unindexed_rows"]) == (0, 2000, 0)
    assert (raw["growing_rows"], raw["indexed_rows"], raw["unindexed_rows"]) == (2000, 0, 2000)
    info = cli("info", "--path", path)  # shows what is left to do
    assert "raw: 2000 rows not compressed yet, 2000 not indexed (vecpack optimize -c raw)" in info
    assert "g:" not in info  # nothing left to do there
    cli("optimize", "-c", "raw", "--path", path)
    with vecpack.connect(path) as db:
        raw = db.get_collection("raw").stats()
    assert (raw["growing_rows"], raw["indexed_rows"], raw["unindexed_rows"]) == (0, 2000, 0)
    assert cli("info", path) == cli("info", "--path", path)  # the positional folder still works
    result = runner.invoke(app, ["optimize", "-c", "nope", "--path", str(path)])
    assert isinstance(result.exception, vecpack.NotFound)


def test_cli_errors_are_clear(server, admin_key, tmp_path, monkeypatch):
    remote = ["--url", server, "--api-key", admin_key]
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "vector": [1, 2]}\n{"id": 2}\n')
    (tmp_path / "text.jsonl").write_text('{"id": 1, "text": "hello"}\n')
    (tmp_path / "x.csv").write_text("1,2\n")
    cases = [
        (["import", tmp_path / "bad.jsonl", "-c", "c", *remote], 'line 2: expected an object with "id" and one of'),
        (["import", tmp_path / "x.csv", "-c", "c", *remote], "unknown file type '.csv'"),
        (["search", "-c", "c", *remote], "exactly one of --vector and --text"),
        (["search", "-c", "c", *remote, "--vector", "[1,", ], "--vector is not valid JSON"),
        (["export", "-c", "c", "--path", tmp_path / "db", *remote], "give either --path DIR"),
    ]
    monkeypatch.setitem(sys.modules, "torch", None)  # as if the embed extra were not installed
    cases.append((["import", tmp_path / "text.jsonl", "-c", "c", *remote], "pip install 'vecpack[embed]'"))
    for args, message in cases:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 2 and message in " ".join(result.stderr.split()), (args, result.output)
    with vecpack.Client(server, api_key=admin_key) as c:
        assert c.list_collections() == []  # nothing half-imported


def test_import_parquet(server, admin_key, client, tmp_path):
    import pyarrow as pa  # the dev extra installs it (vecpack[parquet])
    import pyarrow.parquet as pq
    x = np.random.default_rng(2).normal(size=(25, 4)).astype(np.float32)
    table = pa.table({"id": [f"p{i}" for i in range(25)], "vector": x.tolist(),
                      "metadata": [json.dumps({"i": i}) for i in range(25)]})  # metadata as a JSON string column
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=10)
    cli("import", tmp_path / "p.parquet", "-c", "pq", "--url", server, "--api-key", admin_key, "--batch-size", 4)
    got = client.get_collection("pq").get(ids=["p0", "p24"])
    assert [(r.id, r.metadata) for r in got] == [("p0", {"i": 0}), ("p24", {"i": 24})]
    assert np.array_equal(np.stack([r.vector for r in got]), x[[0, 24]])


@pytest.mark.slow
def test_import_and_search_text(server, admin_key, client, tmp_path):
    pytest.importorskip("sentence_transformers")
    remote = ["--url", server, "--api-key", admin_key]
    texts = ["the cat sat on the mat", "stock markets fell sharply", "a kitten sleeps on a rug"]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in enumerate(texts)))
    cli("import", tmp_path / "t.jsonl", "-c", "txt", *remote, "--codec", "float32")
    out = cli("search", "-c", "txt", *remote, "--text", "a small cat resting", "-k", 2, "--json")
    assert {json.loads(line)["id"] for line in out.splitlines()} == {"0", "2"}


def test_serve_as_a_process(tmp_path):
    path = tmp_path / "db"
    admin = cli("keys", "create", "--path", path, "--role", "admin").strip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vecpack.cli", "serve", "--path", str(path), "--port", str(port),
                             "--log-level", "warning"], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, lambda: proc.poll() is None)
        assert httpx.get(f"{url}/collections").status_code == 401
        with vecpack.Client(url, api_key=admin) as c:
            c.create_collection("docs", dim=2, codec="float32").add(ids=["a", "b"], vectors=[[1, 0], [0, 1]])
            assert [h.id for h in c.get_collection("docs").search([1, 0.1], k=2)] == ["a", "b"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM), stderr  # uvicorn shuts down, then re-raises the signal
    with vecpack.connect(path) as db:  # the writes are in the folder
        assert db.get_collection("docs").count() == 2


def test_bench_command_writes_its_results(tmp_path):
    """`vecpack bench` on a small synthetic set, FAISS off: the JSON lists the codec with a real recall."""
    cli("bench", "--dataset", "synthetic:2000:32", "--codecs", "int8", "--queries", 50, "--no-peers",
        "--out", tmp_path)
    (found,) = tmp_path.glob("*.json")
    (codec,) = json.loads(found.read_text())["codecs"]
    assert codec["name"] == "int8" and codec["bytes_per_vector"] == 32
    assert codec["runs"][0]["recall@k"] > 0.8 and codec["runs"][0]["qps"]["1"] > 0
    assert list(tmp_path.glob("*.md"))


def test_demo_command_compares_codecs_on_real_text():
    """`vecpack demo` on the SciFact embeddings (skipped without the shared data: embedding the fallback
    corpus needs the embed extra)."""
    from vecpack.bench.datasets import data_root

    root = data_root()
    if root is None or not (root / "scifact").is_dir():
        pytest.skip("SciFact embeddings not found (../shared/data or $VECPACK_DATA)")
    out = cli("demo")
    for codec in ("float32", "int8", "binary", "pq48"):
        assert codec in out
    assert "SciFact" in out
