"""Typed columns of metadata fields, and the columns of a collection's indexed fields.

``Column`` holds one field's values for many rows, typed, so ``evaluate`` runs a
filter (``query.filters``) over 1M rows in milliseconds with the same semantics as
``filters.matches`` on one record. ``FieldColumns`` keeps the columns of the fields
named by ``Collection.create_field_index`` (``Fields``): built from the catalog's records on
first use and extended as rows arrive. A row's metadata never changes (an upsert
writes a new row, a delete only tombstones), so an appended column can never go
stale: it is derived data, always consistent with the committed records it was
read from. Compaction renumbers rows, so a new row generation drops every column.
Filters on fields without an index still work: their columns are read from the
catalog for that one call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from vecpack.errors import NotFound
from vecpack.query.filters import (
    ARRAY,
    BOOL,
    MISSING,
    NULL,
    NUMBER,
    STRING,
    And,
    Cond,
    Filter,
    Not,
    Or,
    field_path,
    kind_of,
    paths,
)
from vecpack.query.hints import why_empty
from vecpack.storage import manifest
from vecpack.storage.catalog import Catalog
from vecpack.storage.store import Store

#: above this fraction of the rows, a filter's matches are found by one vectorised pass over the column
#: (``mask``) rather than gathered by binary search and scattered into a bitmap: at 1M rows, 1% / 10% / 50%
#: matching took 0.09 / 0.54 / 3.6 ms by binary search and 0.32 / 0.33 / 0.44 ms by the pass
ROWS_FRACTION = 1 / 16
#: a hint suggests field names seen in the metadata of up to this many of the rows in scope
HINT_SAMPLE_ROWS = 1_000



class Column:
    """One field's values for rows 0 .. n-1, typed and columnar, for vectorised filtering.

    ``kind`` uint8 (n,) is the value kind per row; ``num`` float64 holds numbers
    (and bools as 0/1); ``code`` int32 indexes ``vocab`` for strings (-1 otherwise).
    Array elements are kept the same way in ``el_*`` arrays with ``el_row`` naming
    their row. Rows are appended in order (``extend``); values never change,
    because a row's metadata never changes (an upsert writes a new row).
    """

    def __init__(self) -> None:
        self.n = 0
        self.kind = np.zeros(0, np.uint8)
        self.num = np.zeros(0, np.float64)
        self.code = np.zeros(0, np.int32)
        self.vocab: dict[str, int] = {}
        self._vocab_array: np.ndarray | None = None
        self.el_row = np.zeros(0, np.int64)
        self.el_kind = np.zeros(0, np.uint8)
        self.el_num = np.zeros(0, np.float64)
        self.el_code = np.zeros(0, np.int32)
        self._sorted: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def nbytes(self) -> int:
        arrays = (self.kind, self.num, self.code, self.el_row, self.el_kind, self.el_num, self.el_code,
                  *(self._sorted[1:] if self._sorted else ()))
        return sum(a.nbytes for a in arrays) + sum(len(s) + 60 for s in self.vocab)

    def extend(self, n: int, values: list[tuple[int, Any]]) -> None:
        """Grow to ``n`` rows; ``values`` lists (row, JSON value) for the new rows that have the field."""
        add = n - self.n
        kind = np.zeros(add, np.uint8)
        num = np.full(add, np.nan)
        code = np.full(add, -1, np.int32)
        els: list[tuple[int, Any]] = []
        for row, value in values:
            i = row - self.n
            kind[i], num[i], code[i] = self._encode(value)
            if kind[i] == ARRAY:
                els.extend((row, v) for v in value)
        self.kind = np.concatenate([self.kind, kind])
        self.num = np.concatenate([self.num, num])
        self.code = np.concatenate([self.code, code])
        if els:
            encoded = [self._encode(v) for _, v in els]
            self.el_row = np.concatenate([self.el_row, np.fromiter((r for r, _ in els), np.int64, len(els))])
            self.el_kind = np.concatenate([self.el_kind, np.array([e[0] for e in encoded], np.uint8)])
            self.el_num = np.concatenate([self.el_num, np.array([e[1] for e in encoded], np.float64)])
            self.el_code = np.concatenate([self.el_code, np.array([e[2] for e in encoded], np.int32)])
        self.n = n

    def _encode(self, value: Any) -> tuple[int, float, int]:
        kind = kind_of(value)
        if kind in (BOOL, NUMBER):
            return kind, float(value), -1
        if kind == STRING:
            code = self.vocab.setdefault(value, len(self.vocab))
            self._vocab_array = None
            return kind, math.nan, code
        return kind, math.nan, -1

    def _string_table(self, test: Any) -> np.ndarray:
        """bool (len(vocab) + 1,): which codes pass ``test(vocab array)``; the extra last slot (code -1) is False."""
        if self._vocab_array is None:
            self._vocab_array = np.array(list(self.vocab), dtype=str) if self.vocab else np.zeros(0, str)
        return np.concatenate([test(self._vocab_array), [False]])

    def equal(self, value: Any, *, elements: bool = False) -> np.ndarray:
        """Rows (or array elements) equal to a scalar ``value``."""
        kind, num, code = (self.el_kind, self.el_num, self.el_code) if elements else (self.kind, self.num, self.code)
        want = kind_of(value)
        if want == NULL:
            return kind == NULL
        if want in (BOOL, NUMBER):
            return (kind == want) & (num == float(value))
        return code == self.vocab[value] if value in self.vocab else np.zeros(kind.shape, bool)

    def ordered(self, op: str, value: Any) -> np.ndarray:
        compare = {"$gt": np.greater, "$gte": np.greater_equal, "$lt": np.less, "$lte": np.less_equal}[op]
        if isinstance(value, str):
            return self._string_table(lambda v: compare(v, value))[self.code]
        with np.errstate(invalid="ignore"):
            return (self.kind == NUMBER) & compare(self.num, float(value))

    def sorted_rows(self, op: str, value: Any, max_rows: int | None = None) -> np.ndarray | None:
        """Rows (unique, in no particular order) passing ``op value`` for $eq/$in (any scalar) and ranges on
        numbers, found by binary search in a copy of the column sorted by (kind, value): cost grows with the
        matches, not the rows. None for the other operators (use the mask ones), and when more than
        ``max_rows`` rows match (counted before any is copied). The sorted copy is rebuilt after rows are
        added."""
        if op not in ("$eq", "$in", "$gt", "$gte", "$lt", "$lte") or (op not in ("$eq", "$in") and
                                                                       isinstance(value, str)):
            return None
        if self._sorted is None or self._sorted[0] != self.n:
            key = np.where(self.kind == STRING, self.code.astype(np.float64), np.nan_to_num(self.num))
            order = np.lexsort((key, self.kind))
            self._sorted = (self.n, order, self.kind[order], key[order])
        _, order, kinds, keys = self._sorted
        parts = []
        for v in _distinct(value) if op == "$in" else (value,):
            kind = kind_of(v)
            at = kinds.dtype.type(kind)  # a Python int would make searchsorted cast all of ``kinds`` (0.3 ms at 1M)
            a, b = np.searchsorted(kinds, at, "left"), np.searchsorted(kinds, at, "right")
            if kind == STRING:
                if v not in self.vocab:
                    continue
                key = float(self.vocab[v])
            else:
                key = 0.0 if kind == NULL else float(v)
            lo, hi = _BOUNDS[op]
            start = a + np.searchsorted(keys[a:b], key, lo) if lo else a
            end = a + np.searchsorted(keys[a:b], key, hi) if hi else b
            parts.append(order[start:end])
        if max_rows is not None and sum(p.size for p in parts) > max_rows:
            return None
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)  # parts are disjoint

    def contains(self, value: Any) -> np.ndarray:
        out = np.zeros(self.n, bool)
        out[self.el_row[self.equal(value, elements=True)]] = True
        return out


def _distinct(values: tuple[Any, ...]) -> list[Any]:
    """Values without repeats under typed equality (``1`` and ``1.0`` repeat, ``1`` and ``true`` do not)."""
    seen, out = set(), []
    for v in values:
        key = (kind_of(v), float(v) if kind_of(v) in (BOOL, NUMBER) else v)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


#: searchsorted sides of the first and last passing key per operator (None = the segment's end)
_BOUNDS = {"$eq": ("left", "right"), "$in": ("left", "right"), "$gt": ("right", None), "$gte": ("left", None),
           "$lt": (None, "left"), "$lte": (None, "right")}


def evaluate(node: Filter, columns: dict[tuple[str, ...], Column], n: int) -> np.ndarray:
    """bool (n,): rows whose field values (``columns``, one per path in the filter) pass the filter."""
    if isinstance(node, And):
        out = np.ones(n, bool)  # an empty And ({}) passes every row
        for p in node.parts:
            out &= evaluate(p, columns, n)
        return out
    if isinstance(node, Or):
        out = evaluate(node.parts[0], columns, n)
        for p in node.parts[1:]:
            out |= evaluate(p, columns, n)
        return out
    if isinstance(node, Not):
        return ~evaluate(node.part, columns, n)
    col = columns[node.path]
    op, arg = node.op, node.value
    if op in ("$eq", "$ne"):
        out = col.equal(arg)
    elif op in ("$in", "$nin"):
        out = np.zeros(n, bool)
        for v in arg:
            out |= col.equal(v)
    elif op == "$exists":
        return (col.kind != MISSING) == arg
    elif op == "$contains":
        return col.contains(arg)
    else:
        return col.ordered(op, arg)
    return ~out if op in ("$ne", "$nin") else out


class FieldColumns:
    """The columns of a collection's indexed fields, kept up to date with its rows."""

    def __init__(self) -> None:
        self._columns: dict[tuple[str, ...], Column] = {}
        self._generation: object = None

    def sync(self, catalog: Catalog, indexed: Iterable[tuple[str, ...]], n_rows: int, generation: object) -> None:
        """Keep exactly the ``indexed`` columns, covering rows 0 .. n_rows-1 of row generation ``generation``."""
        if generation != self._generation:
            self._columns, self._generation = {}, generation
        wanted = set(indexed)
        self._columns = {p: c for p, c in self._columns.items() if p in wanted}
        for path in wanted:
            column = self._columns.setdefault(path, Column())
            if column.n < n_rows:
                column.extend(n_rows, catalog.field_values(path, column.n, n_rows))

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self._columns.values())

    def indexed(self, path: tuple[str, ...]) -> bool:
        return path in self._columns

    def indexed_rows(self, node: Filter) -> np.ndarray | None:
        """Rows (unordered, deleted ones included) passing a single condition on an indexed field, by binary
        search (``Column.sorted_rows``); None when the filter needs the mask path (``mask``), or when more
        than ROWS_FRACTION of the rows pass it, for which the mask path is faster."""
        if not isinstance(node, Cond) or node.path not in self._columns:
            return None
        column = self._columns[node.path]
        return column.sorted_rows(node.op, node.value, max_rows=int(ROWS_FRACTION * column.n))

    def column(self, catalog: Catalog, path: tuple[str, ...], n_rows: int) -> Column:
        """The field's column over rows 0 .. n_rows-1: its index, or (not indexed) read for this call only."""
        column = self._columns.get(path)
        if column is None:
            column = Column()
            column.extend(n_rows, catalog.field_values(path, 0, n_rows))
        return column

    def mask(self, catalog: Catalog, node: Filter, n_rows: int) -> np.ndarray:
        """bool (n_rows,): rows whose metadata passes ``node`` (deleted rows included: AND with the live mask)."""
        return evaluate(node, {path: self.column(catalog, path, n_rows) for path in paths(node)}, n_rows)


class Fields:
    """The field indexes of one collection (``Collection.fields``), and filter masks through them."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.columns = FieldColumns()
        self._paths: list[tuple[str, ...]] | None = None  # paths of the field indexes; None = read again
        store.watchers.append(self._changed)

    def _changed(self, forget: list[int]) -> None:
        self._paths = None

    def sync(self) -> None:
        """Bring the indexed fields' columns up to date with the rows. Store's lock held, state fresh."""
        store = self._store
        if self._paths is None:  # changed since last read (this handle's or another's commit)
            self._paths = [field_path(f) for f in manifest.get(store.db, "field_indexes")]
        self.columns.sync(store.db, self._paths, store.segments.n_rows, store.segments.files)

    def mask(self, node: Filter) -> np.ndarray:
        """bool (n_rows,): live rows passing ``node``. Store's lock held, state fresh."""
        self.sync()
        segments = self._store.segments
        return self.columns.mask(self._store.db, node, segments.n_rows) & (segments.live[: segments.n_rows] != 0)

    def hint(self, node: Filter, rows: np.ndarray) -> str | None:
        """Why ``node`` matched none of ``rows`` (the live rows a call may see; ``hints.why_empty``). Store's lock
        held, state fresh."""
        db, n_rows = self._store.db, self._store.segments.n_rows
        return why_empty(node, lambda path: self.columns.column(db, path, n_rows), rows,
                         lambda: db.field_names(rows[:HINT_SAMPLE_ROWS].tolist()))

    def create(self, field: str) -> None:
        """Index a metadata field (dotted path for nested fields); nothing if it is indexed."""
        field_path(field)
        with self._store.write():
            names = manifest.get(self._store.db, "field_indexes")
            if field not in names:
                manifest.update(self._store.db, field_indexes=[*names, field])
        with self._store.reading():
            self.sync()

    def drop(self, field: str) -> None:
        """Remove a field index; NotFound if there is none on ``field``."""
        field_path(field)
        with self._store.write():
            names = manifest.get(self._store.db, "field_indexes")
            if field not in names:
                raise NotFound(f"no field index on {field!r}; indexed fields: {names}")
            manifest.update(self._store.db, field_indexes=[n for n in names if n != field])

    def list(self) -> list[str]:
        """The indexed metadata fields."""
        with self._store.reading():
            return list(manifest.get(self._store.db, "field_indexes"))
