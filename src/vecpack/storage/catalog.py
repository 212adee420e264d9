"""The collection catalog: one SQLite database (WAL, synchronous=FULL) per collection.

It is the commit point of every write: vector bytes are written and synced
first, then one transaction records which rows exist, their ids, metadata,
tombstones, checksums and the collection's counters.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vecpack.errors import CorruptData

SCHEMA_VERSION = 1
_CHUNK = 500  # ids per IN (...) clause, below SQLite's parameter limit
#: how long a statement waits for another connection's lock before failing (a writer for the write lock)
BUSY_TIMEOUT_S = 30.0
#: how long a checkpoint waits for readers (writers wait meanwhile) before leaving the log for later
CHECKPOINT_WAIT_S = 1.0

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE records (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, metadata TEXT);
CREATE TABLE tombstones (row INTEGER PRIMARY KEY);
CREATE TABLE batches (row0 INTEGER PRIMARY KEY, n INTEGER NOT NULL, crc INTEGER NOT NULL);
CREATE TABLE segments (row0 INTEGER PRIMARY KEY, n INTEGER NOT NULL, crc INTEGER NOT NULL);
CREATE TABLE tenants (code INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, active INTEGER NOT NULL);
"""


def _range_table(table: str) -> None:
    """ValueError unless ``table`` holds checksummed ranges (its name is put into SQL)."""
    if table not in ("batches", "segments"):
        raise ValueError(f"not a table of checksummed ranges: {table!r}")


@functools.cache
def _records_at_sql(n: int) -> str:
    """``Catalog.records_at``'s statement for n rows: the setting as row -1, then the records, in row order."""
    rows = f"SELECT row, id, metadata FROM records WHERE row IN ({','.join('?' * n)})" if n else ""
    setting = "SELECT -1, value, NULL FROM meta WHERE key = ?"
    return f"{setting} UNION ALL {rows} ORDER BY 1" if n else setting


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for a in range(0, len(items), _CHUNK):
        yield items[a : a + _CHUNK]


class Catalog:
    """SQLite-backed rows, ids, metadata, tombstones, checksums and settings of one collection."""

    def __init__(self, path: Path, *, create: bool = False, meta: dict[str, Any] | None = None) -> None:
        if not create and not Path(path).exists():
            raise CorruptData(f"{path}: catalog is missing")
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            if create:
                with self.transaction():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self.conn.execute(statement)
                    self.set_meta(schema=SCHEMA_VERSION, **(meta or {}))
            version = self.get_meta("schema")
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise CorruptData(f"{path}: not a readable vecpack catalog ({exc})") from exc
        if version != SCHEMA_VERSION:
            self.conn.close()
            raise CorruptData(f"{path}: catalog schema {version!r}, expected {SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception. Takes the write lock up front."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every statement inside sees the database as of the first one (WAL snapshot), so
        reads of several statements are one state. Inside a transaction already open on this connection, nothing."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def data_version(self) -> int:
        """Changes when another connection commits (SQLite's PRAGMA data_version)."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    # -- settings and counters --------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def all_meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def set_meta(self, **values: Any) -> None:
        self.conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, json.dumps(v)) for k, v in values.items()],
        )

    # -- records ----------------------------------------------------------------
    def _select_in(self, columns: str, key: str, values: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        """Rows ``SELECT columns FROM records WHERE key IN values``, in chunks below SQLite's parameter limit."""
        for part in _chunks(values):
            yield from self.conn.execute(
                f"SELECT {columns} FROM records WHERE {key} IN ({','.join('?' * len(part))})", list(part)
            )

    def rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        """Row of each existing id among ``ids``."""
        return dict(self._select_in("id, row", "id", ids))

    def records_by_id(self, ids: Sequence[str]) -> dict[str, tuple[int, str | None]]:
        """id -> (row, metadata JSON) for the existing ids among ``ids``."""
        return {i: (r, m) for i, r, m in self._select_in("id, row, metadata", "id", ids)}

    def records_by_row(self, rows: Sequence[int]) -> dict[int, tuple[str, str | None]]:
        """row -> (id, metadata JSON) for live rows among ``rows``."""
        return {r: (i, m) for r, i, m in self._select_in("row, id, metadata", "row", rows)}

    def records_at(self, rows: Sequence[int], key: str) -> tuple[Any, dict[int, tuple[str, str | None]]]:
        """(setting ``key``, ``records_by_row(rows)``) read in one snapshot: a search checks with the vector
        log's name that ``rows`` still number the records it scored. One statement for up to _CHUNK rows."""
        if len(rows) > _CHUNK:
            with self.snapshot():
                return self.get_meta(key), self.records_by_row(rows)
        found = self.conn.execute(_records_at_sql(len(rows)), (key, *rows)).fetchall()
        head = found[0] if found and found[0][0] == -1 else None  # the setting's row sorts first (row -1)
        records = {r: (i, m) for r, i, m in (found[1:] if head else found)}
        return (json.loads(head[1]) if head else None), records

    def insert_records(self, row0: int, ids: Sequence[str], metadata: Sequence[str | None]) -> None:
        self.conn.executemany(
            "INSERT INTO records (row, id, metadata) VALUES (?, ?, ?)",
            zip(range(row0, row0 + len(ids)), ids, metadata, strict=True),
        )

    def field_values(self, path: Sequence[str], row0: int, row1: int) -> list[tuple[int, Any]]:
        """(row, JSON value) of the live rows in row0 .. row1-1 whose metadata has the field ``path``."""
        json_path = "$" + "".join(f'."{key}"' for key in path)
        out: list[tuple[int, Any]] = []
        for row, kind, value in self.conn.execute(
            "SELECT row, json_type(metadata, ?1), json_extract(metadata, ?1) FROM records "
            "WHERE row >= ?2 AND row < ?3 AND json_type(metadata, ?1) IS NOT NULL ORDER BY row",
            (json_path, row0, row1),
        ):
            if kind in ("true", "false"):
                value = kind == "true"
            elif kind in ("array", "object"):
                value = json.loads(value)
            out.append((row, value))
        return out

    def field_names(self, rows: Sequence[int]) -> list[str]:
        """Dotted paths of the fields in the metadata of ``rows`` (nested fields too; not array elements)."""
        names = set()
        for (key,) in self.conn.execute(
            "SELECT DISTINCT t.fullkey FROM records r, json_tree(r.metadata) t "
            "WHERE r.row IN (SELECT value FROM json_each(?1)) AND t.type != 'object' AND t.fullkey != '$'",
            (json.dumps(list(rows)),),
        ):
            if "[" not in key:
                names.add(".".join(part.strip('"') for part in key[2:].split(".")))
        return sorted(names)

    # -- tenants (multi-tenant collections: record keys are "<code>\x1f<id>") ------------------
    def tenants(self) -> dict[str, tuple[int, bool]]:
        """name -> (code, active) of every tenant."""
        return {n: (c, bool(a)) for c, n, a in self.conn.execute("SELECT code, name, active FROM tenants")}

    def tenant(self, name: str) -> tuple[int, bool] | None:
        """(code, active) of one tenant, None if there is no such tenant."""
        row = self.conn.execute("SELECT code, active FROM tenants WHERE name = ?", (name,)).fetchone()
        return None if row is None else (row[0], bool(row[1]))

    def add_tenant(self, name: str) -> int:
        """Register a tenant; its code."""
        return int(self.conn.execute("INSERT INTO tenants (name, active) VALUES (?, 1)", (name,)).lastrowid)

    def set_tenant_active(self, code: int, active: bool) -> None:
        self.conn.execute("UPDATE tenants SET active = ? WHERE code = ?", (int(active), code))

    def remove_tenant(self, code: int) -> None:
        self.conn.execute("DELETE FROM tenants WHERE code = ?", (code,))

    def rows_with_prefix(self, prefix: str) -> list[int]:
        """Rows whose key starts with ``prefix`` (a range scan of the id index; ``prefix`` ends in \x1f)."""
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        return [r for (r,) in self.conn.execute("SELECT row FROM records WHERE id >= ? AND id < ?", (prefix, upper))]

    def tenant_of_rows(self, row0: int, row1: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows int64, tenant codes int32) of the live rows in row0 .. row1-1 whose key has a tenant prefix."""
        found = self.conn.execute(
            "SELECT row, CAST(substr(id, 1, instr(id, char(31)) - 1) AS INTEGER) FROM records "
            "WHERE row >= ? AND row < ? AND instr(id, char(31)) > 0", (row0, row1)).fetchall()
        rows = np.fromiter((r for r, _ in found), np.int64, len(found))
        return rows, np.fromiter((c for _, c in found), np.int32, len(found))

    def delete_rows(self, rows: Sequence[int]) -> None:
        """Remove live rows and record their tombstones."""
        self.conn.executemany("DELETE FROM records WHERE row = ?", [(r,) for r in rows])
        self.conn.executemany("INSERT INTO tombstones (row) VALUES (?)", [(r,) for r in rows])

    def renumber(self, keep: np.ndarray) -> None:
        """Compaction: the live rows ``keep`` (ascending) become rows 0 .. len(keep)-1; tombstones are dropped.

        Updating in ascending order never collides: each new row number is below every
        row number not yet updated.
        """
        self.conn.executemany(
            "UPDATE records SET row = ? WHERE row = ?", ((new, int(old)) for new, old in enumerate(keep) if new != old)
        )
        self.conn.execute("DELETE FROM tombstones")

    def tombstones(self) -> np.ndarray:
        return np.fromiter((r for (r,) in self.conn.execute("SELECT row FROM tombstones")), dtype=np.int64)

    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM records").fetchone()[0]

    # -- checksummed ranges of the row files -------------------------------------
    def add_range(self, table: str, row0: int, n: int, crc: int) -> None:
        """Record the crc32 of rows row0..row0+n-1 in ``batches`` (vectors) or ``segments`` (codes)."""
        _range_table(table)
        self.conn.execute(f"INSERT OR REPLACE INTO {table} (row0, n, crc) VALUES (?, ?, ?)", (row0, n, crc))

    def clear_ranges(self, *tables: str) -> None:
        """Forget every checksummed range of ``tables`` ("batches", "segments"): their row file is rewritten."""
        for table in tables:
            _range_table(table)
        for table in tables:
            self.conn.execute(f"DELETE FROM {table}")

    def ranges(self, table: str) -> list[tuple[int, int, int]]:
        _range_table(table)
        return list(self.conn.execute(f"SELECT row0, n, crc FROM {table} ORDER BY row0"))

    def last_range(self, table: str) -> tuple[int, int, int] | None:
        _range_table(table)
        return self.conn.execute(f"SELECT row0, n, crc FROM {table} ORDER BY row0 DESC LIMIT 1").fetchone()

    def integrity_problems(self) -> list[str]:
        """SQLite's full integrity check (every page, index and constraint): its findings, none if sound."""
        found = [message for (message,) in self.conn.execute("PRAGMA integrity_check")]
        return [] if found == ["ok"] else found

    def consistency_problems(self, n_rows: int, sealed_rows: int, multi_tenant: bool) -> list[str]:
        """What in the catalog contradicts its own counters: every row below n_rows is one record or one
        tombstone, checksummed ranges cover the vector log's n_rows and the codes' sealed_rows rows without a
        gap, metadata is JSON, and (multi-tenant) every key names an existing tenant."""
        def one(sql: str) -> tuple[Any, ...]:
            return self.conn.execute(sql).fetchone()

        problems = []
        records, low, high = one("SELECT count(*), min(row), max(row) FROM records")
        tombstones, dead_low, dead_high = one("SELECT count(*), min(row), max(row) FROM tombstones")
        both = one("SELECT count(*) FROM records JOIN tombstones USING (row)")[0]
        if (records + tombstones != n_rows or both or min(low or 0, dead_low or 0) < 0
                or max(high or 0, dead_high or 0) >= max(n_rows, 1)):
            problems.append(f"{records} records and {tombstones} tombstones ({both} rows both, rows {low}..{high}) "
                            f"do not account for the {n_rows} rows")
        for table, rows in (("batches", n_rows), ("segments", sealed_rows)):
            end = 0
            for row0, n, _ in self.ranges(table):
                if row0 != end:
                    problems.append(f"{table}: a checksummed range starts at row {row0}, expected {end}")
                    break
                end = row0 + n
            else:
                if end != rows:
                    problems.append(f"{table}: checksummed ranges end at row {end}, expected {rows}")
        bad_json = one("SELECT count(*) FROM records WHERE metadata IS NOT NULL AND NOT json_valid(metadata)")[0]
        if bad_json:
            problems.append(f"{bad_json} records hold metadata that is not JSON")
        if multi_tenant:
            orphans = one("SELECT count(*) FROM records WHERE instr(id, char(31)) = 0 OR CAST(substr(id, 1, "
                          "instr(id, char(31)) - 1) AS INTEGER) NOT IN (SELECT code FROM tenants)")[0]
            if orphans:
                problems.append(f"{orphans} records belong to no tenant")
        return problems

    def checkpoint(self, wait_s: float = CHECKPOINT_WAIT_S) -> None:
        """Fold the write-ahead log into the database file and truncate it (after a compaction). It waits for
        readers still on older snapshots, and blocks writers meanwhile: at most ``wait_s``, then it leaves the
        log for a later checkpoint."""
        self.conn.execute(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")

    def close(self) -> None:
        self.conn.close()
