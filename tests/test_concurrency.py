"""Threads sharing one Collection: reads never wait for a write transaction, and see whole commits only.

Deadlocks are caught with join timeouts, not measured: nothing here depends on the machine's speed.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import vecpack
from vecpack.query import execute
from vecpack.storage.rowfile import RowFile
from vecpack.tenants import Tenants

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


# -- handles of other processes: each Database has its own catalog connections and in-memory state -------------------
@pytest.fixture
def two_handles(tmp_path):
    """Two handles on one collection (as two processes would hold it): the reader, and a writer that compacts."""
    x = _unit_rows(2000, 0)
    reader_db, writer_db = vecpack.connect(tmp_path / "db"), vecpack.connect(tmp_path / "db")
    c = reader_db.create_collection("c", dim=DIM, metric="ip", codec="float32", seal_rows=256, index="graph")
    c.add(ids=list(range(2000)), vectors=x, metadata=[{"i": i} for i in range(2000)])
    c.optimize()
    yield c, writer_db.get_collection("c"), x
    reader_db.close()
    writer_db.close()


def _compact_away(writer, ids) -> None:
    writer.delete(ids=ids)
    writer.optimize(compact=True)


def test_search_racing_another_handles_compaction_names_the_scored_records(two_handles, monkeypatch):
    """Another process compacts (renumbers rows) between a search's snapshot and its id lookup: every hit must
    still be the record that was scored (before the fix, the hits named whatever record the new row numbers held)."""
    reader, writer, x = two_handles
    search = execute.search_snapshot
    fired = []

    def racing(*args, **kwargs):
        out = search(*args, **kwargs)
        if not fired:  # once: the other handle renumbers every row after the scored ones were chosen
            fired.append(True)
            _compact_away(writer, list(range(0, 2000, 3)))
        return out

    monkeypatch.setattr(execute, "search_snapshot", racing)
    q = x[[1, 2, 4, 5]]
    found = reader.search(q, k=10)
    assert fired
    for qi, hits in enumerate(found):
        assert len(hits) == 10
        for hit in hits:
            assert int(hit.id) % 3 != 0, "a record deleted before the ids were looked up"
            assert hit.metadata == {"i": int(hit.id)}
            assert hit.score == pytest.approx(float(x[int(hit.id)] @ q[qi]), abs=1e-5)
        assert hits[0].id == str([1, 2, 4, 5][qi])


def test_get_racing_another_handles_writes_returns_each_ids_vector(two_handles, monkeypatch):
    """Another process appends and compacts between a get's refresh and its catalog reads: the records must be the
    ids' own (before the fix: IndexError past the reader's vector view, or another row's vector)."""
    reader, writer, x = two_handles
    records = Tenants.records
    new = _unit_rows(50, 9)
    steps = [lambda: writer.add(ids=[f"n{i}" for i in range(50)], vectors=new),
             lambda: _compact_away(writer, list(range(0, 2000, 2)))]

    def racing(self, ids, tenant_no):
        if steps and self is reader.tenants:
            steps.pop(0)()
        return records(self, ids, tenant_no)

    monkeypatch.setattr(Tenants, "records", racing)
    try:
        got = reader.get(["n3", "7"])
        assert [r.id for r in got] == ["n3", "7"] and np.array_equal(got[0].vector, new[3])
    except vecpack.NotFound:  # the get's generation predates the add: also consistent
        pass
    got = reader.get(["5", "9", "11"])  # the compaction now runs inside this get
    assert not steps
    assert [r.id for r in got] == ["5", "9", "11"]
    for r in got:
        assert np.array_equal(r.vector, x[int(r.id)]) and r.metadata == {"i": int(r.id)}


# -- databases opened by other processes ------------------------------------------------------------------------------
def test_connect_leaves_another_processes_create_in_progress_alone(tmp_path):
    """connect() removed every .tmp-* folder, including one another process was building a collection in."""
    import fcntl

    from vecpack.db import STAGING_LOCK

    vecpack.connect(tmp_path).close()
    building = tmp_path / ".tmp-in-progress"
    building.mkdir()
    with open(tmp_path / STAGING_LOCK, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # as a create of another process holds it
        vecpack.connect(tmp_path).close()
        assert building.is_dir()
    vecpack.connect(tmp_path).close()  # nobody is staging now: it is a leftover
    assert not building.exists()


def test_creates_succeed_while_another_process_connects(tmp_path):
    """Process A creates collections while process B connects in a loop (the audit: 77 of 480 creates failed, one
    left a folder that create called Conflict and get / drop called NotFound)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import time, vecpack
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not __import__("os").path.exists({str(tmp_path / "done")!r}):
            vecpack.connect({str(tmp_path)!r}).close()
    """)
    vecpack.connect(tmp_path).close()
    connector = subprocess.Popen([sys.executable, "-c", script])
    try:
        with vecpack.connect(tmp_path) as db:
            for i in range(40):
                db.create_collection(f"c{i}", dim=4, codec="float32").add(["a"], [[1, 0, 0, 0]])
            assert db.list_collections() == sorted(f"c{i}" for i in range(40))
            assert all(len(db.get_collection(f"c{i}")) == 1 for i in range(40))
    finally:
        (tmp_path / "done").touch()
        connector.wait(60)
    assert connector.returncode == 0


def test_a_folder_without_a_collection_can_be_dropped(tmp_path):
    with vecpack.connect(tmp_path) as db:
        (tmp_path / "broken").mkdir()
        with pytest.raises(vecpack.Conflict, match="holds no collection: drop_collection"):
            db.create_collection("broken", dim=4)
        with pytest.raises(vecpack.NotFound):
            db.get_collection("broken")
        db.drop_collection("broken")
        assert len(db.create_collection("broken", dim=4)) == 0


def test_fresh_state_sees_another_handles_commit_without_holding_a_transaction(two_handles):
    """``Store.fresh`` (an unfiltered search's snapshot): while no one commits, no catalog transaction is opened;
    a commit of another handle is loaded (in one) before the body runs, so a search right after another
    handle's write finds it."""
    reader, writer, x = two_handles
    store = reader._store
    with store.reading():
        n_before = store.segments.n_rows
    with store.fresh():
        assert not store.db.conn.in_transaction
    writer.add(ids=["new"], vectors=x[:1] * -1, metadata=[{"i": -1}])
    with store.fresh():
        assert store.segments.n_rows == n_before + 1
    with store.fresh():
        assert not store.db.conn.in_transaction
    assert reader.search(x[0] * -1, k=1)[0].id == "new"
