"""vecpack.Client against a real loopback server: the same results as the embedded database, call by call."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import numpy as np
import pytest

import vecpack
from vecpack.client import BINARY_MIN_FLOATS
from vecpack.storage.segments import Segments

DIM = 16
N = 600


def outcome(call) -> Any:
    """What a call returns, or the class and message of what it raises (both must match across APIs)."""
    try:
        return call()
    except vecpack.VecpackError as exc:
        return type(exc).__name__, str(exc)


def records(found: list[vecpack.Record]) -> list[tuple[str, list[float], Any]]:
    assert all(isinstance(r, vecpack.Record) and r.vector.dtype == np.float32 for r in found)
    return [(r.id, r.vector.tolist(), r.metadata) for r in found]


def exercise(db: Any) -> list[Any]:
    """Every Database / Collection method, in order, recording each result; ``db`` is embedded or a Client."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N, DIM)).astype(np.float32)
    meta = [{"year": 2000 + i % 25, "lang": ["en", "de", "fr"][i % 3], "tags": ["ml"] if i % 4 == 0 else []}
            for i in range(N)]
    q = rng.normal(size=(300, DIM)).astype(np.float32)
    out: list[Any] = []
    col = db.create_collection("docs", dim=DIM, codec="int8", seal_rows=256)
    col.add(ids=list(range(N)), vectors=x, metadata=meta)  # large: a binary body through the client
    col.add(ids=["a", "b"], vectors=x[:2] + 1, metadata=[{"year": 1999}, None])  # small: JSON
    col.upsert(ids=["a", 5], vectors=x[2:4] * 2, metadata=[{"year": 1990}, {"year": 1991, "lang": "en"}])
    out += [col.delete(ids=["b"]), col.delete(where={"year": {"$lt": 2002}, "lang": "de"}), len(col)]
    col.create_field_index("lang")
    out += [col.field_indexes(), 0 in col, 1 in col, "zz" in col]
    out.append(col.search(q[0], k=5))  # single query: list[Hit]
    out.append(col.search(q, k=3, rerank=20))  # 300 x 16 floats: a binary body
    out.append(col.search(q[:4], k=4, where=[{"lang": "en"}, None, {"tags": {"$contains": "ml"}}, {"year": 2010}]))
    out.append(col.search(q[:2], k=2, where={"$or": [{"lang": "fr"}, {"year": {"$gte": 2020}}]}))
    out += [col.count(), col.count(where={"lang": {"$in": ["en", "fr"]}}), col.explain(k=5, where={"lang": "en"})]
    out.append(records(col.get(ids=["a", 7, 7])))
    out.append(records(col.get(where={"year": 2003}, limit=5, offset=2)))
    out.append(records(col.get(limit=3)))
    col.optimize()
    out += [col.search(q[1], k=5, where={"lang": "en"}), col.tuning_report(), col.verify()]
    stats = col.stats()
    out.append({k: v for k, v in stats.items() if k != "disk_bytes"})
    col.drop_field_index("lang")
    out.append(col.field_indexes())
    # errors: the same class and message either way
    out.append(outcome(lambda: col.add(ids=[1], vectors=x[:1])))
    out.append(outcome(lambda: col.get(ids=["missing"])))
    out.append(outcome(lambda: col.search(q[0, :8])))
    out.append(outcome(lambda: col.search(q[0], where={"year": {"$gt": [1]}})))
    out.append(outcome(lambda: col.search(q[0], ef=10)))
    out.append(outcome(lambda: col.delete(ids=["nope"])))
    out.append(outcome(lambda: col.drop_field_index("lang")))
    out.append(outcome(lambda: col.count(where={"$bad": 1})))
    out.append(outcome(lambda: db.get_collection("nope")))
    out.append(outcome(lambda: db.create_collection("docs", dim=DIM)))
    out.append(outcome(lambda: db.create_collection("other", dim=DIM, codec="zz9")))
    out.append(outcome(lambda: db.create_collection("../etc", dim=DIM)))
    # tenants
    mt = db.create_collection("saas", dim=DIM, codec="float32", index="graph", multi_tenant=True)
    mt.add(ids=[1, 2, 3], vectors=x[:3], metadata=[{"v": 1}, {"v": 2}, {"v": 3}], tenant="acme")
    mt.add(ids=[1, 2], vectors=x[3:5], tenant="globex")
    mt.create_tenant("initech")
    out += [mt.list_tenants(), mt.count(tenant="acme"), mt.search(q[0], k=5, tenant="globex")]
    out += [records(mt.get(ids=[1], tenant="acme")), records(mt.get(where={"v": {"$gte": 2}}, tenant="acme"))]
    mt.deactivate_tenant("globex")
    out += [mt.list_tenants(), outcome(lambda: mt.search(q[0], tenant="globex")), outcome(lambda: mt.count())]
    mt.activate_tenant("globex")
    out += [mt.delete(where={"v": 1}, tenant="acme"), mt.drop_tenant("acme"), mt.list_tenants(), len(mt)]
    out.append(outcome(lambda: mt.create_tenant("globex")))
    out.append(sorted(db.list_collections()))
    db.drop_collection("saas")
    out += [db.list_collections(), outcome(lambda: db.drop_collection("saas"))]
    return out


def test_client_matches_embedded(tmp_path, client):
    assert N * DIM >= BINARY_MIN_FLOATS > DIM * 4  # both body formats are exercised
    with vecpack.connect(tmp_path / "embedded") as db:
        expected = exercise(db)
    got = exercise(client)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a == b, f"result {i} differs"
    hits = expected[7]
    assert len(hits) == 5 and all(isinstance(h, vecpack.Hit) for h in hits)  # the single-query search


def test_one_line_switch_returns_same_types(client):
    col = client.create_collection("t", dim=3, metric="l2", codec="float32")
    assert (col.name, col.dim, col.metric, col.multi_tenant, col.index_kind) == ("t", 3, "l2", False, "flat")
    col.add(ids=["x"], vectors=[[0, 0, 1]])
    assert client.get_collection("t").search([0, 0, 0], k=1) == [vecpack.Hit("x", 1.0, None)]
    assert "RemoteCollection('t'" in repr(col)


def frame(header: dict[str, Any], x: np.ndarray, *, pad: bool) -> bytes:
    """A binary body (vecpack.server.app): u32 JSON length, JSON, float32 values."""
    raw = json.dumps(header).encode()
    if pad:
        raw += b" " * (-(4 + len(raw)) % 4)
    return len(raw).to_bytes(4, "little") + raw + x.astype("<f4").tobytes()


def test_binary_bodies(server, admin_key, client):
    col = client.create_collection("bin", dim=4, codec="float32")
    x = np.arange(24, dtype=np.float32).reshape(6, 4) / 7
    post = httpx.Client(base_url=server, headers={"X-API-Key": admin_key, "Content-Type": "application/octet-stream"})
    for pad in (True, False):  # unpadded: the floats are misaligned and copied; same result
        ids = [f"{pad}{i}" for i in range(3)]
        body = frame({"ids": ids, "shape": [3, 4], "metadata": [{"p": pad}] * 3}, x[:3] if pad else x[3:], pad=pad)
        assert post.post("/collections/bin/add", content=body).json() == {"added": 3}
    assert np.array_equal(np.stack([r.vector for r in col.get(limit=10)]), x)
    single = post.post("/collections/bin/search", content=frame({"k": 2, "shape": [4]}, x[0], pad=True)).json()
    batch = post.post("/collections/bin/search", content=frame({"k": 2, "shape": [2, 4]}, x[:2], pad=False)).json()
    assert [vecpack.Hit(**h) for h in single["hits"]] == col.search(x[0], k=2)  # the client sends small ones as JSON
    assert [[vecpack.Hit(**h) for h in row] for row in batch["hits"]] == col.search(x[:2], k=2)
    bad = {
        b"\x01": "missing the 4-byte JSON length",
        (100).to_bytes(4, "little") + b"{}": "exceeds the body",
        (2).to_bytes(4, "little") + b"{]": "malformed",
        frame({"ids": ["z"], "shape": [1, 4]}, x[:2], pad=True): "needs 16 bytes",
        frame({"ids": ["z"], "shape": [0, 4]}, x[:0], pad=True): "shape must be",
        frame({"ids": ["z"], "shape": [1, 4], "vectors": [[1, 2, 3, 4]]}, x[:1], pad=True): "float32 block",
        frame({"ids": ["z"], "shape": [1, 4], "color": 1}, x[:1], pad=True): "Extra inputs",
        frame({"ids": ["z"], "shape": [1, 3]}, x[:1, :3], pad=True): "dimension 3",
    }
    for body, message in bad.items():
        r = post.post("/collections/bin/add", content=body)
        assert r.status_code == 422 and message in r.json()["detail"], (body, r.json())
    r = post.post("/collections/bin/count", content=frame({"shape": [1, 4]}, x[:1], pad=True))
    assert r.status_code == 422 and "takes JSON" in r.json()["detail"]
    assert len(col) == 6


def test_json_bodies_and_errors(server, admin_key, client):
    client.create_collection("j", dim=2, codec="float32")
    http = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {admin_key}"})
    assert http.post("/collections/j/add", json={"ids": [1], "vectors": [[1, 2]]}).json() == {"added": 1}
    cases = [
        (http.post("/collections/j/add", json={"ids": [2]}), 422, "InvalidInput", "vectors missing"),
        (http.post("/collections/j/add", json={"ids": [2], "vectors": [[1, "x"]]}), 422, "InvalidInput",
         "vectors.0.1: Input should be a valid number"),
        (http.post("/collections/j/search", json={"q": [1, 2], "k": "5"}), 422, "InvalidInput", "k: Input should"),
        (http.post("/collections/j/search", json={"q": [1, 2, 3]}), 422, "DimensionMismatch", "dimension 3"),
        (http.post("/collections/j/get", json={"ids": [9]}), 404, "NotFound", "unknown ids"),
        (http.post("/collections/j/add", json={"ids": [1], "vectors": [[1, 2]]}), 409, "Conflict", "already exist"),
        (http.get("/collections/j/nothing"), 404, "NotFound", "Not Found"),
        (http.put("/collections/j/add"), 405, "MethodNotAllowed", "Method Not Allowed"),
    ]
    for response, status, error, detail in cases:
        assert response.status_code == status, response.json()
        assert response.json()["error"] == error and detail in response.json()["detail"], response.json()


def test_concurrent_writes_and_reads(client):
    """Writers and readers at once through one server: every acknowledged write is there, nothing fails."""
    col = client.create_collection("busy", dim=8, codec="int8", seal_rows=64)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        rng = np.random.default_rng(w)
        try:
            for b in range(10):
                ids = [f"{w}-{b}-{i}" for i in range(8)]
                col.add(ids=ids, vectors=rng.normal(size=(8, 8)), metadata=[{"w": w}] * 8)
        except BaseException as exc:  # reported below: a thread's exception would otherwise vanish
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(15):
                col.search(np.ones(8), k=5, where={"w": {"$gte": 0}})
                col.count()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)] + [threading.Thread(target=reader)
                                                                               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert col.count() == 4 * 10 * 8
    assert {r.id for r in col.get(ids=[f"{w}-9-7" for w in range(4)])} == {f"{w}-9-7" for w in range(4)}


def test_metrics_and_docs(server, admin_key, client):
    client.create_collection("m", dim=2).add(ids=[1, 2], vectors=[[1, 0], [0, 1]])
    client.get_collection("m").search([1, 0], k=1)
    with pytest.raises(vecpack.NotFound):
        client.get_collection("absent")
    text = httpx.get(f"{server}/metrics", headers={"X-API-Key": admin_key}).text
    assert 'vecpack_requests_total{method="POST",route="/collections/{name}/search",status="200"} 1' in text
    assert 'vecpack_requests_total{method="GET",route="/collections/{name}",status="404"} 1' in text
    assert 'vecpack_request_seconds_count{route="/collections/{name}/add"} 1' in text
    assert "vecpack_collections 1" in text and 'vecpack_collection_records{collection="m"} 2' in text
    schema = httpx.get(f"{server}/openapi.json").json()
    assert "application/octet-stream" in schema["paths"]["/collections/{name}/add"]["post"]["requestBody"]["content"]
    assert {"WriteBody", "SearchBody", "GetBody"} <= set(schema["components"]["schemas"])
    assert httpx.get(f"{server}/docs").status_code == 200


def test_a_failed_seal_after_a_write_is_a_metric_not_an_error(server, admin_key, client, monkeypatch):
    """Issue 19, finding 6: the write stands (200), and the failure shows in /metrics and stats."""
    col = client.create_collection("s", dim=2, seal_rows=2)

    def full(self, db, pending):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Segments, "seal", full)
    col.add(ids=[1, 2, 3], vectors=[[1, 0], [0, 1], [1, 1]])
    assert col.count() == 3
    assert "No space left" in col.stats()["maintenance_error"]
    text = httpx.get(f"{server}/metrics", headers={"X-API-Key": admin_key}).text
    assert 'vecpack_maintenance_failures_total{collection="s"} 1' in text
