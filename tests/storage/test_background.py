"""Background maintenance (``storage.background``): new rows end up compressed and indexed, deleted rows
compacted, with no optimize() call; a small collection's codec is not fitted on a handful of rows; a failure is
reported and retried; closing waits for the work in progress."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import vecpack
from vecpack.collection import Collection
from vecpack.kernels import warm
from vecpack.storage import background
from vecpack.storage.background import Maintainer
from vecpack.storage.segments import Segments

DIM = 16


def wait_for(check, timeout_s: float = 60.0) -> bool:
    """Poll ``check()`` until it holds (the end state is asserted, never how long it took)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@pytest.fixture
def fast():
    """A maintainer that looks every 20 ms and waits 50 ms after a write."""
    m = Maintainer(poll_s=0.02, idle_s=0.05)
    yield m
    m.close()


def open_collection(tmp_path, maintainer, **settings):
    with vecpack.connect(tmp_path, maintenance=False) as db:
        db.create_collection("c", dim=DIM, **settings)
    return Collection(tmp_path / "c", maintainer=maintainer)


def rows(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


@pytest.mark.parametrize("index", ["graph", "ivf", "flat"])
def test_added_rows_end_up_compressed_and_indexed(tmp_path, fast, index):
    col = open_collection(tmp_path, fast, codec="int8", index=index)
    x = rows(1_500)
    col.add(list(range(1_500)), x)
    assert wait_for(lambda: col.stats()["growing_rows"] == 0 and col.stats()["unindexed_rows"] == 0)
    s = col.stats()
    assert s["indexed_rows"] == (1_500 if index != "flat" else 0) and s["maintenance_error"] is None
    assert s["memory_bytes"] - s["index_bytes"] < 1_500 * DIM * 4 / 2  # int8 codes, not float32 rows
    assert col.search(x[7], 1)[0].id == "7"
    col.add(list(range(1_500, 1_510)), rows(10, seed=1))  # a trained codec: a few new rows are sealed too
    assert wait_for(lambda: col.stats()["growing_rows"] == 0 and col.stats()["unindexed_rows"] == 0)
    col.close()


def test_deleted_rows_are_compacted(tmp_path, fast):
    col = open_collection(tmp_path, fast, codec="int8", index="graph")
    col.add(list(range(1_200)), rows(1_200))
    assert wait_for(lambda: col.stats()["unindexed_rows"] == 0)
    col.delete(list(range(300)))
    assert wait_for(lambda: col.stats()["deleted_rows"] == 0)
    assert col.stats()["rows"] == col.stats()["indexed_rows"] == len(col) == 900
    col.close()


def test_a_small_collection_is_not_fitted_on_a_handful_of_rows(tmp_path):
    col = open_collection(tmp_path, None, codec="int8")
    col.add(list(range(50)), rows(50))
    assert not col.stats()["maintenance_due"]  # 50 growing rows, no fitted codec: searched exactly, left alone
    col.add(list(range(50, background.MIN_FIT_ROWS)), rows(background.MIN_FIT_ROWS - 50, seed=2))
    assert col.stats()["maintenance_due"]
    col.optimize()
    assert not col.stats()["maintenance_due"]
    col.add(["one more"], rows(1, seed=3))
    assert col.stats()["maintenance_due"]  # the codec is fitted now: a single row is worth compressing
    col.close()


def test_a_failure_is_reported_and_the_write_stands(tmp_path, fast, monkeypatch):
    col = open_collection(tmp_path, fast, codec="int8")
    failures = []
    real = Segments.seal

    def full(self, *args, **kwargs):
        failures.append(1)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Segments, "seal", full)
    col.add(list(range(1_100)), rows(1_100))
    assert wait_for(lambda: col.stats()["maintenance_failures"] >= 1)
    s = col.stats()
    assert "background optimize failed" in s["maintenance_error"] and s["growing_rows"] == 1_100 and len(col) == 1_100
    time.sleep(0.3)  # no retry within RETRY_S: one failure, not one per look
    assert len(failures) == 1
    monkeypatch.setattr(Segments, "seal", real)
    col.optimize()  # the user's optimize() is not held back
    assert col.stats()["growing_rows"] == 0 and col.stats()["maintenance_error"] is None
    col.close()


def test_closing_waits_for_the_work_in_progress(tmp_path, fast, monkeypatch):
    col = open_collection(tmp_path, fast, codec="int8", index="graph")
    started, finished = threading.Event(), threading.Event()
    real = Segments.seal

    def slow_seal(self, *args, **kwargs):
        started.set()
        time.sleep(0.3)
        real(self, *args, **kwargs)
        finished.set()

    monkeypatch.setattr(Segments, "seal", slow_seal)
    col.add(list(range(3_000)), rows(3_000))
    assert started.wait(30)  # the background optimize is sealing
    col.close()  # waits for it, then closes: no error in the maintainer's thread
    assert finished.is_set() and col.closed
    with vecpack.connect(tmp_path, maintenance=False) as db:
        again = db.get_collection("c")
        again.verify()
        assert len(again) == 3_000 and again.stats()["growing_rows"] == 0


def test_connect_runs_it_unless_turned_off(tmp_path):
    with vecpack.connect(tmp_path, maintenance=True) as db:
        col = db.create_collection("c", dim=DIM, codec="int8", index="graph")
        col.add(list(range(1_100)), rows(1_100))
        assert col.stats()["growing_rows"] == 1_100  # right after the write: nothing done yet
    with vecpack.connect(tmp_path, maintenance=True) as db:
        col = db.get_collection("c")
        assert wait_for(lambda: col.stats()["unindexed_rows"] == 0)


def test_an_index_waits_for_its_kernels_while_they_compile(tmp_path, fast, monkeypatch):
    """Right after an install (the graph group not compiled yet), optimize() compresses the rows but leaves
    the index to background maintenance, searches scan exactly meanwhile; once the kernels are ready the
    index is built without another optimize() call. Without background maintenance optimize() builds it."""
    compiling = {"graph"}
    monkeypatch.setattr(warm, "ready", lambda group: group not in compiling)
    col = open_collection(tmp_path, fast, codec="int8", index="graph")
    x = rows(1_500)
    col.add(list(range(1_500)), x)
    col.optimize()
    s = col.stats()
    assert (s["growing_rows"], s["indexed_rows"], s["unindexed_rows"]) == (0, 0, 1_500)
    assert not s["maintenance_due"]  # nothing background maintenance may do yet
    assert col.search(x[3], 1)[0].id == "3" and col.explain()["unindexed_rows"] == 1_500
    compiling.clear()  # the warm-up reported the graph group
    assert wait_for(lambda: col.stats()["indexed_rows"] == 1_500)
    col.close()
    compiling.add("graph")
    plain = open_collection(tmp_path / "plain", None, codec="int8", index="graph")
    plain.add(list(range(1_500)), x)
    plain.optimize()
    assert plain.stats()["indexed_rows"] == 1_500
    plain.close()


def test_work_optimize_declines_is_not_retried_until_the_rows_change(tmp_path, fast, monkeypatch):
    """An "auto" codec waits for enough live rows to choose: the growing rows stay due, but background
    maintenance tries once, not at every look, until the rows change."""
    calls = []
    real = background.optimize

    def counted(store, compact, *, index=True):
        calls.append(1)
        real(store, compact, index=index)

    monkeypatch.setattr(background, "optimize", counted)
    col = open_collection(tmp_path, fast, codec="auto", bytes_per_vector=16)
    col.add(list(range(1_100)), rows(1_100))
    col.delete(list(range(101)))  # 999 live rows: fewer than the tuner needs; 9% deleted: no compaction
    assert wait_for(lambda: len(calls) >= 1)
    time.sleep(0.5)  # about 25 looks
    assert len(calls) == 1 and col.stats()["growing_rows"] == 1_100 and col.stats()["maintenance_due"]
    col.add(list(range(2_000, 2_200)), rows(200, seed=4))  # enough live rows now
    assert wait_for(lambda: col.stats()["growing_rows"] == 0)
    assert len(calls) >= 2
    col.close()
