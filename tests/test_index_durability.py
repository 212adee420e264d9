"""Crash safety of optimize() with an index: SIGKILL while it seals, extends the index and compacts."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict

import numpy as np
import pytest

import vecpack
from helpers import manifest

DIM = 16
N_FIRST, N_MORE, N_DELETED = 3000, 600, 500
KILLS = 6

# The window killed: one optimize() that seals the new rows, compacts away the deletes and then
# extends the compacted index over the rows it did not cover.
OPTIMIZER = textwrap.dedent(
    """
    import sys, time, vecpack
    db = vecpack.connect(sys.argv[1])
    col = db.get_collection("c")
    col.search([1.0] * col.dim, 1)  # load the search kernels before the window
    print("go", flush=True)
    t0 = time.perf_counter()
    col.optimize(compact=True)
    print("done", time.perf_counter() - t0, flush=True)
    """
)


def vectors(n: int, seed: int) -> np.ndarray:
    centres = np.random.default_rng(99).normal(size=(16, DIM))
    rng = np.random.default_rng(seed)
    return (centres[rng.integers(0, 16, n)] + 0.4 * rng.normal(size=(n, DIM))).astype(np.float32)


def optimize_fully(col) -> None:
    col.optimize()


def make_template(root, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """A closed database: N_FIRST indexed rows, N_MORE growing rows, N_DELETED deletes (indexed and growing)."""
    x = np.concatenate([vectors(N_FIRST, 1), vectors(N_MORE, 2)])
    with vecpack.connect(root) as db:
        col = db.create_collection("c", dim=DIM, metric="l2", codec="int8", index=kind)
        col.add(list(range(N_FIRST)), x[:N_FIRST], metadata=[{"i": i} for i in range(N_FIRST)])
        col.optimize()
        assert col.stats()["indexed_rows"] == N_FIRST
        col.add(list(range(N_FIRST, N_FIRST + N_MORE)), x[N_FIRST:])
        dead = np.sort(np.random.default_rng(3).choice(N_FIRST + N_MORE, N_DELETED, replace=False))
        col.delete(dead.tolist())
    return x, dead


def run_optimizer(folder, delay: float | None) -> list[str]:
    """Run OPTIMIZER on folder; SIGKILL it ``delay`` seconds after it says "go" (None = let it finish)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", OPTIMIZER, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline() == "go\n"
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout))
        reader.start()
        if delay is None:
            assert proc.wait(timeout=60) == 0
        else:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        reader.join()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return [line for line in lines if line.endswith("\n")]  # a line cut short by the kill was never printed


def check_recovered(folder, x: np.ndarray, dead: np.ndarray) -> dict:
    """Reopen after a kill and check everything acknowledged is intact; return the stats found on reopening."""
    live = np.setdiff1d(np.arange(x.shape[0]), dead)
    with vecpack.connect(folder) as db:
        col = db.get_collection("c")
        found = col.stats()
        col.verify()
        assert len(col) == live.size
        # before the optimize, after compaction (surviving indexed rows), after the index update
        assert found["indexed_rows"] in (N_FIRST, int((live < N_FIRST).sum()), live.size), found
        recs = col.get(live.tolist())
        np.testing.assert_array_equal(np.stack([r.vector for r in recs]), x[live])
        assert [r.metadata for r in recs[:5]] == [{"i": int(i)} for i in live[:5]]
        assert not any(str(i) in col for i in dead)
        probes = live[np.linspace(0, live.size - 1, 12).astype(int)]  # indexed and once-growing rows
        knob = {"ef": 100} if col.index_kind == "graph" else {"nprobe": 1000}
        for results in (col.search(x[probes], 1), col.search(x[probes], 1, **knob)):
            assert [hits[0].id for hits in results] == [str(i) for i in probes]
        assert not {h.id for hits in col.search(x[dead[:20]], 5, **knob) for h in hits} & {str(i) for i in dead}

        optimize_fully(col)
        st = col.stats()
        assert (st["rows"], st["indexed_rows"], st["deleted_rows"]) == (live.size, live.size, 0)
        col.verify()
        assert_no_strays(col)
        assert col.search(x[live[-1]], 1)[0].id == str(live[-1])
        col.add(["after"], x[:1])
        assert col.search(x[0], 2, **knob)[0].id in ("0", "after")
    return found


def assert_no_strays(col) -> None:
    meta = asdict(manifest(col))
    expected = {"catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm", "optimize.lock", "codec.npz",
                meta["vectors_file"], meta["codes_file"], meta["index_state"]["dir"]}
    names = {p.name for p in col.path.iterdir()}
    assert names <= expected, f"stray files: {sorted(names - expected)}"
    assert {meta["vectors_file"], meta["codes_file"], meta["index_state"]["dir"]} <= names
    assert not list(col.path.rglob("*.tmp"))


@pytest.mark.parametrize("kind", ["graph", "ivf"])
def test_sigkill_during_optimize_keeps_every_acknowledged_write(tmp_path, kind):
    template = tmp_path / "template"
    x, dead = make_template(template, kind)

    calm = tmp_path / "calm"  # an uninterrupted run: the control, and how long the window lasts
    shutil.copytree(template, calm)
    lines = run_optimizer(calm, None)
    assert lines[-1].startswith("done")
    window = float(lines[-1].split()[1])
    assert check_recovered(calm, x, dead)["indexed_rows"] == N_FIRST + N_MORE - N_DELETED

    rnd = random.Random(kind)
    mid_optimize = 0
    seen = []
    for k in range(KILLS):
        folder = tmp_path / f"kill{k}"
        shutil.copytree(template, folder)
        delay = window * (k + rnd.random()) / KILLS  # one kill in each sixth of the window
        lines = run_optimizer(folder, delay)
        mid_optimize += not any(line.startswith("done") for line in lines)
        found = check_recovered(folder, x, dead)
        seen.append((round(delay, 3), [line.split()[0] for line in lines], found["indexed_rows"]))
        shutil.rmtree(folder)
    assert mid_optimize >= 1, f"no kill landed inside optimize(): {seen}"
