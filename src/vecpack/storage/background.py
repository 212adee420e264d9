"""Background maintenance: collections compress, index and compact their new rows by themselves.

One thread per open database (``connect(maintenance=True)``, the default; ``VECPACK_MAINTENANCE=0`` makes the
default off) looks every POLL_S at the collections the database has open, and runs ``maintenance.optimize`` on
each one that has work (``due``) and has had no write for IDLE_S: a bulk load is not interrupted batch by batch,
and a few seconds after the last write the rows are compressed and indexed. ``optimize()`` stays the way to do
it now and wait (right after an install, it leaves an index whose kernels still compile to this thread:
``index_now``). The index is built off the write lock, so searches and writes go on meanwhile (sealing and
compaction hold it, as in ``optimize()``), on half the cores.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref

import numba

from vecpack.kernels import warm
from vecpack.storage.maintenance import COMPACT_FRACTION, optimize
from vecpack.storage.segments import MIN_INDEX_ROWS
from vecpack.storage.store import Store

log = logging.getLogger("vecpack")

#: seconds between looks at the open collections
POLL_S = 0.5
#: a collection is maintained once it has had no write for this long
IDLE_S = 1.0
#: an untrained codec is first fitted on at least this many rows (a codec fitted on a handful of rows would
#: code every later row against their narrow range), unless optimize() is called
MIN_FIT_ROWS = MIN_INDEX_ROWS
#: after a failure (a full disk), a collection is left alone this long
RETRY_S = 30.0


def due(store: Store) -> bool:
    """Whether ``optimize`` would change something: growing rows to seal (once the codec is fitted, or enough
    rows to fit it), rows an index does not cover yet (once ``index_now``), or COMPACT_FRACTION of the rows
    deleted."""
    seg = store.segments
    growing, deleted = seg.n_rows - seg.sealed, seg.n_rows - seg.n_live
    if growing and (seg.codec.trained or growing >= MIN_FIT_ROWS):
        return True
    if seg.unindexed_rows and seg.sealed >= MIN_INDEX_ROWS and index_now(store):
        return True
    return deleted > 0 and deleted >= COMPACT_FRACTION * seg.n_rows


def _shape(store: Store) -> tuple[int, ...]:
    """What maintenance work depends on: rows, sealed, indexed and live rows."""
    seg = store.segments
    return seg.n_rows, seg.sealed, seg.indexed_rows, seg.n_live


def index_now(store: Store) -> bool:
    """Whether to build the index now: its kernels are compiled (``kernels.warm``), or the collection is too
    large to be scanned flat meanwhile (more than ``warm.FLAT_ROWS`` rows). Else background maintenance
    builds it once the kernels are ready, and searches scan the rows exactly until then."""
    return warm.ready(str(store.segments.index_kind)) or store.segments.n_rows > warm.FLAT_ROWS


class Maintainer:
    """The thread, and the stores it looks after (``watch``; a closed store is dropped)."""

    def __init__(self, poll_s: float = POLL_S, idle_s: float = IDLE_S) -> None:
        self.poll_s, self.idle_s = poll_s, idle_s
        self._stores: weakref.WeakSet[Store] = weakref.WeakSet()
        self._stop = threading.Event()
        self._failed: weakref.WeakKeyDictionary[Store, float] = weakref.WeakKeyDictionary()  # last failure
        self._settled: weakref.WeakKeyDictionary[Store, tuple[int, ...]] = weakref.WeakKeyDictionary()
        self._thread = threading.Thread(target=self._run, name="vecpack-maintenance", daemon=True)
        self._thread.start()

    def watch(self, store: Store) -> None:
        """Look after ``store`` from now on, until it is closed."""
        self._stores.add(store)

    def _run(self) -> None:
        # numba's thread count is per calling thread: the background index build leaves half the cores to
        # the searches it runs beside
        numba.set_num_threads(max(1, numba.config.NUMBA_NUM_THREADS // 2))
        while not self._stop.wait(self.poll_s):
            for store in list(self._stores):
                if self._stop.is_set():
                    return
                self._maintain(store)

    def _maintain(self, store: Store) -> None:
        now = time.monotonic()
        failed = self._failed.get(store, -RETRY_S)
        if store.closed or now - store.last_write < self.idle_s or now - failed < RETRY_S:
            return
        try:
            with store.reading():  # fresh: another process may have done the work
                if not due(store) or self._settled.get(store) == _shape(store):
                    return
            optimize(store, None, index=index_now(store))
            with store.reading():  # work optimize() declines (an "auto" codec waiting for more live rows):
                if due(store):     # not again until the rows change
                    self._settled[store] = _shape(store)
        except Exception as exc:  # reported where it cannot be missed, as a failed seal after a write is
            if store.closed:
                return
            self._failed[store] = time.monotonic()
            store.maintenance_error = f"background optimize failed: {type(exc).__name__}: {exc}"
            store.maintenance_failures += 1
            log.warning("collection %r: %s", store.name, store.maintenance_error)

    def close(self) -> None:
        """Stop, after the optimize in progress (if any) ends."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
