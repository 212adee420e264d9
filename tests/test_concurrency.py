"""Threads sharing one Collection: reads never wait for a write transaction, and see whole commits only.

Deadlocks are caught with join timeouts, not measured: nothing here depends on the machine's speed.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import vecpack
from vecpack.storage.rowfile import RowFile

DIM = 16
WAIT_S = 30.0  # far above any legitimate wait: a join that times out means a deadlock


def _unit_rows(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def col(tmp_path):
    db = vecpack.connect(tmp_path / "db")
    c = db.create_collection("c", dim=DIM, metric="cosine", codec="int8", seal_rows=256, index="graph")
    x = _unit_rows(2000, 0)
    c.add(ids=list(range(2000)), vectors=x, metadata=[{"i": i} for i in range(2000)])
    c.optimize()
    yield c, x
    db.close()


def test_reads_go_on_while_a_write_transaction_is_open(col, monkeypatch):
    """A writer stopped between writing its vectors and committing must not block search/get/count."""
    c, x = col
    inside, release = threading.Event(), threading.Event()
    write = RowFile.write

    def slow_write(self, row0, data):  # the vector log's fdatasync, made as slow as we like
        crc = write(self, row0, data)
        inside.set()
        assert release.wait(WAIT_S)
        return crc

    monkeypatch.setattr(RowFile, "write", slow_write)
    new = _unit_rows(3, 1)
    writer = threading.Thread(target=c.add, kwargs={"ids": ["a", "b", "c"], "vectors": new})
    writer.start()
    assert inside.wait(WAIT_S)
    results: dict[str, object] = {}

    def read() -> None:
        results["search"] = c.search(x[5], k=3)
        results["count"] = c.count()
        results["len"] = len(c)
        results["get"] = c.get(["5"])
        results["filtered"] = c.count(where={"i": {"$lt": 10}})
        results["uncommitted"] = c.search(new[0], k=1)

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(WAIT_S)
    blocked = reader.is_alive()
    release.set()
    writer.join(WAIT_S)
    reader.join(WAIT_S)
    assert not blocked, "reads waited for the open write transaction"
    assert not writer.is_alive()
    assert results["search"][0].id == "5"
    assert results["count"] == results["len"] == 2000  # the open transaction is invisible
    assert results["filtered"] == 10
    assert results["get"][0].metadata == {"i": 5}
    assert results["uncommitted"][0].id not in {"a", "b", "c"}
    assert len(c) == 2003 and c.search(new[0], k=1)[0].id == "a"  # and visible once committed


def test_search_during_compactions_returns_the_right_records(col):
    """Searches racing deletes and compactions (which renumber rows) never name a wrong or deleted record."""
    c, x = col
    deleted: set[int] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def churn() -> None:
        try:
            rng = np.random.default_rng(2)
            for _ in range(6):
                gone = [int(i) for i in rng.choice(2000, size=100, replace=False) if int(i) not in deleted]
                c.delete(ids=gone)
                deleted.update(gone)
                c.optimize(compact=True)
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def search() -> None:
        try:
            rng = np.random.default_rng(3)
            while not stop.is_set():
                i = int(rng.integers(2000))
                dead_before = set(deleted)
                hits = c.search(x[i], k=5)
                dead_after = set(deleted)
                for hit in hits:  # every hit is the record of that id: its score is its own cosine
                    assert abs(hit.score - float(x[int(hit.id)] @ x[i])) < 0.05, (hit, i)
                    assert int(hit.id) not in dead_before
                if i not in dead_after:
                    assert hits[0].id == str(i)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=churn), threading.Thread(target=search), threading.Thread(target=search)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors, errors[0]
    assert len(c) == 2000 - len(deleted)
    c.verify()


def test_concurrent_writers_are_serialised_and_all_land(col):
    c, _ = col
    errors: list[BaseException] = []

    def write(t: int) -> None:
        try:
            for b in range(10):
                ids = [f"t{t}-{b}-{i}" for i in range(5)]
                c.upsert(ids=ids, vectors=_unit_rows(5, 100 * t + b), metadata=[{"t": t}] * 5)
                assert c.count(where={"t": t}) == 5 * (b + 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 4)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors, errors[0]
    assert len(c) == 2000 + 4 * 10 * 5
    c.verify()
