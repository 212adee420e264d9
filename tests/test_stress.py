"""vecpack.bench.stress (bench/stress.py; issue 19): writer, reader and server processes on one database folder,
every answer checked.

The short run is part of the default test run; the long one, which adds a reader through ``vecpack serve``, is
marked slow (minutes) and run by ``.ci/run`` explicitly. Durations are budgets, never asserted: the assertions
are no mismatch, no unexpected exception, and enough checked work that a run cannot pass by doing nothing.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from vecpack import Hit, Record


@pytest.fixture(scope="module")
def stress():
    """The checker: ``vecpack.bench.stress`` (its spawned children import it by name)."""
    from vecpack.bench import stress

    return stress


def assert_clean(report, *, searches: int, gets: int) -> None:
    """No mismatch, no unexpected exception; and enough checked work that the run cannot pass by doing nothing:
    every reader checked at least ``searches`` searches (10 hits each on average) and ``gets`` gets, every writer
    deleted records, and compactions (the renumbering under test) were forced. The minimums are far below what
    2 cores do (about 100 searches per reader-second), so that a slow machine does not fail them."""
    assert report.total.mismatches == 0, "\n".join(report.samples)
    assert not report.errors, "\n".join(report.samples)
    readers = [p for p in report.processes if p.name.startswith(("reader", "http-reader"))]
    writers = [p for p in report.processes if p.name.startswith("writer")]
    assert len(readers) == report.config.readers + report.config.http
    assert len(writers) == report.config.writers
    for p in readers:
        assert p.counts.searches >= searches and p.counts.hits >= 10 * searches, p
        assert p.counts.gets >= gets and p.counts.records >= 5 * gets, p
    assert all(p.counts.rows_deleted >= 50 for p in writers), writers
    assert sum(p.counts.forced_compactions for p in writers) >= 2, writers


def test_checker_flags_records_of_another_row(stress, tmp_path):
    """The checks themselves, on made-up answers: each way of naming or serving the wrong record is a mismatch of its
    kind, and the right answers pass."""
    cfg = stress.Config(dim=8)
    a, b, gone = (stress.ID_STRIDE + j for j in range(3))
    log = stress.LogWriter(tmp_path / "writer-0.log")
    log.attempt([(a, 0), (b, 0), (gone, 0)])
    log.acked([(a, 0), (b, 0), (gone, 0)])
    log.attempt([(a, 1)])
    log.acked([(a, 1)])
    log.retire([gone])
    log.deleted([gone])
    log.close()
    view = stress.LogView(tmp_path)
    view.update()
    report = stress.ProcessReport("test")
    checker = stress.Checker(cfg, view, report)
    q = np.random.default_rng(0).uniform(-1, 1, (1, cfg.dim)).astype(np.float32)

    def score(id: int, v: int) -> float:
        return float(q[0] @ stress.vector_of(cfg.seed, cfg.dim, id, v))

    def hit(id: int, v: int, *, scored_as: tuple[int, int] | None = None, meta_of: tuple[int, int] | None = None):
        return Hit(str(id), score(*(scored_as or (id, v))), stress.metadata_of(*(meta_of or (id, v))))

    def search(hits, where=None, exact=False):
        checker.check_search("search", q, [hits], [where], exact=exact)

    search([hit(a, 1)])
    search([hit(b, 0)], where={"writer": 0}, exact=True)
    checker.check_get("get", [a, b], {a: 1, b: 0}, [Record(str(a), stress.vector_of(cfg.seed, cfg.dim, a, 1),
                                                           stress.metadata_of(a, 1)),
                                                    Record(str(b), stress.vector_of(cfg.seed, cfg.dim, b, 0),
                                                           stress.metadata_of(b, 0))])
    assert report.counts.mismatches == 0, report.samples
    assert (report.counts.hits, report.counts.records) == (2, 2)

    search([hit(a, 1, scored_as=(b, 0))], exact=True)  # issue 19: scored on one row, named after another
    search([hit(a, 1, scored_as=(b, 0))])  # the same with int8 scores
    search([hit(a, 1, meta_of=(b, 0))])
    search([hit(b, 0)], where={"writer": 1})
    search([hit(a, 0)])  # version 1 was acknowledged before the search
    search([hit(gone, 0)])  # its delete was acknowledged before the search
    search([hit(b, 7)])  # never written
    search([hit(b, 0), hit(b, 0)])
    search(sorted([hit(a, 1), hit(b, 0)], key=lambda h: h.score))
    checker.check_get("get", [a], {a: 1}, [Record(str(a), stress.vector_of(cfg.seed, cfg.dim, b, 0),
                                                  stress.metadata_of(a, 1))])
    checker.check_get("get", [a], {a: 1}, [Record(str(a), stress.vector_of(cfg.seed, cfg.dim, a, 0),
                                                  stress.metadata_of(a, 0))])
    checker.check_get("get", [a], {a: 1}, [Record(str(b), stress.vector_of(cfg.seed, cfg.dim, b, 0),
                                                  stress.metadata_of(b, 0))])
    assert report.kinds == {"hit score": 2, "hit metadata": 1, "hit filter": 1, "hit stale": 1, "hit deleted": 1,
                            "hit never written": 1, "duplicate hits": 1, "hit order": 1, "get vector": 1,
                            "get version": 1, "get ids": 1}
    view.close()


def test_writers_and_a_reader_on_one_folder(stress, tmp_path):
    """Two writer processes (deletes, forced compactions) and one reader process: 20 s of load, about 30 s in all
    on 2 cores."""
    report = stress.run(tmp_path / "work", stress.Config(seconds=20, writers=2, readers=1), out=tmp_path / "out")
    assert_clean(report, searches=50, gets=10)
    saved = json.loads((tmp_path / "out" / "stress.json").read_text())
    assert saved["passed"] and saved["total"] == dataclasses.asdict(report.total)
    assert "All checks passed: **yes**" in (tmp_path / "out" / "stress.md").read_text()


@pytest.mark.slow
def test_writers_readers_and_a_server_on_one_folder(stress, tmp_path):
    """Slow (about 3.5 minutes on 2 cores): two writers, two embedded readers and a reader through a
    ``vecpack serve`` process, 180 s of load; ``.ci/run`` selects it with ``-m slow``."""
    report = stress.run(tmp_path, stress.Config(seconds=180, writers=2, readers=2, http=True))
    assert_clean(report, searches=300, gets=50)
