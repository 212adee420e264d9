"""One collection's storage core: its catalog connections, its locks, and the state of one generation.

Every read runs in ``reading()``: ``lock`` held and one catalog read transaction open, the
in-memory state (``segments``) refreshed at its start, so what it reads from the catalog
and from memory is one generation, whoever commits meanwhile (``fresh()``: the same for reads
of the in-memory state alone, cheaper). Every write runs in
``write()``: the write lock and a catalog transaction; memory changes only after COMMIT,
applied from what that transaction committed. Every write transaction is numbered
(``commit_seq``), so a handle tells another handle's commit (reload) from its own (apply).
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vecpack.errors import ClosedError, CorruptData, StorageError, VecpackError
from vecpack.storage import manifest
from vecpack.storage.catalog import Catalog
from vecpack.storage.manifest import Manifest
from vecpack.storage.segments import Committed, PendingCommit, Segments

#: reads that found a file their snapshot names already removed by a newer commit, before giving up
SNAPSHOT_TRIES = 3


class Store:
    """The catalog, locks and in-memory state of one open collection.

    Two locks, so that searches never wait for a write's fsyncs: ``write_lock`` admits one writer at a
    time for a whole write transaction; ``lock`` guards the in-memory state and the read connection and
    is held only briefly (a reader's snapshot, the writer applying its commit). ``optimize_lock`` runs
    one optimize() at a time. Lock order: optimize_lock, then write_lock, then lock.
    """

    def __init__(self, path: Path, *, memory_map: bool = False) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.write_lock = threading.RLock()
        self.optimize_lock = threading.Lock()
        self._catalog = Catalog(path / "catalog.sqlite")  # the writer's connection
        try:
            self._reader = Catalog(path / "catalog.sqlite")  # committed state, for readers
        except BaseException:
            self._catalog.close()
            raise
        self._writer: int | None = None  # thread id of the writer inside its transaction
        self.closed = False
        self.pending = PendingCommit()
        #: derived state of other modules (tenant row lists, field columns), told of every change with the
        #: tenants whose state to drop
        self.watchers: list[Callable[[list[int]], None]] = []
        # maintenance after a commit (sealing) that failed: it is not the write's failure (stats() shows it)
        self.maintenance_error: str | None = None
        self.maintenance_failures = 0
        #: when this handle last committed (``time.monotonic``): background maintenance waits for a pause
        self.last_write = time.monotonic()
        try:
            self.settings = Manifest.read(self._reader)  # the settings, fixed at creation
            self.name = self.settings.name
            self.segments = Segments(path, self.settings, memory_map)
            self._data_version, self._applied_seq = -1, -1  # no state loaded yet: the first refresh loads it
        except BaseException:
            self._catalog.close()
            self._reader.close()
            raise
        try:
            with self.reading():
                pass
        except BaseException:
            self.close()
            raise

    @property
    def db(self) -> Catalog:
        """The catalog as this thread must see it: inside its write transaction, the writer's connection
        (its own uncommitted changes included); otherwise the read connection, which sees committed
        state only and is used with ``lock`` held."""
        return self._catalog if self._writer == threading.get_ident() else self._reader

    def manifest(self) -> Manifest:
        """The manifest as this thread sees it (``db``)."""
        return Manifest.read(self.db)

    # -- reads --------------------------------------------------------------------
    @contextmanager
    def reading(self) -> Iterator[None]:
        """``lock`` held and one catalog read transaction open, the in-memory state refreshed at its start."""
        with self.lock:
            if self.closed:
                raise self._closed_error()
            try:
                for attempt in range(SNAPSHOT_TRIES):
                    with self.db.snapshot():
                        try:
                            self._refresh()
                        except CorruptData as exc:
                            # a file our snapshot names was removed by a newer commit of another process: again
                            if isinstance(exc.__cause__, FileNotFoundError) and attempt + 1 < SNAPSHOT_TRIES:
                                continue
                            raise
                        yield
                        return
            except sqlite3.Error as exc:
                raise storage_error(exc, self.path) from exc

    @contextmanager
    def fresh(self) -> Iterator[None]:
        """``lock`` held and the in-memory state current, with no catalog transaction left open: for reads of
        the in-memory state only (an unfiltered search's snapshot). When no one committed since the state was
        loaded, one ``PRAGMA data_version`` instead of ``reading``'s transaction."""
        with self.lock:
            if self.closed:
                raise self._closed_error()
            try:
                current = self._reader.data_version() == self._data_version
            except sqlite3.Error as exc:
                raise storage_error(exc, self.path) from exc
            if current:
                yield
                return
        with self.reading():
            yield

    def records_at(self, rows: list[int]) -> tuple[str, dict[int, tuple[str, str | None]]]:
        """(the vector log's name, row -> (id, metadata JSON) of the live rows among ``rows``) as committed now,
        in one catalog snapshot: the name tells whether the rows are still numbered as the caller's snapshot."""
        with self.lock:
            if self.closed:
                raise self._closed_error()
            try:
                return self.db.records_at(rows, "vectors_file")
            except sqlite3.Error as exc:
                raise storage_error(exc, self.path) from exc

    def _refresh(self) -> None:
        """Reload state if another handle (of this process or another) committed since we last looked; our own
        commits are applied by ``_apply``."""
        if self.closed:
            raise self._closed_error()
        with self.db.snapshot():
            version = self.db.data_version()
            if version == self._data_version:
                return
            if manifest.get(self.db, "commit_seq") == self._applied_seq:
                self._data_version = version  # nothing but our own commits since
            else:
                self._load()

    def _load(self) -> None:
        m = self.manifest()
        self.segments.load(self.db, m)
        self._changed([])
        self._data_version = self.db.data_version()
        self._applied_seq = m.commit_seq

    def _changed(self, forget: list[int]) -> None:
        for watcher in self.watchers:
            watcher(forget)

    # -- writes -------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[None]:
        """Write lock + catalog transaction; in-memory state changes only after COMMIT.

        Readers are not blocked while the transaction runs (vector writes and their fsync, encoding):
        they read the committed state through their own connection. COMMIT and applying it to the
        in-memory state happen together under ``lock``, so a reader never sees one without the other.
        A failure of SQLite or the file system rolls back and raises StorageError: nothing was written.
        """
        self.write_lock.acquire()
        try:
            txn = self._begin()
            try:
                yield
            except BaseException as exc:
                self._finish(txn, exc)
                if isinstance(exc, sqlite3.Error | OSError) and not isinstance(exc, VecpackError):
                    raise storage_error(exc, self.path) from exc  # rolled back: nothing of the call was written
                raise
            self._finish(txn, None)
        finally:
            self._writer = None
            self.pending = PendingCommit()
            self.write_lock.release()

    def _begin(self) -> Any:
        """BEGIN IMMEDIATE on the writer's connection, with the state refreshed: the open transaction."""
        txn = None
        try:
            with self.reading():  # before the write lock: load what is new (most of it) without holding it
                pass
            txn = self._catalog.transaction()
            txn.__enter__()
            with self.lock:
                self._refresh()  # another process may have committed before we took the write lock
        except BaseException as exc:
            if txn is not None:
                txn.__exit__(type(exc), exc, exc.__traceback__)  # ROLLBACK
            if isinstance(exc, sqlite3.Error | OSError) and not isinstance(exc, VecpackError):
                raise storage_error(exc, self.path) from exc
            raise
        self._writer = threading.get_ident()
        self.pending = PendingCommit()
        return txn

    def _finish(self, txn: Any, exc: BaseException | None) -> None:
        """COMMIT (and apply it) if the body succeeded, else ROLLBACK."""
        with self.lock:
            committed = None
            try:
                try:
                    committed = self._committing() if exc is None else None
                except BaseException as failed:
                    txn.__exit__(type(failed), failed, failed.__traceback__)  # ROLLBACK
                    raise
                if exc is None:
                    txn.__exit__(None, None, None)  # COMMIT
                else:
                    txn.__exit__(type(exc), exc, exc.__traceback__)  # ROLLBACK
            except (sqlite3.Error, OSError) as failed:
                raise storage_error(failed, self.path) from failed
            finally:
                self._writer = None
            if committed is not None:
                self._apply(committed, self.pending)
                self.last_write = time.monotonic()

    def _committing(self) -> Committed:
        """Inside a write transaction, just before COMMIT: count the commit, and read what it leaves."""
        m = self.manifest()
        seq = m.commit_seq + 1
        churn = self.pending.added + len(self.pending.deleted)
        manifest.update(self.db, commit_seq=seq)
        if churn:  # rows written or deleted since the collection was created: when to look for drift again
            manifest.update(self.db, churn=m.churn + churn)
        return Committed(seq, m.n_rows, m.sealed_rows, m.index_state)

    def _apply(self, committed: Committed, pending: PendingCommit) -> None:
        """After our commit, ``lock`` held: bring memory in line with what it committed. Another process may have
        committed since: the next ``_refresh`` loads that (its commit_seq is not ours)."""
        if pending.reload:  # compaction renumbered every row, or re-encoding wrote new codes
            with self.db.snapshot():
                self._load()
            return
        self.segments.apply(committed, pending)
        self._changed(pending.forget)
        self._applied_seq = committed.seq

    def append(self, keys: list[str], x: Any, meta: list[str | None]) -> None:
        """Inside a write transaction: write vectors past the committed end, then record them."""
        self.segments.append(self.db, keys, x, meta)
        self.pending.added += len(keys)

    def delete_rows(self, rows: list[int]) -> None:
        """Inside a write transaction: tombstone live rows."""
        self.db.delete_rows(rows)
        self.pending.deleted.extend(rows)

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """An advisory lock file held across processes (released by the OS if the holder dies)."""
        with open(self.path / name, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def checkpoint(self) -> None:
        self._catalog.checkpoint()

    def _closed_error(self) -> ClosedError:
        if not self.path.exists():
            return ClosedError(f"collection {self.name!r} was dropped: create it again (db.create_collection) to "
                               "reuse the name")
        return ClosedError(f"collection {self.name!r} is closed: get it again from an open database "
                           "(vecpack.connect(path).get_collection(name))")

    def close(self) -> None:
        """Close the files, after an optimize in progress (a background one too) ends."""
        with self.optimize_lock, self.write_lock, self.lock:
            if self.closed:
                return
            self.closed = True
            self.segments.close()
            self._catalog.close()
            self._reader.close()


@contextmanager
def storage_errors(path: Path) -> Iterator[None]:
    """Failures of SQLite or the file system inside the block raised as vecpack errors (``storage_error``)."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        if isinstance(exc, VecpackError):
            raise
        raise storage_error(exc, path) from exc


def storage_error(exc: BaseException, path: Path) -> VecpackError:
    """The vecpack error for a failure of SQLite or the file system in the collection at ``path``: CorruptData for a
    damaged catalog, StorageError for the rest (a full disk, an I/O error, a lock held too long)."""
    if isinstance(exc, VecpackError):
        return exc
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return CorruptData(f"{path / 'catalog.sqlite'}: {exc}")
    return StorageError(f"{path}: {type(exc).__name__}: {exc}")
