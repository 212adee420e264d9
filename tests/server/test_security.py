"""Security through a real loopback server: 401 / 403, tenant-pinned keys, 422 / 413, path traversal, key storage."""

from __future__ import annotations

import http.client
import sqlite3
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

import vecpack
from conftest import running
from vecpack.errors import Forbidden, PayloadTooLarge, Unauthorized
from vecpack.server import KeyStore, Limits
from vecpack.server.auth import KEYS_FILE

DIM = 8


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


@pytest.fixture
def world(client):
    """Collection "docs", and "saas" with tenants acme and globex holding the same ids 0..9."""
    client.create_collection("docs", dim=DIM, codec="float32").add(ids=list(range(5)), vectors=vectors(5, 0))
    saas = client.create_collection("saas", dim=DIM, codec="float32", multi_tenant=True)
    for seed, tenant in enumerate(["acme", "globex"]):
        saas.add(ids=list(range(10)), vectors=vectors(10, seed), metadata=[{"owner": tenant}] * 10, tenant=tenant)
    return client


def key(db_path, role: str, collection: str = "*", tenant: str | None = None) -> str:
    with KeyStore(db_path) as keys:
        return keys.create(role, collection, tenant)


def test_no_key_or_unknown_key_is_401(server, db_path, world):
    for headers in ({}, {"X-API-Key": "nope"}, {"Authorization": "Bearer vpk_00000000_" + "A" * 43}):
        for method, path in (("GET", "/collections"), ("POST", "/collections/docs/search"), ("GET", "/metrics"),
                             ("POST", "/collections"), ("DELETE", "/collections/docs")):
            r = httpx.request(method, f"{server}{path}", headers=headers, json={"q": [0] * DIM})
            assert r.status_code == 401 and r.json()["error"] == "Unauthorized", (method, path, r.json())
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}
    with vecpack.Client(server) as anonymous, pytest.raises(Unauthorized, match="missing API key"):
        anonymous.list_collections()
    reader = key(db_path, "read")
    with vecpack.Client(server, api_key=reader) as c:
        assert c.list_collections() == ["docs", "saas"]
        with KeyStore(db_path) as keys:
            keys.revoke(reader.split("_")[1])  # takes effect at the next request
        with pytest.raises(Unauthorized, match="unknown or revoked") as info:
            c.list_collections()
        assert isinstance(info.value, PermissionError)
    assert world.get_collection("docs").count() == 5


def test_scopes_are_enforced_403(server, db_path, world):
    q = np.ones(DIM)
    with vecpack.Client(server, api_key=key(db_path, "read", "docs")) as c:
        docs = c.get_collection("docs")
        assert len(docs.search(q, k=3)) == 3 and c.list_collections() == ["docs"]
        for call in (lambda: docs.add(ids=[9], vectors=vectors(1, 9)), lambda: docs.delete(ids=[0]),
                     lambda: docs.optimize(), lambda: c.get_collection("saas"), lambda: c.drop_collection("docs"),
                     lambda: c.create_collection("docs2", dim=DIM), lambda: docs.create_field_index("x")):
            with pytest.raises(Forbidden):
                call()
    with vecpack.Client(server, api_key=key(db_path, "write", "docs")) as c:
        docs = c.get_collection("docs")
        docs.add(ids=[9], vectors=vectors(1, 9))
        docs.optimize()
        with pytest.raises(Forbidden, match="no access to collection 'other'"):
            c.create_collection("other", dim=DIM)
        r = httpx.get(f"{server}/metrics", headers={"X-API-Key": c._http.headers["Authorization"][7:]})
        assert r.status_code == 403 and r.json() == {"error": "Forbidden", "detail": r.json()["detail"]}
    with vecpack.Client(server, api_key=key(db_path, "write")) as c:
        c.create_collection("other", dim=DIM).add(ids=[1], vectors=vectors(1, 1))
        c.drop_collection("other")
    assert world.get_collection("docs").count() == 6 and world.list_collections() == ["docs", "saas"]


def test_tenant_pinned_key_never_reaches_another_tenant(server, db_path, world):
    saas_admin = world.get_collection("saas")
    globex_before = saas_admin.get(limit=100, tenant="globex")
    with vecpack.Client(server, api_key=key(db_path, "write", "saas", tenant="acme")) as c:
        saas = c.get_collection("saas")  # the schema is fine to read
        q = vectors(1, 5)[0]
        big = vectors(600, 6)  # 600 x 8 floats: the binary body, where the tenant travels in its JSON part
        for tenant in ("globex", None):
            for call in (lambda t=tenant: saas.search(q, k=5, tenant=t), lambda t=tenant: saas.search(big, tenant=t),
                         lambda t=tenant: saas.get(ids=[1], tenant=t), lambda t=tenant: saas.get(tenant=t),
                         lambda t=tenant: saas.count(tenant=t), lambda t=tenant: saas.delete(ids=[1], tenant=t),
                         lambda t=tenant: saas.delete(where={"owner": "globex"}, tenant=t),
                         lambda t=tenant: saas.explain(tenant=t),
                         lambda t=tenant: saas.add(ids=[50], vectors=vectors(1, 1), tenant=t),
                         lambda t=tenant: saas.upsert(ids=list(range(600)), vectors=big, tenant=t)):
                with pytest.raises(Forbidden, match="pinned to tenant 'acme'"):
                    call()
        for call in (saas.list_tenants, saas.stats, lambda: len(saas), lambda: saas.create_tenant("x"),
                     lambda: saas.drop_tenant("globex"), lambda: saas.deactivate_tenant("globex"), saas.optimize,
                     lambda: saas.create_field_index("owner"), c.list_collections, lambda: c.drop_collection("saas"),
                     lambda: c.create_collection("mine", dim=DIM), lambda: c.get_collection("docs")):
            with pytest.raises(Forbidden):
                call()
        # its own tenant works, and only ever shows acme's records, even under ids globex also has
        hits = saas.search(vectors(4, 7), k=10, tenant="acme", where={"owner": {"$exists": True}})
        assert {h.metadata["owner"] for row in hits for h in row} == {"acme"}
        assert saas.count(tenant="acme") == 10 and saas.count(where={"owner": "globex"}, tenant="acme") == 0
        mine = saas.get(ids=[1, 2], tenant="acme")
        assert [r.metadata for r in mine] == [{"owner": "acme"}] * 2
        assert np.array_equal(mine[0].vector, vectors(10, 0)[1])
        assert saas.delete(ids=[1], tenant="acme") == 1 and saas.delete(where={"owner": "globex"}, tenant="acme") == 0
        saas.upsert(ids=[2], vectors=vectors(1, 3), metadata=[{"owner": "acme", "v": 2}], tenant="acme")
    with vecpack.Client(server, api_key=key(db_path, "read", "saas", tenant="acme")) as c, pytest.raises(Forbidden):
        c.get_collection("saas").add(ids=[70], vectors=vectors(1, 70), tenant="acme")
    after = saas_admin.get(limit=100, tenant="globex")
    assert [(r.id, r.vector.tolist(), r.metadata) for r in after] == [(r.id, r.vector.tolist(), r.metadata)
                                                                      for r in globex_before]
    assert saas_admin.count(tenant="acme") == 9


def test_malformed_requests_are_422(server, admin_key, world):
    h = {"X-API-Key": admin_key}
    for body in (b"{bad json", b"[1, 2]", b'{"q": [1], "k": 1', b'{"q": "abc"}', b'{"where": {"a": 1}, "q": null}',
                 "\u00ff".encode("latin-1")):
        r = httpx.post(f"{server}/collections/docs/search", content=body,
                       headers={**h, "Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["error"] == "InvalidInput", (body, r.json())
    r = httpx.post(f"{server}/collections", json={"name": "x", "dim": 4, "typo": 1}, headers=h)
    assert r.status_code == 422 and "typo: Extra inputs are not permitted" in r.json()["detail"]
    r = httpx.post(f"{server}/collections/docs/search", json={"q": [1] * DIM, "where": {"a": {"$gt": [1]}}}, headers=h)
    assert r.status_code == 422 and "where['a']['$gt']" in r.json()["detail"]


def test_limits_413_and_422(tmp_path):
    path = tmp_path / "small"
    admin = key(path, "admin")
    limits = Limits(max_body_bytes=4096, max_batch=10, max_queries=3, max_k=5)
    with running(path, limits=limits) as url, vecpack.Client(url, api_key=admin) as c:
        col = c.create_collection("c", dim=DIM, codec="float32")
        col.add(ids=list(range(10)), vectors=vectors(10, 0))
        h = {"X-API-Key": admin, "Content-Type": "application/json"}
        r = httpx.post(f"{url}/collections/c/add", content=b" " * 5000, headers=h)  # declared length
        assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge" and "4096" in r.json()["detail"]
        r = httpx.post(f"{url}/collections/c/add", content=(b" " * 1000 for _ in range(6)), headers=h)  # chunked
        assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"
        with pytest.raises(PayloadTooLarge, match="4096 bytes"):
            col.add(ids=list(range(100, 110)), vectors=vectors(10, 1), metadata=[{"pad": "x" * 400}] * 10)
        for call, message in ((lambda: col.add(ids=list(range(20, 31)), vectors=vectors(11, 2)), "11 records"),
                              (lambda: col.search(np.ones(DIM), k=6), "k=6 exceeds"),
                              (lambda: col.search(np.ones((4, DIM)), k=1), "4 queries"),
                              (lambda: col.get(limit=11), "limit"), (lambda: col.delete(ids=list(range(11))), "11")):
            with pytest.raises(vecpack.InvalidInput, match=message):
                call()
        col.add(ids=[10], vectors=vectors(1, 3))
        with pytest.raises(vecpack.InvalidInput, match="more than 10 records match"):
            col.get()
        assert len(col.get(limit=10, offset=1)) == 10 and col.count() == 11  # nothing rejected was written


def test_path_traversal_is_rejected(server, admin_key, world, tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    h = {"X-API-Key": admin_key}
    for name in ("%2e%2e", ".vecpack-keys.sqlite", "a..b", "%2e%2e%2f%2e%2e%2fetc", "..%2Fsecret", "-x", "%00"):
        r = httpx.get(f"{server}/collections/{name}/stats", headers=h)
        assert r.status_code in (404, 422) and r.json()["error"] in ("InvalidInput", "NotFound"), (name, r.json())
        r = httpx.post(f"{server}/collections/{name}/add", json={"ids": [1], "vectors": [[0] * DIM]}, headers=h)
        assert r.status_code in (404, 422), (name, r.json())
    parts = urlsplit(server)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", "/collections/../stats", headers=h)  # unnormalised, as a hostile client sends it
    response = conn.getresponse()
    assert response.status == 422 and b"invalid collection name '..'" in response.read()
    for name in ("../outside", "..", "/etc", ".hidden", "a/b"):
        r = httpx.post(f"{server}/collections", json={"name": name, "dim": DIM}, headers=h)
        assert r.status_code == 422 and "invalid collection name" in r.json()["detail"], name
    with pytest.raises(vecpack.InvalidInput):
        world.get_collection(".vecpack-keys.sqlite")
    with KeyStore(tmp_path / "served") as keys, pytest.raises(vecpack.InvalidInput):
        keys.create("read", "../x")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert world.list_collections() == ["docs", "saas"]


def test_keys_are_stored_hashed(db_path):
    with KeyStore(db_path) as keys:
        secret = keys.create("write", "docs", tenant="acme")
        prefix = secret.split("_")[1]
        (listed,) = [k for k in keys.list() if k.prefix == prefix]
        assert (listed.role, listed.collection, listed.tenant) == ("write", "docs", "acme")
        assert keys.verify(secret) == listed and keys.verify(secret[:-1] + "x") is None
        for bad in (lambda: keys.create("owner"), lambda: keys.create("admin", "docs"),
                    lambda: keys.create("read", tenant="../t")):
            with pytest.raises(vecpack.InvalidInput):
                bad()
        keys.revoke(prefix)
        assert keys.verify(secret) is None
        with pytest.raises(vecpack.NotFound):
            keys.revoke(prefix)
        kept = keys.create("admin")
    stored = sqlite3.connect(db_path / KEYS_FILE).execute("SELECT * FROM keys").fetchall()
    assert len(stored) == 1 and kept.split("_")[1] in stored[0] and kept.split("_", 2)[2] not in str(stored[0])
    with vecpack.connect(db_path) as db:
        assert db.list_collections() == []  # the key file is not a collection
