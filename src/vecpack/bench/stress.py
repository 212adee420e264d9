"""Multi-process concurrency checker (issue 19): writers, readers and a server on one database folder.

One collection (int8 codes, graph index, metric "ip", ``seal_rows`` 500 so that sealing, index builds and
compaction happen every few seconds) is created in a fresh folder. Then, each in its own process
(multiprocessing, "spawn", each with its own ``vecpack.connect``), for ``seconds``:

* ``writers`` writers run random add / upsert / delete (by ids, by ``where``, by both) batches with
  ``optimize()`` calls in between (some with ``compact=True``, which renumbers the rows). Writer w owns the
  ids ``(w + 1) * ID_STRIDE + j``: no other process writes them.
* ``readers`` embedded readers search (one query or a batch; with and without ``where``; int8 scores, or exact
  ones through ``rerank=``) and ``get`` records, and check every answer.
* with ``http``, a ``vecpack serve`` process on the same folder and one reader that does the same through
  ``vecpack.Client``.

Why the checks are sound. A record is a function of (id, version): ``vector_of`` and ``metadata_of``, whose
``{"id", "v", "writer", "g"}`` names the record's own id and version. Each writer appends to its own log
(``LogWriter``): *before* a call, what it may change (``W id:v``: a write it attempts; ``D id``: a delete it
intends), *after* the call returned, what is acknowledged (``A id:v``, ``X id``). A writer never writes an
id again once it intended to delete it or a call on it failed, and never reuses an id. A reader tails the
logs (``LogView``), so for every id it knows a lower bound (acknowledged before its call started) and an
upper bound (attempted before its call returned, read after it) of what the database may hold.

Every hit of every search (``Checker.check_search``) must: carry metadata naming the hit's id and owner and
passing the call's filter; be a version that was attempted; score <q, vector_of(id, v)> (float32 from
``rerank``: within 2e-4 + 1e-5 ||q||_1; from int8 codes: within 1.05 ||q||_1 / 255 + 2e-4, because every
stored coordinate lies in [-1, 1] and two anchor records (all -1, all +1) are in the codec's training
sample, so its range is exactly [-1, 1] per dimension, its step 2/255, and a decoded coordinate is off by
at most step/2); not be an id whose delete was acknowledged before the call, nor a version older than one
acknowledged before it; and a query's hits must have distinct ids, best first. A hit scored on one row but
named after another (issue 19) fails the score check: two records' scores differ by ~2.7 (standard
deviation, dim 32) against a tolerance of ~0.07.

Every ``get`` of ids that were stable when it started (write acknowledged, no delete intended) must return
them in order, each with its own metadata and exactly ``vector_of(id, v)`` for a version v between the
acknowledged and the attempted one; ``NotFound`` is allowed only if a delete of one of them was intended by
the time the call returned. A ``get`` of an id whose delete was acknowledged must raise ``NotFound``.
Writers check what their own ids allow: ``delete`` counts, and ``count(where={"writer": w})``.

Every exception is an error except those the contract allows: ``NotFound`` as above, and ``Conflict`` from
a search that met ``SNAPSHOT_TRIES`` compactions (documented: retry).

    python bench/stress.py --seconds 120 --writers 2 --readers 2 --http --out docs/results
    python bench/stress.py --seconds 20                     # prints the counts; exit status 1 on a failure

Children are started with the "spawn" context and import this module (``vecpack.bench.stress``) by name;
``bench/stress.py`` is its command line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

import vecpack
from vecpack.bench.serving import ServerProcess, free_port
from vecpack.bench.timing import machine_info
from vecpack.errors import Conflict, NotFound
from vecpack.query import filters
from vecpack.storage.segments import TRAIN_ROWS

COLLECTION = "stress"
ID_STRIDE = 10_000_000  # writer w owns ids (w + 1) * ID_STRIDE + j; ids below ID_STRIDE are the anchors
ANCHOR_LO, ANCHOR_HI = 0, 1  # all -1 and all +1: they fix the int8 codec's range to [-1, 1] (never rewritten)
GROUPS = 32  # metadata "g" in 0..31: delete(where={"writer": w, "g": g}) removes ~3% of a writer's records
INT8_STEPS = 255
START_TIMEOUT_S = 300.0  # spawn, import, load (or compile: minutes on 2 busy cores) numba's kernels, warm up
STOP_TIMEOUT_S = 120.0  # finish the call in progress (an optimize() may take a while) and report
SAMPLES = 10  # mismatch and error descriptions kept per process
SAMPLES_PER_KIND = 3
WARMUP_STEPS = 100  # writer and reader operations of the warm-up (``warm_up``)


@dataclass(frozen=True, slots=True)
class Config:
    """One run's parameters (the command-line flags)."""

    seconds: float = 60.0
    writers: int = 2
    readers: int = 2
    http: bool = False
    dim: int = 32
    seed: int = 0
    initial_rows: int = 2_000  # per writer, written at setup
    seal_rows: int = 500
    optimize_every: int = 10  # a writer calls optimize() once per this many operations, on average
    compact_share: float = 0.5  # of those calls, the share with compact=True (else: at >= 10% deleted)


# -- the records: functions of (id, version) --------------------------------------------------------------------
def owner(id: int) -> int:
    """The writer that owns ``id``; -1 for the anchors."""
    return id // ID_STRIDE - 1


def group_of(id: int, v: int) -> int:
    return (id + 7 * v) % GROUPS


def metadata_of(id: int, v: int) -> dict[str, Any]:
    return {"id": str(id), "v": v, "writer": owner(id), "g": group_of(id, v)}


@lru_cache(maxsize=1 << 17)
def vector_of(seed: int, dim: int, id: int, v: int) -> np.ndarray:
    """The float32 (dim,) vector of version ``v`` of ``id``: coordinates in [-1, 1] (read-only, cached)."""
    if id in (ANCHOR_LO, ANCHOR_HI):
        x = np.full(dim, -1.0 if id == ANCHOR_LO else 1.0, dtype=np.float32)
    else:
        x = np.random.default_rng([seed, id, v]).uniform(-1.0, 1.0, dim).astype(np.float32)
    x.setflags(write=False)
    return x


def score_tolerance(q: np.ndarray, exact: bool) -> float:
    """Largest allowed |returned - true| inner product for query ``q`` (see the module docstring)."""
    l1 = float(np.abs(q).sum())
    return 2e-4 + (1e-5 * l1 if exact else 1.05 * l1 / INT8_STEPS)


# -- the write log -------------------------------------------------------------------------------------------------
class LogWriter:
    """One writer's append-only log: one ``os.write`` per line, visible to readers at once (no fsync: readers
    are on this machine, and a crash ends the run anyway)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _line(self, tag: str, items: Iterable[str]) -> None:
        items = list(items)
        if items:
            os.write(self.fd, f"{tag} {' '.join(items)}\n".encode())

    def attempt(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Before add / upsert: these versions may be stored from now on."""
        self._line("W", (f"{i}:{v}" for i, v in pairs))

    def acked(self, pairs: Sequence[tuple[int, int]]) -> None:
        """After add / upsert returned: these versions are stored."""
        self._line("A", (f"{i}:{v}" for i, v in pairs))

    def retire(self, ids: Iterable[int]) -> None:
        """Before a delete, or after a failed call: these ids may be gone, or in any attempted state, from now on."""
        self._line("D", map(str, ids))

    def deleted(self, ids: Iterable[int]) -> None:
        """After delete returned: these ids are gone for good."""
        self._line("X", map(str, ids))

    def close(self) -> None:
        os.close(self.fd)


class RandomSet:
    """A set of ints with O(1) add, discard and uniform sampling."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.where: dict[int, int] = {}

    def add(self, x: int) -> None:
        if x not in self.where:
            self.where[x] = len(self.items)
            self.items.append(x)

    def discard(self, x: int) -> None:
        pos = self.where.pop(x, None)
        if pos is not None:
            last = self.items.pop()
            if pos < len(self.items):
                self.items[pos] = last
                self.where[last] = pos

    def sample(self, rng: random.Random, n: int) -> list[int]:
        return rng.sample(self.items, min(n, len(self.items)))

    def __len__(self) -> int:
        return len(self.items)


class LogView:
    """A reader's view of every ``*.log`` in ``folder``; ``update()`` reads what was appended since.

    attempted: id -> highest version attempted (upper bound of what may be stored);
    acked: id -> version of the last acknowledged write, for ids not acknowledged deleted (lower bound);
    retired: ids that may vanish or change at any moment (delete intended, or a call on them failed);
    deleted: ids whose delete was acknowledged (gone for good: ids are never reused);
    stable: acked ids that are not retired (what ``get`` may demand).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[Path, tuple[int, bytes]] = {}  # path -> (fd, bytes after the last complete line)
        self.attempted: dict[int, int] = {}
        self.acked: dict[int, int] = {}
        self.retired: set[int] = set()
        self.deleted: set[int] = set()
        self.deleted_list: list[int] = []
        self.stable = RandomSet()

    def update(self) -> None:
        for path in sorted(self.folder.glob("*.log")):
            if path not in self.files:
                self.files[path] = (os.open(path, os.O_RDONLY), b"")
            fd, rest = self.files[path]
            data = rest
            while chunk := os.read(fd, 1 << 20):
                data += chunk
            end = data.rfind(b"\n") + 1  # a line still being written waits for its newline
            self.files[path] = (fd, data[end:])
            for line in data[:end].decode().splitlines():
                self._apply(line)

    def _apply(self, line: str) -> None:
        tag, *items = line.split()
        if tag in ("W", "A"):
            for item in items:
                i, v = map(int, item.split(":"))
                if tag == "W":
                    self.attempted[i] = max(v, self.attempted.get(i, -1))
                else:
                    self.acked[i] = v
                    if i not in self.retired:
                        self.stable.add(i)
        else:
            for i in map(int, items):
                self.retired.add(i)
                self.stable.discard(i)
                if tag == "X":
                    self.acked.pop(i, None)
                    self.deleted.add(i)
                    self.deleted_list.append(i)

    def close(self) -> None:
        for fd, _ in self.files.values():
            os.close(fd)


# -- what each process reports -------------------------------------------------------------------------------------
@dataclass(slots=True)
class Counts:
    """Operations and checks of one process (or, summed, of the run)."""

    searches: int = 0  # search calls that returned
    queries: int = 0
    hits: int = 0  # hits checked
    exact_hits: int = 0  # of which scored with float32 (rerank)
    gets: int = 0  # get calls of stable ids that returned
    records: int = 0  # records checked
    allowed_not_found: int = 0  # gets that raised NotFound while a delete of one of their ids was intended
    deleted_gets: int = 0  # gets of a deleted id, which raised NotFound as they must
    retried: int = 0  # searches that raised Conflict after SNAPSHOT_TRIES compactions (documented: retry)
    writes: int = 0  # acknowledged add / upsert / delete calls
    rows_written: int = 0
    rows_deleted: int = 0
    optimizes: int = 0
    forced_compactions: int = 0  # optimize(compact=True) calls, of the optimizes
    count_checks: int = 0
    mismatches: int = 0
    wrong_searches: int = 0  # search calls with at least one mismatch (the audit's measure)
    wrong_gets: int = 0  # get calls with at least one mismatch

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(slots=True)
class ProcessReport:
    """One child's counts, unexpected exceptions by type, and the first mismatches and errors described."""

    name: str
    counts: Counts = field(default_factory=Counts)
    kinds: dict[str, int] = field(default_factory=dict)  # mismatches by kind (the check that failed)
    errors: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    ready_s: float = 0.0  # from start to ready (imports, numba's kernels, warm-up)
    # the largest |score error| / tolerance among hits that passed, float32 (rerank) and int8 scores: how close
    # the tolerances came to a false alarm
    worst_exact: float = 0.0
    worst_int8: float = 0.0

    def mismatch(self, kind: str, text: str) -> None:
        self.counts.mismatches += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if len(self.samples) < SAMPLES and self.kinds[kind] <= SAMPLES_PER_KIND:  # a few of each kind
            self.samples.append(f"{self.name}: MISMATCH {text}")

    def error(self, exc: BaseException, during: str) -> None:
        name = error_name(exc)
        self.errors[name] = self.errors.get(name, 0) + 1
        if len(self.samples) < SAMPLES:
            self.samples.append(f"{self.name}: {during}: {name}: {str(exc)[:300]}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProcessReport:
        return cls(**{**d, "counts": Counts(**d["counts"])})


def error_name(exc: BaseException) -> str:
    """The exception's type; for a server-side crash seen through the client, the server's exception too."""
    name = type(exc).__name__
    found = re.match(r"HTTP (\d+) (\w*): (\w+):", str(exc))  # vecpack.client's message for an unmapped error
    return f"{name} (HTTP {found[1]} {found[2]}: {found[3]})" if found else name


# -- writers -------------------------------------------------------------------------------------------------------
class Writer:
    """Random batches on the ids of writer ``w``, each logged before (may change) and after (acknowledged)."""

    OPS = ("add", "upsert", "delete_ids", "delete_where", "delete_ids_where", "optimize", "count")

    def __init__(self, cfg: Config, w: int, col: Any, log: LogWriter, report: ProcessReport) -> None:
        self.cfg, self.w, self.col, self.log, self.report = cfg, w, col, log, report
        self.rng = random.Random(f"{cfg.seed}-writer-{w}")
        base = (w + 1) * ID_STRIDE
        self.live = {base + j: 0 for j in range(cfg.initial_rows)}  # id -> version: exact, as only we write them
        self.doubtful: set[int] = set()  # ids a failed call touched: present or not, never written again
        self.next_id = base + cfg.initial_rows
        o = 1 / cfg.optimize_every
        self.weights = [0.3 - o / 2, 0.25, 0.2 - o / 2, 0.1, 0.05, o, 0.1]

    def step(self) -> None:
        op = self.rng.choices(self.OPS, self.weights)[0]
        if op.startswith("delete") and len(self.live) < self.cfg.initial_rows // 2:
            op = "add"  # keep the collection near its initial size: deletes and adds balance on average
        elif op in ("add", "upsert") and len(self.live) > 2 * self.cfg.initial_rows:
            op = "delete_ids"
        getattr(self, op)()

    def _records(self, pairs: list[tuple[int, int]]) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        x = np.stack([vector_of(self.cfg.seed, self.cfg.dim, i, v) for i, v in pairs])
        return [str(i) for i, _ in pairs], x, [metadata_of(i, v) for i, v in pairs]

    def _failed(self, exc: BaseException, op: str, touched: Iterable[int]) -> None:
        """A call raised: the ids it touched are in an unknown state; retire them."""
        self.report.error(exc, op)
        touched = list(touched)
        self.log.retire(touched)
        for i in touched:
            self.live.pop(i, None)
            self.doubtful.add(i)

    def _write(self, op: str, pairs: list[tuple[int, int]]) -> None:
        self.log.attempt(pairs)
        try:
            getattr(self.col, op)(*self._records(pairs))
        except Exception as exc:
            self._failed(exc, op, (i for i, _ in pairs))
            return
        self.log.acked(pairs)
        self.live.update(pairs)
        self.report.counts.writes += 1
        self.report.counts.rows_written += len(pairs)

    def add(self) -> None:
        n = self.rng.randint(1, 20)
        self._write("add", [(self.next_id + j, 0) for j in range(n)])
        self.next_id += n

    def upsert(self) -> None:
        old = self.rng.sample(list(self.live), min(self.rng.randint(1, 20), len(self.live)))
        new = [(self.next_id + j, 0) for j in range(self.rng.randint(0, 3))]
        self.next_id += len(new)
        self._write("upsert", [(i, self.live[i] + 1) for i in old] + new)

    def _delete(self, op: str, gone: list[int], lo: int, hi: int, **call: Any) -> None:
        """Delete through ``col.delete(**call)``, which must remove exactly ``gone`` (and may remove doubtful
        ids: it must return a count in lo..hi)."""
        self.log.retire(gone)
        try:
            count = self.col.delete(**call)
        except Exception as exc:
            self._failed(exc, op, gone)
            return
        if not lo <= count <= hi:
            self.report.mismatch("delete count", f"{op}({call}) deleted {count} records, expected {lo}..{hi}")
        self.log.deleted(gone)
        for i in gone:
            del self.live[i]
        self.report.counts.writes += 1
        self.report.counts.rows_deleted += len(gone)

    def delete_ids(self) -> None:
        gone = self.rng.sample(list(self.live), min(self.rng.randint(1, 20), len(self.live)))
        if gone:
            self._delete("delete_ids", gone, len(gone), len(gone), ids=[str(i) for i in gone])

    def delete_where(self) -> None:
        g = self.rng.randrange(GROUPS)
        gone = [i for i, v in self.live.items() if group_of(i, v) == g]
        self._delete("delete_where", gone, len(gone), len(gone) + len(self.doubtful), where={"writer": self.w, "g": g})

    def delete_ids_where(self) -> None:
        ids = self.rng.sample(list(self.live), min(self.rng.randint(1, 20), len(self.live)))
        gone = [i for i in ids if group_of(i, self.live[i]) < GROUPS // 2]
        if ids:
            self._delete("delete_ids_where", gone, len(gone), len(gone), ids=[str(i) for i in ids],
                         where={"g": {"$lt": GROUPS // 2}})

    def optimize(self) -> None:
        compact = True if self.rng.random() < self.cfg.compact_share else None
        try:
            self.col.optimize(compact=compact)
            self.report.counts.optimizes += 1
            self.report.counts.forced_compactions += bool(compact)
        except Exception as exc:
            self.report.error(exc, f"optimize(compact={compact})")

    def count(self) -> None:
        """Only this writer writes its ids, so their count is known (up to the doubtful ones)."""
        try:
            n = self.col.count(where={"writer": self.w})
        except Exception as exc:
            self.report.error(exc, "count")
            return
        self.report.counts.count_checks += 1
        if not len(self.live) <= n <= len(self.live) + len(self.doubtful):
            self.report.mismatch("writer count", f"count(where={{'writer': {self.w}}}) = {n}, expected "
                                 f"{len(self.live)}..{len(self.live) + len(self.doubtful)}")


# -- readers -------------------------------------------------------------------------------------------------------
WHERE_CHOICES: tuple[Callable[[random.Random, int], dict[str, Any] | None], ...] = (
    lambda rng, writers: None,
    lambda rng, writers: None,
    lambda rng, writers: {"writer": rng.randrange(writers)},
    lambda rng, writers: {"v": {"$gte": 1}},
    lambda rng, writers: {"g": {"$lt": rng.randint(1, GROUPS)}},
)


class Checker:
    """The checks of one reader: every hit and every record against the log (see the module docstring)."""

    def __init__(self, cfg: Config, view: LogView, report: ProcessReport) -> None:
        self.cfg, self.view, self.report = cfg, view, report

    def vector(self, id: int, v: int) -> np.ndarray:
        return vector_of(self.cfg.seed, self.cfg.dim, id, v)

    def check_search(self, label: str, q: np.ndarray, results: list[list[Any]], wheres: list[Any],
                     exact: bool) -> None:
        """Hits of the queries ``q`` (m, dim); call right after the search, before ``view.update()``, so that the
        view holds what was acknowledged before the search started."""
        unknown: list[tuple[str, Any]] = []  # (label, hit) of versions not attempted as far as the view knows
        for j, hits in enumerate(results):
            tol = score_tolerance(q[j], exact)
            node = filters.parse(wheres[j]) if wheres[j] is not None else None
            where = f" where={wheres[j]}" if wheres[j] is not None else ""
            qlabel = f"{label} query {j}{where}"
            ids = [h.id for h in hits]
            if len(set(ids)) != len(ids):
                self.report.mismatch("duplicate hits", f"{qlabel}: duplicate ids among the hits {ids}")
            scores = [h.score for h in hits]
            if any(a < b for a, b in pairwise(scores)):
                self.report.mismatch("hit order", f"{qlabel}: hits not best first: {scores}")
            for hit in hits:
                self.report.counts.hits += 1
                self.report.counts.exact_hits += exact
                problem = self.hit_problem(q[j], hit, node, tol, exact)
                if problem is not None and problem[0] == "unknown":
                    unknown.append((qlabel, hit))
                elif problem is not None:
                    self.report.mismatch(problem[0], f"{qlabel}: {problem[1]}")
        if unknown:  # a write the search saw was logged before its call began: the log has it by now
            self.view.update()
            for qlabel, hit in unknown:
                if hit.metadata["v"] > self.view.attempted.get(int(hit.id), -1):
                    self.report.mismatch("hit never written", f"{qlabel}: hit {hit}: a version never written")

    def hit_problem(self, q: np.ndarray, hit: Any, node: filters.Filter | None, tol: float,
                    exact: bool) -> tuple[str, str] | None:
        """(kind, description) of what is wrong with one hit; kind "unknown" if its version is not in the view
        yet; None if nothing is."""
        meta = hit.metadata
        if not isinstance(meta, dict) or meta.get("id") != hit.id:
            return "hit metadata", f"hit {hit.id!r} (score {hit.score:.4f}) carries another record's metadata: {meta}"
        id, v = int(hit.id), meta["v"]
        if meta.get("writer") != owner(id) or meta.get("g") != group_of(id, v):
            return "hit metadata", f"hit {hit} carries metadata that was never written"
        if node is not None and not filters.matches(node, meta):
            return "hit filter", f"hit {hit} does not pass the filter"
        true = float(np.dot(q.astype(np.float64), self.vector(id, v).astype(np.float64)))
        if not abs(hit.score - true) <= tol:
            return "hit score", (f"hit id={hit.id} v={v} score={hit.score:.4f}, but that record's score is "
                                 f"{true:.4f} (tolerance {tol:.4f}): scored on another row")
        ratio = abs(hit.score - true) / tol
        if exact:
            self.report.worst_exact = max(self.report.worst_exact, ratio)
        else:
            self.report.worst_int8 = max(self.report.worst_int8, ratio)
        if id in self.view.deleted:
            return "hit deleted", f"hit {hit} was deleted (acknowledged) before the search started"
        if v < self.view.acked.get(id, -1):
            return "hit stale", f"hit {hit} is older than version {self.view.acked[id]}, acknowledged before"
        if v > self.view.attempted.get(id, -1):
            return "unknown", ""
        return None

    def check_get(self, label: str, ids: list[int], lower: dict[int, int], records: list[Any]) -> None:
        """Records of ``get(ids)`` of ids stable when it started, ``lower``: their acknowledged versions then."""
        if [r.id for r in records] != [str(i) for i in ids]:
            self.report.mismatch("get ids", f"{label}: asked for {ids}, got {[r.id for r in records]}")
            return
        for id, record in zip(ids, records, strict=True):
            self.report.counts.records += 1
            meta = record.metadata
            if not isinstance(meta, dict) or meta.get("id") != record.id:
                self.report.mismatch("get metadata", f"{label}: record {record.id} carries another record's "
                                     f"metadata: {meta}")
                continue
            v = meta["v"]
            if v > self.view.attempted.get(id, -1):
                self.view.update()
            if v > self.view.attempted.get(id, -1) or v < lower[id]:
                self.report.mismatch("get version", f"{label}: record {record.id} has version {v}, expected "
                                     f"{lower[id]}..{self.view.attempted.get(id)}")
                continue
            want = self.vector(id, v)
            got = np.asarray(record.vector, dtype=np.float32)
            if got.shape != want.shape or not np.array_equal(got, want):
                diff = float(np.abs(got - want).max()) if got.shape == want.shape else got.shape
                self.report.mismatch("get vector", f"{label}: record {record.id} v{v} has another record's vector "
                                     f"(max |diff| {diff})")


class Reader:
    """Searches and gets in a loop, each checked by ``Checker``; ``col`` is a Collection or a RemoteCollection."""

    def __init__(self, cfg: Config, name: str, col: Any, view: LogView, report: ProcessReport) -> None:
        self.cfg, self.col, self.view, self.report = cfg, col, view, report
        self.checker = Checker(cfg, view, report)
        self.rng = random.Random(f"{cfg.seed}-{name}")
        self.np_rng = np.random.default_rng([cfg.seed, sum(map(ord, name))])

    def step(self) -> None:
        self.view.update()
        r = self.rng.random()
        if r < 0.6:
            self.search()
        elif r < 0.95 or not self.view.deleted_list:
            self.get()
        else:
            self.get_deleted()

    def queries(self, m: int) -> np.ndarray:
        """Mostly near stable records (their hits are the interesting ones), some uniform."""
        q = self.np_rng.uniform(-1.0, 1.0, (m, self.cfg.dim)).astype(np.float32)
        for j, id in enumerate(self.view.stable.sample(self.rng, m)):
            if self.rng.random() < 0.8:
                x = self.checker.vector(id, self.view.acked[id])
                q[j] = x + self.np_rng.normal(0.0, 0.1, self.cfg.dim).astype(np.float32)
        return q

    def search(self) -> None:
        single = self.rng.random() < 0.5
        m = 1 if single else self.rng.randint(2, 8)
        q = self.queries(m)
        k = self.rng.choice((1, 5, 10, 30))
        rerank = self.rng.choice((None, 0, 2 * k))  # None: the codec's default (0 for int8)
        if single or self.rng.random() < 0.5:
            where: Any = self.rng.choice(WHERE_CHOICES)(self.rng, self.cfg.writers)
            wheres = [where] * m
        else:  # one filter per query
            wheres = [self.rng.choice(WHERE_CHOICES)(self.rng, self.cfg.writers) for _ in range(m)]
            where = wheres
        label = f"search(k={k}, rerank={rerank}, m={m if not single else 'single'})"
        try:
            found = self.col.search(q[0] if single else q, k, where=where, rerank=rerank)
        except Conflict as exc:  # compacted SNAPSHOT_TRIES times during the call: documented, retry
            if "compacted" not in str(exc):
                self.report.error(exc, label)
            self.report.counts.retried += 1
            return
        except Exception as exc:
            self.report.error(exc, label)
            return
        self.report.counts.searches += 1
        self.report.counts.queries += m
        before = self.report.counts.mismatches
        self.checker.check_search(label, q, [found] if single else found, wheres, exact=bool(rerank))
        self.report.counts.wrong_searches += self.report.counts.mismatches > before

    def get(self) -> None:
        ids = self.view.stable.sample(self.rng, self.rng.randint(1, 20))
        if not ids:
            return
        lower = {i: self.view.acked[i] for i in ids}  # acknowledged before the call: it must see them
        label = f"get({len(ids)} ids)"
        try:
            records = self.col.get([str(i) for i in ids])
        except NotFound as exc:
            self.view.update()  # a delete that ran before the get read the catalog was logged before its call
            if any(i in self.view.retired for i in ids):
                self.report.counts.allowed_not_found += 1
            else:
                self.report.mismatch("get NotFound", f"{label}: NotFound for ids no one was deleting: {exc}")
                self.report.counts.wrong_gets += 1
            return
        except Exception as exc:
            self.report.error(exc, label)
            return
        self.report.counts.gets += 1
        before = self.report.counts.mismatches
        self.checker.check_get(label, ids, lower, records)
        self.report.counts.wrong_gets += self.report.counts.mismatches > before

    def get_deleted(self) -> None:
        id = self.rng.choice(self.view.deleted_list)
        try:
            records = self.col.get([str(id)])
        except NotFound:
            self.report.counts.deleted_gets += 1
            return
        except Exception as exc:
            self.report.error(exc, "get(deleted id)")
            return
        self.report.counts.wrong_gets += 1
        self.report.mismatch("get deleted", f"get([{id}]) returned {records[0].id} {records[0].metadata} after "
                             "its delete was acknowledged")


# -- child processes -----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Channels:
    """What the parent and its children share: ready / report messages, and the start and stop signals."""

    ready: Any  # Queue of names
    results: Any  # Queue of ProcessReport dicts
    go: Any  # Event
    stop: Any  # Event


def _one_thread() -> None:
    """Up to 7 processes share 2 cores: parallel kernels and BLAS would only oversubscribe them."""
    import numba

    numba.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass


def _child(name: str, ch: Channels, body: Callable[[ProcessReport, Callable[[], None]], None]) -> None:
    """Run ``body(report, ready)`` and always send the report; an exception escaping ``body`` is an error too.
    ``ready()`` tells the parent the child is warmed up; a child that fails before says so on its way out."""
    report = ProcessReport(name)
    t0 = time.perf_counter()
    told = False

    def ready() -> None:
        nonlocal told
        report.ready_s = time.perf_counter() - t0
        ch.ready.put(name)
        told = True

    try:
        _one_thread()
        body(report, ready)
    except BaseException as exc:
        report.error(exc, "process")
        report.samples.append(traceback.format_exc()[-2000:])
    finally:
        if not told:
            ch.ready.put(name)
        ch.results.put(asdict(report))


def writer_main(cfg: Config, w: int, db_path: str, log_dir: str, ch: Channels) -> None:
    """Child: writer ``w`` until ``stop``."""

    def body(report: ProcessReport, ready: Callable[[], None]) -> None:
        with vecpack.connect(db_path) as db:
            writer = Writer(cfg, w, db.get_collection(COLLECTION), LogWriter(Path(log_dir) / f"writer-{w}.log"),
                            report)
            ready()
            ch.go.wait()
            try:
                while not ch.stop.is_set():
                    writer.step()
            finally:
                writer.log.close()

    _child(f"writer-{w}", ch, body)


def reader_main(cfg: Config, name: str, target: str, log_dir: str, ch: Channels) -> None:
    """Child: a reader until ``stop``; ``target`` is the database folder, or the URL of a server on it."""

    def body(report: ProcessReport, ready: Callable[[], None]) -> None:
        remote = target.startswith("http")
        with (vecpack.Client(target, timeout=STOP_TIMEOUT_S) if remote else vecpack.connect(target)) as db:
            view = LogView(Path(log_dir))
            reader = Reader(cfg, name, db.get_collection(COLLECTION), view, report)
            try:
                for _ in range(10):  # warm-up: the first calls load numba's kernels
                    reader.step()
                ready()
                ch.go.wait()
                while not ch.stop.is_set():
                    reader.step()
            finally:
                view.close()

    _child(name, ch, body)


# -- the server ------------------------------------------------------------------------------------------------------
# -- the run -------------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class StressReport:
    """A run: its parameters, where it ran, how long each phase took, what was checked and what failed."""

    config: Config
    machine: dict[str, Any]
    setup_s: float  # create the collection (initial rows, index), and the warm-up
    start_s: float  # until every child was ready (imports, numba's kernels, warm-up)
    load_s: float  # from go to stop: the checked load
    total: Counts
    mismatch_kinds: dict[str, int]  # mismatches by the check that failed, over every process
    errors: dict[str, int]  # unexpected exceptions by type, over every process
    processes: list[ProcessReport]
    samples: list[str]  # the first mismatches and errors, described
    code: str  # which vecpack ran (``code_under_test``)

    @property
    def passed(self) -> bool:
        return self.total.mismatches == 0 and not self.errors


def create(db: vecpack.Database, name: str, cfg: Config, log_dir: Path) -> vecpack.Collection:
    """The collection as the run uses it, with the anchors and each writer's initial records (logged as
    acknowledged in ``log_dir/setup.log``), sealed and indexed. Fields "writer" and "g" are indexed; "v" is not,
    so filters take both paths (columns in memory, records read per call)."""
    pairs = [(ANCHOR_LO, 0), (ANCHOR_HI, 0)]
    pairs += [((w + 1) * ID_STRIDE + j, 0) for w in range(cfg.writers) for j in range(cfg.initial_rows)]
    # the codec is trained once, at the first seal (this add), on up to TRAIN_ROWS live rows: all of these, so
    # the anchors fix its range to [-1, 1] (score_tolerance relies on it)
    assert cfg.seal_rows <= len(pairs) <= TRAIN_ROWS, "the anchors must be in the codec's training sample"
    col = db.create_collection(name, dim=cfg.dim, metric="ip", codec="int8", seal_rows=cfg.seal_rows,
                               index="graph")
    col.create_field_index("writer")
    col.create_field_index("g")
    log = LogWriter(log_dir / "setup.log")
    log.attempt(pairs)
    col.add([str(i) for i, _ in pairs], np.stack([vector_of(cfg.seed, cfg.dim, i, v) for i, v in pairs]),
            [metadata_of(i, v) for i, v in pairs])
    log.acked(pairs)
    log.close()
    col.optimize()
    return col


def warm_up(db: vecpack.Database, cfg: Config, log_dir: Path) -> ProcessReport:
    """A writer and a reader take turns on a throwaway collection, in this process. Numba compiles each kernel
    once, here (cached on disk for the children), rather than in every child at once; and with nothing running
    concurrently every check must pass: a test of the checker itself."""
    log_dir.mkdir(parents=True, exist_ok=True)
    col = create(db, "warmup", cfg, log_dir)
    report = ProcessReport("warm-up (one process)")
    writer = Writer(cfg, 0, col, LogWriter(log_dir / "writer-0.log"), report)
    reader = Reader(cfg, "warm-up", col, LogView(log_dir), report)
    try:
        for _ in range(WARMUP_STEPS):
            writer.step()
            reader.step()
    finally:
        writer.log.close()
        reader.view.close()
    db.drop_collection("warmup")
    return report


def code_under_test() -> str:
    """Which vecpack runs: its folder and, in a git checkout, the commit and whether it has uncommitted changes."""
    pkg = Path(vecpack.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(pkg), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30)
        diff = subprocess.run(["git", "-C", str(pkg), "diff", "--stat", "HEAD", "--", "."], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return str(pkg)
    if head.returncode != 0:
        return f"{pkg} (not a git checkout)"
    changes = diff.stdout.strip().splitlines()[-1].strip() if diff.stdout.strip() else "no uncommitted changes"
    return f"{pkg} at {head.stdout.strip()} ({changes})"


def run(path: str | os.PathLike[str], cfg: Config = Config(), *, out: Path | None = None,
        log: Callable[[str], None] = lambda s: None) -> StressReport:
    """Run the stress test in the (new or empty) folder ``path``; write ``stress.{json,md}`` to ``out`` if given.

    Every child is stopped (terminated if it does not stop in STOP_TIMEOUT_S) before this returns or raises.
    """
    folder = Path(path)
    db_path, log_dir = folder / "db", folder / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    code = code_under_test()
    t0 = time.perf_counter()
    with vecpack.connect(db_path) as db:
        create(db, COLLECTION, cfg, log_dir)
        warm = warm_up(db, cfg, folder / "warm-up-logs")
    setup_s = time.perf_counter() - t0
    log(f"setup and warm-up: {setup_s:.1f} s")
    ctx = mp.get_context("spawn")
    ch = Channels(ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event())
    procs: list[Any] = []
    server: ServerProcess | None = None
    reports = [warm]
    try:
        for w in range(cfg.writers):
            procs.append(ctx.Process(target=writer_main, args=(cfg, w, str(db_path), str(log_dir), ch),
                                     name=f"writer-{w}"))
        for r in range(cfg.readers):
            procs.append(ctx.Process(target=reader_main, args=(cfg, f"reader-{r}", str(db_path), str(log_dir), ch),
                                     name=f"reader-{r}"))
        if cfg.http:
            # one numba thread: the server's requests run concurrently on the 2 cores already
            server = ServerProcess(db_path, free_port(), folder / "server.log", auth=False,
                                   env=dict(os.environ, NUMBA_NUM_THREADS="1"))
            server.start(START_TIMEOUT_S)
            procs.append(ctx.Process(target=reader_main, args=(cfg, "http-reader", server.url, str(log_dir), ch),
                                     name="http-reader"))
        for p in procs:
            p.start()
        t1 = time.perf_counter()
        wait_ready(procs, ch)
        start_s = time.perf_counter() - t1
        log(f"children ready in {start_s:.1f} s; load for {cfg.seconds:g} s")
        ch.go.set()
        t2 = time.perf_counter()
        while time.perf_counter() - t2 < cfg.seconds and all(p.is_alive() for p in procs):
            time.sleep(min(0.5, max(0.0, cfg.seconds - (time.perf_counter() - t2))))
        ch.stop.set()
        load_s = time.perf_counter() - t2
        reports += collect(procs, ch)
    finally:
        ch.go.set()
        ch.stop.set()
        for p in procs:
            if p.pid is not None:
                p.join(STOP_TIMEOUT_S if p.is_alive() else None)
            if p.is_alive():
                p.terminate()
                p.join()
        if server is not None:
            server.stop(STOP_TIMEOUT_S)
    total, kinds, errors, samples = Counts(), Counter(), Counter(), []
    for rep in reports:
        total.add(rep.counts)
        kinds.update(rep.kinds)
        errors.update(rep.errors)
        samples += rep.samples
    for p in procs:
        if p.name not in {rep.name for rep in reports}:
            errors[f"process died (exit code {p.exitcode})"] += 1
            samples.append(f"{p.name}: exited with {p.exitcode} without reporting")
    report = StressReport(cfg, machine_info(), setup_s, start_s, load_s, total, dict(kinds), dict(errors), reports,
                          samples, code)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "stress.json").write_text(json.dumps(asdict(report) | {"passed": report.passed}, indent=1) + "\n")
        (out / "stress.md").write_text(markdown(report))
    return report


def wait_ready(procs: list[Any], ch: Channels) -> None:
    """Until every child said it is ready (one that fails during setup says so too, then reports), or one died
    without a word (the run goes on without it and counts it as an error)."""
    waiting = len(procs)
    deadline = time.monotonic() + START_TIMEOUT_S
    while waiting:
        try:
            ch.ready.get(timeout=1.0)
            waiting -= 1
        except queue.Empty:
            if any(not p.is_alive() for p in procs):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{waiting} children not ready after {START_TIMEOUT_S} s") from None


def collect(procs: list[Any], ch: Channels) -> list[ProcessReport]:
    """Every child's report, waiting up to STOP_TIMEOUT_S after the last one arrived (before joining: a child
    exits only once its report is read off the queue)."""
    reports: list[ProcessReport] = []
    while len(reports) < len(procs):
        try:
            reports.append(ProcessReport.from_dict(ch.results.get(timeout=STOP_TIMEOUT_S)))
        except queue.Empty:
            break
    return sorted(reports, key=lambda r: r.name)


# -- the report ----------------------------------------------------------------------------------------------------
def markdown(r: StressReport) -> str:
    cfg, t, m = r.config, r.total, r.machine
    worst_exact = max(p.worst_exact for p in r.processes)
    worst_int8 = max(p.worst_int8 for p in r.processes)
    flags = f"--seconds {cfg.seconds:g} --writers {cfg.writers} --readers {cfg.readers}{' --http' if cfg.http else ''}"
    lines = [
        "# Stress test: writers, readers and a server on one database folder (issue 19)",
        "",
        f"`python bench/stress.py {flags} --seed {cfg.seed}` on {m['cpu']} ({m['cores']} cores, shared by all "
        f"{cfg.writers + cfg.readers + 2 * cfg.http} processes), {m['date']}; vecpack: {r.code}.",
        "",
        f"Collection: {cfg.dim}-d, metric ip, int8 codes, graph index, seal_rows {cfg.seal_rows}, "
        f"{cfg.writers} x {cfg.initial_rows:,} initial records. {cfg.writers} writer processes (add / upsert / "
        f"delete by ids and by `where`; `optimize()` about once in {cfg.optimize_every} operations, "
        f"{cfg.compact_share:.0%} of them with `compact=True`), {cfg.readers} embedded reader process(es)"
        + (", and one reader through `vecpack serve` (a server process on the same folder)" if cfg.http else "")
        + ". Every hit and every record read is checked against the writers' logs (`bench/stress.py`'s docstring "
        "says how and why the checks are sound).",
        "",
        f"Setup {r.setup_s:.1f} s, children ready after {r.start_s:.1f} s, checked load **{r.load_s:.1f} s**. "
        "The setup includes, on purpose, a warm-up in which numba compiles the kernels the load runs (the children "
        "load them from numba's cache); the load lasts a set time, and its counts are not a speed measurement.",
        "",
        "| count | value |",
        "|---|---:|",
        *[f"| {f.name.replace('_', ' ')} | {getattr(t, f.name):,} |" for f in fields(t)],
        "",
        "| process | searches | hits | gets | records | writes | optimizes | mismatches | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {p.name} | {p.counts.searches:,} | {p.counts.hits:,} | {p.counts.gets:,} | {p.counts.records:,} | "
          f"{p.counts.writes:,} | {p.counts.optimizes:,} | {p.counts.mismatches:,} | {sum(p.errors.values()):,} |"
          for p in r.processes],
        "",
        f"Mismatches by check: {', '.join(f'{k}: {v:,}' for k, v in sorted(r.mismatch_kinds.items())) or 'none'}. "
        f"Largest score error of a hit that passed, as a share of its tolerance: {worst_exact:.2f} (float32 "
        f"scores, `rerank`), {worst_int8:.2f} (int8 scores; the tolerance is the codec's worst case)"
        + (" (with mismatches, wrong-row hits that landed within the tolerance by chance count too)."
           if t.mismatches else "."),
        "",
        f"Unexpected exceptions: {', '.join(f'{k}: {v:,}' for k, v in sorted(r.errors.items())) or 'none'}.",
        "",
        f"All checks passed: **{'yes' if r.passed else 'NO'}** ({t.mismatches:,} mismatches, "
        f"{sum(r.errors.values()):,} unexpected exceptions).",
    ]
    if r.samples:
        lines += ["", "First mismatches and errors, per process:", "",
                  *[f"- `{' '.join(s.split())[:600]}`" for s in r.samples]]
    return "\n".join(lines) + "\n"


def main() -> None:
    d = Config()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=d.seconds, help="duration of the checked load")
    ap.add_argument("--writers", type=int, default=d.writers, help="writer processes")
    ap.add_argument("--readers", type=int, default=d.readers, help="embedded reader processes")
    ap.add_argument("--http", action="store_true", help="also a server process and one reader through it")
    ap.add_argument("--dim", type=int, default=d.dim)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--initial-rows", type=int, default=d.initial_rows, help="records per writer at setup")
    ap.add_argument("--seal-rows", type=int, default=d.seal_rows)
    ap.add_argument("--optimize-every", type=int, default=d.optimize_every, help="writer operations per optimize()")
    ap.add_argument("--compact-share", type=float, default=d.compact_share, help="optimize() calls with compact=True")
    ap.add_argument("--out", type=Path, default=None, help="folder for stress.json and stress.md")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    cfg = Config(seconds=args.seconds, writers=args.writers, readers=args.readers, http=args.http, dim=args.dim,
                 seed=args.seed, initial_rows=args.initial_rows, seal_rows=args.seal_rows,
                 optimize_every=args.optimize_every, compact_share=args.compact_share)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vecpack-stress-"))
    try:
        report = run(work, cfg, out=args.out, log=lambda s: print(s, flush=True))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(asdict(report.total)))
    print(f"mismatches by check: {report.mismatch_kinds or 'none'}")
    print(f"unexpected exceptions: {report.errors or 'none'}")
    for s in report.samples:
        print(s)
    print(f"passed: {report.passed}")
    sys.exit(0 if report.passed else 1)

