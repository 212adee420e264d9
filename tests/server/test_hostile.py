"""Hostile and broken requests (issue 19): memory per request, nesting, 500s on a kept-alive connection, the
client's transport errors and retries, the Authorization rules, paths in error bodies, 405s, the OpenAPI schema."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

import vecpack
from conftest import running, wait_healthy
from vecpack import validate
from vecpack.collection import Collection
from vecpack.errors import ConnectionFailed, PayloadTooLarge, StorageError, Unauthorized
from vecpack.server import KeyStore, Limits
from vecpack.server.app import NAME_PATTERN

DIM = 8
MiB = 1 << 20


def key(path: Path, role: str, collection: str = "*", tenant: str | None = None) -> str:
    with KeyStore(path) as keys:
        return keys.create(role, collection, tenant)


def frame(header: dict | bytes, x: np.ndarray) -> bytes:
    """A binary body: u32 JSON length, JSON (padded to 4 bytes), float32 values."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * (-(4 + len(raw)) % 4)
    return len(raw).to_bytes(4, "little") + raw + x.astype("<f4").tobytes()


def nested_not(depth: int) -> dict:
    where: dict = {"a": 1}
    for _ in range(depth):
        where = {"$not": where}
    return where


@pytest.fixture
def docs(client):
    col = client.create_collection("docs", dim=DIM, codec="float32")
    col.add(ids=list(range(5)), vectors=np.eye(5, DIM), metadata=[{"a": i} for i in range(5)])
    return col


# -- finding 7: memory per request ----------------------------------------------------------------------------------
def _status_bytes(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


@contextmanager
def served_process(path: Path) -> Iterator[tuple[str, int]]:
    """``vecpack serve`` over ``path`` as a child process; yields (url, pid). Its allocator hands freed memory
    back at once, so that each request's peak is measured from the same resident size."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "vecpack.cli", "serve", "--path", str(path), "--port", str(port),
                             "--log-level", "warning"], env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, lambda: proc.poll() is None)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(60)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read peak memory")
def test_json_bodies_cannot_blow_up_server_memory(tmp_path):
    """Before: a 15 MiB JSON search body from a tenant-pinned read key took the server from 283 MB to 2.6 GB;
    4 MiB of ``[[],[],...]`` as ids took it up 3.6 GB (33 s), 4 MiB of zeros as q up 645 MB."""
    path = tmp_path / "db"
    with vecpack.connect(path) as db:
        db.create_collection("saas", dim=384, codec="float32", multi_tenant=True).add(
            ids=[1], vectors=np.ones((1, 384)), tenant="acme")
    reader = key(path, "read", "saas", tenant="acme")
    limit = 4 * MiB  # Limits().max_json_bytes, the default `vecpack serve` runs with
    rows = np.random.default_rng(0).normal(size=(15 * MiB // (20 * 384), 384)).astype(np.float32)
    cases = [  # (body, path, status, growth allowed): the largest last, as the allocator may keep a peak's pages
        (json.dumps({"q": rows.tolist(), "k": 10, "tenant": "acme"}).encode(), "search", 413, 16 * MiB),
        (b'{"k":10,"tenant":"acme","q":[' + b",".join([b"0"] * (limit // 2 - 30)) + b"]}", "search", 422,
         16 * limit),
        (b'{"tenant":"acme","ids":[' + b",".join([b"[]"] * (limit // 3 - 10)) + b"]}", "get", 422, 40 * limit),
    ]
    with served_process(path) as (url, pid), httpx.Client(base_url=url, timeout=300) as http:
        for body, action, status, allowed in cases:
            assert len(body) > 15 * MiB or len(body) <= limit
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS: the peak from here on
            before = _status_bytes(pid, "VmRSS")
            r = http.post(f"/collections/saas/{action}", content=body,
                          headers={"X-API-Key": reader, "Content-Type": "application/json"})
            growth = _status_bytes(pid, "VmHWM") - before
            assert growth < allowed, (action, len(body), growth)
            assert r.status_code == status and len(r.content) < 2000, r.text[:300]  # one error, not one per item
        hits = http.post("/collections/saas/search", json={"q": [1.0] * 384, "k": 1, "tenant": "acme"},
                         headers={"X-API-Key": reader})
        assert hits.json()["hits"][0]["id"] == "1"


def test_json_limit_and_client_switch_to_binary(tmp_path):
    path = tmp_path / "small"
    admin = key(path, "admin")
    limits = Limits(max_json_bytes=20_000)
    x = np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32)  # 1,600 floats: under BINARY_MIN_FLOATS
    with running(path, limits=limits) as url, vecpack.Client(url, api_key=admin) as c:
        col = c.create_collection("c", dim=16, codec="float32")
        assert len(json.dumps({"vectors": x.tolist()})) > 20_000  # as JSON it would exceed the limit
        col.add(ids=list(range(100)), vectors=x)
        assert np.array_equal(col.get(ids=[99])[0].vector, x[99])
        assert [row[0].id for row in col.search(x[:40], k=1)] == [str(i) for i in range(40)]
        assert c.limits()["max_json_bytes"] == 20_000
        h = {"X-API-Key": admin, "Content-Type": "application/json"}
        r = httpx.post(f"{url}/collections/c/search", json={"q": x.tolist()}, headers=h)
        assert r.status_code == 413 and "binary application/octet-stream" in r.json()["detail"]
        big_header = {"ids": list(range(100, 110)), "metadata": [{"pad": "x" * 3000}] * 10, "shape": [10, 16]}
        r = httpx.post(f"{url}/collections/c/add", content=frame(big_header, x[:10]),
                       headers={**h, "Content-Type": "application/octet-stream"})
        assert r.status_code == 413 and "JSON part is" in r.json()["detail"] and "20000" in r.json()["detail"]
        with pytest.raises(PayloadTooLarge, match="limit for JSON"):
            col.add(ids=list(range(100, 110)), vectors=x[:10], metadata=[{"pad": "x" * 3000}] * 10)
        assert col.count() == 100  # nothing refused was written


def test_one_error_per_bad_field_not_per_item(server, admin_key, docs):
    h = {"X-API-Key": admin_key, "Content-Type": "application/json"}
    cases = [
        ({"ids": [[]] * 100_000}, "get", "ids.0"),
        ({"ids": ["a"], "vectors": [[1.0] * DIM] + [["x"] * DIM] * 10_000}, "add", "vectors.1.0"),
        ({"q": ["x"] * 100_000}, "search", "Input should be a valid number"),
        ({"ids": ["a"], "vectors": [[0.0] * DIM], "metadata": [1] * 100_000}, "add", "metadata.0"),
        ({f"k{i}": 1 for i in range(50_000)}, "count", "(and 49997 more unknown fields)"),
    ]
    for body, action, message in cases:
        r = httpx.post(f"{server}/collections/docs/{action}", content=json.dumps(body), headers=h)
        assert r.status_code == 422 and message in r.json()["detail"], r.text[:300]
        assert len(r.json()["detail"]) < 1000
    r = httpx.post(f"{server}/collections/docs/search", json={"q": [1, True] + [0] * (DIM - 2)}, headers=h)
    assert r.status_code == 422 and "valid number" in r.json()["detail"]  # a JSON true is not a number
    r = httpx.post(f"{server}/collections/docs/search", json={"q": [0, 0, 0, 0, 1, 0, 0, 0], "k": 1}, headers=h)
    assert r.json()["hits"][0]["id"] == "4"  # ints are numbers


# -- finding 10: nesting -----------------------------------------------------------------------------------------------
def test_deep_nesting_is_422_everywhere(server, admin_key, docs):
    h = {"X-API-Key": admin_key}
    binary = {**h, "Content-Type": "application/octet-stream"}
    q = np.ones(DIM, dtype=np.float32)
    deep = b"[" * 20_000 + b"]" * 20_000
    requests = [
        ("search", frame({"k": 1, "shape": [DIM], "where": nested_not(500)}, q), binary),
        ("search", frame(b'{"shape": [8], "where": {"a": ' + deep + b"}}", q), binary),
        ("add", frame(b'{"ids": ["z"], "shape": [1, 8], "metadata": [{"a": ' + deep + b"}]}", q), binary),
        ("search", json.dumps({"q": q.tolist(), "where": nested_not(500)}).encode(), h),
        ("count", b'{"where": {"a": ' + deep + b"}}", h),
        ("count", b"[" * 3_000_000, h),  # not even valid JSON: the nesting is refused before parsing
    ]
    for action, body, headers in requests:
        r = httpx.post(f"{server}/collections/docs/{action}", content=body, headers=headers)
        assert r.status_code == 422, (action, r.text[:300])
        assert re.search(r"nested \d+ levels deep; the server's limit is 64", r.json()["detail"]), r.json()
    assert docs.count() == 5
    assert docs.count(where=nested_not(15)) == 4  # well within the limits: a real filter
    text = "[" * 1000 + '\\"{' * 100  # brackets inside strings are not nesting
    docs.add(ids=["s"], vectors=np.ones((1, DIM)), metadata=[{"text": text}])
    assert docs.get(ids=["s"])[0].metadata == {"text": text}


def test_planted_deep_metadata_is_refused_on_every_write_path(server, admin_key, docs):
    """Finding 8: a binary upsert with metadata nested 300 deep was accepted, and every later read of the record
    got a 500. Nested deeper than the core's 32 levels (within the server's 64 for JSON) it is refused."""
    meta: dict = {"leaf": 1}
    for _ in range(39):
        meta = {"n": meta}
    body = frame({"ids": ["deep"], "shape": [1, DIM], "metadata": [meta]}, np.ones(DIM, np.float32))
    for action in ("upsert", "add"):
        r = httpx.post(f"{server}/collections/docs/{action}", content=body,
                       headers={"X-API-Key": admin_key, "Content-Type": "application/octet-stream"})
        assert r.status_code == 422 and "nests deeper than 32 levels" in r.json()["detail"], r.text
    r = httpx.post(f"{server}/collections/docs/upsert", json={"ids": ["deep"], "vectors": [[1.0] * DIM],
                   "metadata": [meta]}, headers={"X-API-Key": admin_key})
    assert r.status_code == 422 and "nests deeper than 32 levels" in r.json()["detail"], r.text
    assert docs.count() == 5 and len(docs.search(np.ones(DIM), k=5)) == 5


# -- finding 11: 500s keep the connection; the client's transport errors -----------------------------------------------
def test_unexpected_error_is_a_json_500_on_a_connection_that_stays_open(server, admin_key, docs, db_path,
                                                                        monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError(f"bug reading {self.path / 'catalog.sqlite'}")

    monkeypatch.setattr(Collection, "count", broken)
    parts = urlsplit(server)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    h = {"X-API-Key": admin_key, "Content-Type": "application/json"}
    conn.request("POST", "/collections/docs/count", body=b"{}", headers=h)
    first = conn.getresponse()
    body = json.loads(first.read())
    assert first.status == 500 and not first.will_close
    sock = conn.sock
    conn.request("GET", "/collections/docs", headers=h)  # the same connection: before, reset by the server
    second = conn.getresponse()
    assert second.status == 200 and json.loads(second.read())["dim"] == DIM and conn.sock is sock
    conn.close()
    assert body == {"error": "InternalError", "detail": "RuntimeError: bug reading docs/catalog.sqlite"}
    with pytest.raises(vecpack.VecpackError, match="HTTP 500 InternalError: RuntimeError: bug reading docs/"):
        docs.count()
    assert len(docs.get(ids=[1, 2])) == 2  # the client's next call on its pooled connection


def test_storage_error_is_507_and_maps_back(server, docs, db_path, monkeypatch):
    def disk_full(self, *args, **kwargs):
        raise StorageError(f"{self.path / 'vectors.f32'}: [Errno 28] No space left on device")

    monkeypatch.setattr(Collection, "add", disk_full)
    with pytest.raises(StorageError, match=r"^docs/vectors\.f32: \[Errno 28\] No space left") as info:
        docs.add(ids=["n"], vectors=np.ones((1, DIM)))
    assert isinstance(info.value, OSError) and str(db_path) not in str(info.value)
    r = httpx.post(f"{server}/collections/docs/add", json={"ids": ["n"], "vectors": [[0.0] * DIM]},
                   headers={"Authorization": docs._client._http.headers["Authorization"]})
    assert r.status_code == 507 and r.json()["error"] == "StorageError"


class Script:
    """An httpx transport answering from a list: an exception to raise, or a JSON body to return."""

    def __init__(self, *steps: BaseException | object) -> None:
        self.steps = list(steps)
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        return httpx.Response(200, json=step)


INFO = {"name": "docs", "dim": 2, "metric": "cosine", "index": "flat", "multi_tenant": False}


def scripted(*steps: BaseException | object) -> tuple[vecpack.Client, Script]:
    script = Script(*steps)
    return vecpack.Client("http://vecpack.test", api_key="k", transport=httpx.MockTransport(script)), script


def test_client_sends_reads_again_once_after_a_dropped_connection():
    reset = httpx.ReadError("Connection reset by peer")
    closed = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    client, script = scripted(reset, INFO, closed, {"count": 3}, httpx.WriteError("Broken pipe"),
                              {"records": []}, {"max_json_bytes": 1 << 20}, closed, {"hits": []})
    col = client.get_collection("docs")
    assert col.count() == 3 and col.get(ids=["a"]) == [] and col.search([1.0, 0.0]) == []
    assert script.seen == ["GET /collections/docs"] * 2 + ["POST /collections/docs/count"] * 2 + [
        "POST /collections/docs/get"] * 2 + ["GET /limits"] + ["POST /collections/docs/search"] * 2
    client, script = scripted(reset, reset)
    with pytest.raises(ConnectionFailed, match="dropped twice") as info:
        client.list_collections()
    assert isinstance(info.value, ConnectionError) and len(script.seen) == 2


def test_client_never_resends_writes_and_raises_connection_failed():
    client, script = scripted(INFO, {"max_json_bytes": 1 << 20}, httpx.ReadError("reset"),
                              httpx.RemoteProtocolError("closed"), httpx.ReadError("reset"))
    col = client.get_collection("docs")
    for call in (lambda: col.add(ids=["a"], vectors=[[1, 0]]), lambda: col.delete(ids=["a"]), col.optimize):
        with pytest.raises(ConnectionFailed, match="may or may not have applied"):
            call()
    assert script.seen == ["GET /collections/docs", "GET /limits", "POST /collections/docs/add",
                           "POST /collections/docs/delete", "POST /collections/docs/optimize"]
    client, script = scripted(httpx.ConnectError("refused"), httpx.ReadTimeout("timed out"))
    with pytest.raises(ConnectionFailed, match="cannot reach the server"):
        client.list_collections()
    with pytest.raises(ConnectionFailed, match="ReadTimeout"):  # a slow server is not asked twice
        client.list_collections()
    assert len(script.seen) == 2


def test_client_on_a_closed_port_raises_connection_failed():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with vecpack.Client(f"http://127.0.0.1:{port}", api_key="k") as c, pytest.raises(ConnectionFailed):
        c.list_collections()


def test_deleting_everything_takes_delete_all(server, admin_key, docs):
    """Finding 4 over HTTP: {"where": {}} deleted every record; it is refused, and delete_all=True is the way."""
    h = {"X-API-Key": admin_key}
    before = docs.count()
    assert before > 0
    for body in ({"where": {}}, {"where": {"$and": [{}]}}, {"ids": ["1"], "delete_all": True}, {}):
        r = httpx.post(f"{server}/collections/docs/delete", json=body, headers=h)
        assert r.status_code == 422 and r.json()["error"] == "InvalidInput", (body, r.text)
    assert docs.count() == before
    assert docs.delete(delete_all=True) == before and docs.count() == 0


# -- finding 13: the Authorization rules, paths in errors --------------------------------------------------------------
def test_authorization_header_rules(server, db_path, docs, admin_key):
    reader = key(db_path, "read", "docs")
    url = f"{server}/collections/docs"
    refused = {
        "malformed Authorization header: write 'Authorization: Bearer <key>'": [
            {"Authorization": reader}, {"Authorization": "Basic anVuazpqdW5r", "X-API-Key": reader},
            {"Authorization": f"Token {reader}"}, {"Authorization": "Bearer"}],
        "two different API keys": [{"Authorization": f"Bearer {reader}", "X-API-Key": admin_key}],
        "missing API key": [{}, {"X-API-Key": ""}],
    }
    for message, cases in refused.items():
        for headers in cases:
            r = httpx.get(url, headers=headers)
            assert r.status_code == 401 and message in r.json()["detail"], (headers, r.json())
            assert r.headers["WWW-Authenticate"] == "Bearer" and reader not in r.text
    for headers in ({"Authorization": f"Bearer {reader}"}, {"Authorization": f"bearer  {reader}"},
                    {"X-API-Key": reader}, {"Authorization": f"Bearer {reader}", "X-API-Key": reader},
                    {"Authorization": f"Bearer {reader}", "X-API-Key": ""}):
        assert httpx.get(url, headers=headers).status_code == 200, headers
    with vecpack.Client(server, api_key=f"Basic {reader}") as c, pytest.raises(Unauthorized, match="unknown"):
        c.list_collections()  # the client always sends Bearer: a key that is not one is simply unknown


def test_error_bodies_never_show_the_database_folder(server, db_path, docs):
    reader = key(db_path, "read", "docs")
    docs.optimize()
    vectors = db_path / "docs" / "vectors.f32"
    data = bytearray(vectors.read_bytes())
    data[64] ^= 0xFF  # the first value after the 64-byte header: the batch checksum no longer matches
    vectors.write_bytes(bytes(data))
    r = httpx.post(f"{server}/collections/docs/verify", headers={"X-API-Key": reader})
    assert r.status_code == 500 and r.json()["error"] == "CorruptData"
    assert r.json()["detail"].startswith("docs/vectors.f32: checksum mismatch"), r.json()
    for form in (str(db_path), os.path.realpath(db_path), str(db_path.parent)):
        assert form not in r.text


# -- finding 14: 405 and the OpenAPI schema ----------------------------------------------------------------------------
def test_405_names_every_allowed_method(server):
    for method, path, allow in (("TRACE", "/health", "GET"), ("PUT", "/collections", "GET, POST"),
                                ("PATCH", "/collections/docs", "DELETE, GET"),
                                ("TRACE", "/collections/docs/tenants", "GET, POST")):
        r = httpx.request(method, f"{server}{path}")
        assert r.status_code == 405 and r.headers.get("Allow") == allow, (method, path, r.headers)
        assert r.json() == {"error": "MethodNotAllowed", "detail": "Method Not Allowed"}


def test_openapi_documents_every_error_and_the_input_rules(tmp_path):
    pytest.importorskip("fastapi")
    from vecpack.server import create_app

    schema = create_app(tmp_path, limits=Limits(max_k=77)).openapi()
    error = {"$ref": "#/components/schemas/Error"}
    assert schema["components"]["schemas"]["Error"]["required"] == ["error", "detail"]
    assert "HTTPValidationError" not in json.dumps(schema)
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            codes = {int(c) for c in op["responses"] if c[0] in "45"}
            expected = {413, 500} | ({401} if path != "/health" else set())
            if path not in ("/health", "/limits"):
                expected |= {403, 503, 507}
            if "{name}" in path or op.get("requestBody"):
                expected |= {404, 422} if "{name}" in path else {422}
            assert expected <= codes, (method, path, expected - codes)
            for code in codes:
                assert op["responses"][str(code)]["content"] == {"application/json": {"schema": error}}
            for param in op.get("parameters", []):
                if param["name"] in ("name", "tenant"):
                    assert param["schema"]["pattern"] == NAME_PATTERN and param["schema"]["maxLength"] == 64
    bodies = schema["components"]["schemas"]
    assert bodies["CreateCollectionBody"]["properties"]["dim"] | {"title": None} == {
        "type": "integer", "minimum": 1, "maximum": 65536, "title": None}
    assert bodies["CreateCollectionBody"]["properties"]["name"]["pattern"] == NAME_PATTERN
    assert bodies["SearchBody"]["properties"]["k"]["maximum"] == 77 and bodies["SearchBody"]["required"] == ["q"]
    assert bodies["WriteBody"]["required"] == ["ids", "vectors"]
    assert bodies["TenantBody"]["properties"]["name"]["pattern"] == NAME_PATTERN


@pytest.mark.parametrize("name", ["a", "0", "a.", "a.b-c_d", "A" * 64, "a" * 65, "a..b", ".a", "-a", "_a", "a/b",
                                  "", "a b", "é", "a\n", "a.-.b", "a._", "..", "a.."])
def test_name_pattern_is_the_enforced_rule(name):
    try:
        validate.collection_name(name)
        valid = True
    except vecpack.InvalidInput:
        valid = False
    assert valid == bool(re.fullmatch(NAME_PATTERN.strip("^$"), name) and len(name) <= 64)
