"""Crash safety and corruption detection: acknowledged writes survive, damage is reported, never served."""

from __future__ import annotations

import mmap
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import vecpack
from helpers import flip_byte
from vecpack import CorruptData
from vecpack.storage.catalog import Catalog
from vecpack.storage.rowfile import HEADER_SIZE, RowFile
from vecpack.storage.segments import Segments


@pytest.fixture
def stored(tmp_path, data):
    """A closed database with one int8 collection: 500 sealed rows + 100 growing rows."""
    with vecpack.connect(tmp_path) as db:
        col = db.create_collection("docs", dim=data.shape[1], codec="int8")
        col.add(ids=list(range(250)), vectors=data[:250])
        col.add(ids=list(range(250, 500)), vectors=data[250:500])
        col.optimize()
        col.add(ids=list(range(500, 600)), vectors=data[500:])
    return tmp_path, tmp_path / "docs"


def test_truncated_vector_log_is_reported(stored):
    root, folder = stored
    with open(folder / "vectors.f32", "r+b") as f:
        f.truncate(HEADER_SIZE + 599 * 40 * 4)
    with vecpack.connect(root) as db, pytest.raises(CorruptData, match="truncated"):
        db.get_collection("docs")


def test_truncated_codes_are_reported(stored):
    root, folder = stored
    with open(folder / "codes.bin", "r+b") as f:
        f.truncate(HEADER_SIZE + 100)
    with vecpack.connect(root) as db, pytest.raises(CorruptData, match="truncated"):
        db.get_collection("docs")


@pytest.mark.parametrize("name", ["codes.bin", "vectors.f32"])
def test_missing_row_file_is_reported(stored, name):
    root, folder = stored
    (folder / name).unlink()
    with vecpack.connect(root) as db, pytest.raises(CorruptData, match=rf"{name}: missing, but the catalog names it"):
        db.get_collection("docs")


def test_corrupt_last_batch_detected_on_open(stored):
    root, folder = stored
    flip_byte(folder / "vectors.f32", HEADER_SIZE + 550 * 160 + 3)
    with vecpack.connect(root) as db, pytest.raises(CorruptData, match=r"checksum mismatch in rows 500\.\.599"):
        db.get_collection("docs")


def test_corrupt_older_batch_detected_by_verify(stored):
    root, folder = stored
    flip_byte(folder / "vectors.f32", HEADER_SIZE + 10 * 160)
    with vecpack.connect(root) as db:
        col = db.get_collection("docs")  # open checks only the tail, to stay fast
        with pytest.raises(CorruptData, match=r"checksum mismatch in rows 0\.\.249"):
            col.verify()


def test_corrupt_codes_and_codec_detected(stored):
    root, folder = stored
    flip_byte(folder / "codes.bin", HEADER_SIZE + 5)
    with vecpack.connect(root) as db, pytest.raises(CorruptData, match=r"codes\.bin: checksum mismatch"):
        db.get_collection("docs")
    flip_byte(folder / "codes.bin", HEADER_SIZE + 5)  # repair
    flip_byte(folder / "codec.npz", 100)
    with vecpack.connect(root) as db, pytest.raises(CorruptData, match=r"codec\.npz"):
        db.get_collection("docs")


def test_bad_header_and_catalog_detected(stored):
    root, folder = stored
    flip_byte(folder / "vectors.f32", 0)
    with vecpack.connect(root) as db, pytest.raises(CorruptData, match="header"):
        db.get_collection("docs")
    flip_byte(folder / "vectors.f32", 0)
    for extra in ("-wal", "-shm"):
        (folder / f"catalog.sqlite{extra}").unlink(missing_ok=True)
    (folder / "catalog.sqlite").write_bytes(b"not a database" * 100)
    with vecpack.connect(root) as db, pytest.raises(CorruptData, match="catalog"):
        db.get_collection("docs")


@pytest.fixture
def catalogued(tmp_path, data):
    """A closed database whose catalog holds 3,000 records with metadata (its WAL folded into the file)."""
    rows = np.tile(data, (5, 1))
    with vecpack.connect(tmp_path) as db:
        col = db.create_collection("docs", dim=data.shape[1], metric="l2", codec="int8")
        col.add(ids=[f"doc-{i}" for i in range(3000)], vectors=rows, metadata=[{"i": i, "t": "x" * 40} for i in
                                                                                range(3000)])
        col.optimize()
    return tmp_path, tmp_path / "docs"


def test_verify_checks_the_catalog_and_sqlite_errors_are_corrupt_data(catalogued):
    """200 flipped bytes in catalog.sqlite: verify() said OK and get raised sqlite3.DatabaseError."""
    root, folder = catalogued
    path = folder / "catalog.sqlite"
    rng = np.random.default_rng(0)
    for offset in rng.choice(np.arange(3 * 4096, path.stat().st_size), size=200, replace=False):
        flip_byte(path, int(offset))
    with sqlite3.connect(path) as conn:  # the damage is real: SQLite itself says so
        assert conn.execute("PRAGMA quick_check").fetchone()[0] != "ok"
    with vecpack.connect(root) as db:
        col = db.get_collection("docs")
        with pytest.raises(CorruptData, match=r"catalog\.sqlite: (damaged|database disk image is malformed)"):
            col.verify()
        for i in range(0, 3000, 7):  # reads fail as vecpack errors, never as sqlite3's
            try:
                col.get([f"doc-{i}"])
            except vecpack.VecpackError:
                pass


def test_verify_finds_records_that_contradict_the_counters(catalogued):
    root, folder = catalogued
    with sqlite3.connect(folder / "catalog.sqlite") as conn:
        conn.execute("DELETE FROM records WHERE row = 5")  # a record lost without its tombstone
    with vecpack.connect(root) as db:
        col = db.get_collection("docs")
        with pytest.raises(CorruptData, match=r"inconsistent .*2999 records and 0 tombstones"):
            col.verify()


def test_uncommitted_tail_is_ignored_and_overwritten(stored, data):
    root, folder = stored
    with open(folder / "vectors.f32", "r+b") as f:  # a crash after writing vectors, before the commit
        f.seek(HEADER_SIZE + 600 * 160)
        f.write(np.full((50, 40), 9.0, dtype=np.float32).tobytes())
    with vecpack.connect(root) as db:
        col = db.get_collection("docs")
        assert len(col) == 600
        col.add(ids=["new"], vectors=data[:1])
        np.testing.assert_array_equal(col.get(["new"])[0].vector, data[0])
        col.verify()


def test_failed_write_leaves_no_trace(db, data, monkeypatch):
    col = db.create_collection("docs", dim=data.shape[1], codec="float32")
    col.add(ids=list(range(10)), vectors=data[:10])

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Catalog, "add_range", boom)
    with pytest.raises(OSError, match="disk full"):
        col.add(ids=list(range(10, 20)), vectors=data[10:20])
    monkeypatch.undo()
    assert len(col) == 10 and col.stats()["rows"] == 10
    col.add(ids=list(range(10, 20)), vectors=data[10:20])
    assert len(col) == 20
    np.testing.assert_array_equal(col.get(["15"])[0].vector, data[15])


@pytest.mark.parametrize("error", [sqlite3.OperationalError("database or disk is full"), OSError(28, "No space left")])
def test_a_write_the_disk_refuses_is_a_storage_error_and_writes_nothing(db, data, monkeypatch, error):
    col = db.create_collection("docs", dim=data.shape[1], metric="l2", codec="float32")
    col.add(ids=list(range(10)), vectors=data[:10])

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(Catalog, "insert_records", full)
    with pytest.raises(vecpack.StorageError, match=r"full|No space"):
        col.add(ids=list(range(10, 20)), vectors=data[10:20])
    monkeypatch.undo()
    assert len(col) == 10 and col.stats()["rows"] == 10
    col.add(ids=list(range(10, 20)), vectors=data[10:20])  # the retry is not a Conflict: nothing was written
    assert len(col) == 20


def test_a_seal_failing_after_the_commit_is_not_the_writes_failure(db, data, monkeypatch):
    """Sealing runs after the write's commit: its failure (a full disk) must not be reported as the write's, must
    not wedge the collection, and shows in stats() until a seal succeeds."""
    col = db.create_collection("docs", dim=data.shape[1], metric="l2", codec="int8", seal_rows=100)
    col.add(ids=list(range(50)), vectors=data[:50])
    seal = Segments.seal

    def full(self, db, pending):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Segments, "seal", full)
    col.add(ids=list(range(50, 150)), vectors=data[50:150])  # crosses seal_rows: the seal fails, the add does not
    stats = col.stats()
    assert len(col) == 150 and stats["growing_rows"] == 150
    # the seal's transaction rolled back and reported a StorageError, which the write does not raise
    assert "seal failed: StorageError" in stats["maintenance_error"]
    assert "database or disk is full" in stats["maintenance_error"]
    assert stats["maintenance_failures"] == 1
    assert col.search(data[120], k=1)[0].id == "120"  # unsealed rows are searched exactly
    monkeypatch.setattr(Segments, "seal", seal)
    col.add(ids=list(range(150, 250)), vectors=data[150:250])
    stats = col.stats()
    assert stats["sealed_rows"] == 250 and stats["maintenance_error"] is None and stats["maintenance_failures"] == 1


def test_float16_saturates_values_beyond_its_range_instead_of_failing_every_seal(db):
    """One row beyond float16's range (65504) made every later seal fail after its commit: the next add reported
    an error for rows it had written, and optimize() failed for good."""
    col = db.create_collection("f16", dim=4, metric="l2", codec="float16", seal_rows=100)
    col.add(ids=["big"], vectors=[[100000.0, 0, 0, 0]])
    rows = np.random.default_rng(0).standard_normal((100, 4)).astype(np.float32)
    col.add(ids=list(range(100)), vectors=rows)
    assert len(col) == 101 and col.stats()["sealed_rows"] == 101 and col.stats()["maintenance_error"] is None
    col.optimize()
    assert col.search([100000.0, 0, 0, 0], k=1, rerank=10)[0].id == "big"
    assert col.search(rows[7], k=1)[0].id == "7"


def test_resident_rows_follow_the_file(tmp_path):
    """A resident RowFile reads rows once into memory, extends its copy as views grow, and rewrites the
    rows it holds when they are written again (an uncommitted tail overwritten), so it equals the file."""
    rows = np.arange(40, dtype=np.uint8).reshape(10, 4)
    f = RowFile(tmp_path / "r.bin", b"TESTROWS", 4, create=True, resident=True)
    f.write(0, rows[:6])
    v = f.view(4)
    np.testing.assert_array_equal(v, rows[:4])
    assert not v.flags.writeable
    np.testing.assert_array_equal(f.view(6), rows[:6])
    f.write(5, rows[8:10])  # row 5 was resident: rewritten there too; row 6 is new
    np.testing.assert_array_equal(f.view(7), np.concatenate([rows[:5], rows[8:10]]))
    mapped = RowFile(tmp_path / "r.bin", b"TESTROWS", 4)
    np.testing.assert_array_equal(mapped.view(7), f.view(7))
    with pytest.raises(CorruptData, match="truncated"):
        f.view(f.rows_on_disk() + 1)
    f.close()
    mapped.close()


@pytest.mark.parametrize("memory_map", [False, True])
def test_codes_and_index_resident_or_mapped(tmp_path, rng, memory_map):
    """connect(memory_map=False) (the default) reads codes and index arrays into memory; True maps them.
    Both answer the same, and writes by another handle are seen by both."""
    data = rng.normal(size=(1600, 24)).astype(np.float32)
    with vecpack.connect(tmp_path) as db:
        col = db.create_collection("g", dim=data.shape[1], codec="int8", index="ivf", index_params={"nlist": 8})
        col.add(ids=list(range(1500)), vectors=data[:1500])
        col.optimize()
        want = col.search(data[:5], k=5)
    with vecpack.connect(tmp_path, memory_map=memory_map) as db, vecpack.connect(tmp_path) as other:
        col = db.get_collection("g")
        segments = col._store.segments  # how the arrays are held has no public view
        assert isinstance(segments.index.list_codes, np.memmap) == memory_map
        codes = segments.codes.view(1500)
        while isinstance(codes, np.ndarray) and codes.base is not None:
            codes = codes.base
        assert isinstance(codes.obj if isinstance(codes, memoryview) else codes, mmap.mmap) == memory_map
        assert [[h.id for h in r] for r in col.search(data[:5], k=5)] == [[h.id for h in r] for r in want]
        other.get_collection("g").add(ids=list(range(1500, 1600)), vectors=data[1500:])
        other.get_collection("g").optimize()
        assert col.search(data[1550:1551], k=1)[0][0].id == "1550"


def test_verify_reads_the_codes_file_not_the_resident_copy(stored, data):
    root, folder = stored
    with vecpack.connect(root) as db:
        col = db.get_collection("docs")
        col.search(data[:1], k=3)  # the codes are resident now
        flip_byte(folder / "codes.bin", HEADER_SIZE + 10 * 40)
        with pytest.raises(CorruptData, match=r"codes.bin: checksum mismatch in rows 0\.\.499"):
            col.verify()


WRITER = textwrap.dedent(
    """
    import sys, numpy as np, vecpack
    db = vecpack.connect(sys.argv[1])
    col = db.create_collection("c", dim=16, codec="binary", seal_rows=300, exist_ok=True)
    start = int(sys.argv[2])
    print("ready", flush=True)
    for b in range(start, start + 10_000):
        x = np.random.default_rng(b).normal(size=(50, 16)).astype(np.float32)
        if b % 7 == 3 and b > 0:
            col.upsert([f"{b - 1}-{j}" for j in range(10)], x[:10])
        col.add([f"{b}-{j}" for j in range(50)], x, metadata=[{"b": b}] * 50)
        print("ack", b, flush=True)
    """
)


def test_sigkill_never_loses_acknowledged_batches_nor_leaves_partial_ones(tmp_path):
    """Kill a writer with SIGKILL at random moments (after its first acknowledged batch), 20 times; check the
    database after each kill."""
    rnd = random.Random(0)
    acked: set[int] = set()
    next_batch = 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for _ in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), str(next_batch)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout.readline().strip() == "ready"
        lines = [proc.stdout.readline()]  # one acknowledged batch at least, however slow the machine
        assert lines[0].startswith("ack ")
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout))  # noqa: B023
        reader.start()
        time.sleep(rnd.uniform(0.0, 0.5))  # then a random moment: mid-batch, mid-fsync, mid-commit, ...
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join()
        # a line cut short by the kill was never fully printed: only complete lines acknowledge
        acked.update(int(line.split()[1]) for line in lines if line.startswith("ack ") and line.endswith("\n"))
        with vecpack.connect(tmp_path) as db:
            col = db.get_collection("c")
            stored = {r.id for r in col.get()}
            present = {b: sum(f"{b}-{j}" in stored for j in range(50)) for b in range(max(acked, default=-1) + 2)}
            for b in acked:
                assert present[b] == 50, f"acknowledged batch {b} lost rows"
            assert all(n in (0, 50) for n in present.values()), "a batch is half-applied"
            unacked_present = [b for b, n in present.items() if n and b not in acked]
            assert len(unacked_present) <= 1  # only the batch in flight at the kill may have committed
            acked.update(unacked_present)
            b = max(acked)
            expected = np.random.default_rng(b).normal(size=(50, 16)).astype(np.float32)
            np.testing.assert_array_equal(col.get([f"{b}-49"])[0].vector, expected[49])
            assert col.search(expected[49], k=1)[0].id == f"{b}-49"
            col.verify()
            next_batch = b + 1
    assert len(acked) >= 20
