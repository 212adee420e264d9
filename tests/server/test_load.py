"""vecpack.bench.loadtest (behind bench/load.py) at tiny scale: a server process under concurrent load, SIGKILLed
mid-load and restarted."""

from __future__ import annotations

import json
import signal

import numpy as np

import vecpack
from vecpack.bench import loadtest as load


def test_crash_mid_load_keeps_every_acknowledged_write_whole(tmp_path):
    cfg = load.Config(rows=2_000, clients=4, seconds=3.0, queries=100, crash=True)
    report = load.run(cfg, tmp_path / "out", tmp_path, log=lambda s: None)
    ops, batches = report["ops"], report["batches"]
    assert report["killed_exit_code"] == -signal.SIGKILL
    assert ops["search"]["lost_after_kill"] + ops["add"]["lost_after_kill"] == cfg.clients  # each saw it die
    assert ops["search"]["errors"] == 0 and ops["add"]["errors"] == 0  # before the kill: none at all
    assert ops["search"]["count"] > 0 and ops["add"]["count"] > 0
    assert batches["acked_batches"] == ops["add"]["count"] + 1 > 1  # the load's adds and the warm-up batch
    assert batches["missing_acked"] == [] and batches["half"] == [] and batches["mismatched"] == []
    assert batches["unknown"] == []
    assert batches["present_batches"] == batches["acked_batches"] + batches["unacked_present"]
    assert report["search_after_restart"]["hits"] == load.K
    assert report["search_after_restart"]["self_top_hit"] == report["search_after_restart"]["self_query"]
    assert report["verify"] == "ok" and report["records_after"] == report["records_expected"]
    assert report["passed"]
    saved = json.loads((tmp_path / "out" / "crash_2000.json").read_text())
    assert saved["batches"] == batches
    assert "All checks passed: **yes**" in (tmp_path / "out" / "crash_2000.md").read_text()


def test_batch_check_reports_missing_half_altered_and_unknown_batches(tmp_path):
    cfg = load.Config(dim=8)
    with vecpack.connect(tmp_path) as db:
        col = db.create_collection(load.COLLECTION, dim=cfg.dim, codec="float32")
        col.add(["base"], np.ones((1, cfg.dim)))  # no batch field: not a written batch
        for batch in (1, 2, 3, 4):
            ids, meta = load.batch_ids(batch), load.batch_metadata(batch)
            x = load.batch_vectors(batch, cfg.dim, cfg.seed)
            if batch == 2:  # half applied
                ids, x, meta = ids[:2], x[:2], meta[:2]
            if batch == 3:  # one value altered
                x = x.copy()
                x[1, 0] = np.nextafter(x[1, 0], np.float32(np.inf))
            col.add(ids, x, meta)
        found = load.check_batches(col, attempted={1, 2, 3, 5, 6}, acked={1, 2, 3, 5}, cfg=cfg)
    assert found["missing_acked"] == [5] and found["half"] == [2] and found["mismatched"] == [3]
    assert found["unknown"] == [4] and found["present_batches"] == 4 and found["present_records"] == 11
    assert found["unacked_present"] == 0 and found["unacked_absent"] == 1
