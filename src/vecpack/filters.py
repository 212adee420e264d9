"""Metadata filters: parse a ``where`` dict, evaluate it on one record or on columns of many.

Syntax (Mongo / Chroma style)::

    {"year": 2020}                                   # equality
    {"year": {"$gte": 2015, "$lt": 2020}}            # several operators on one field: all must hold
    {"$or": [{"lang": "en"}, {"tags": {"$contains": "x"}}]}
    {"author.name": {"$in": ["Ada", "Alan"]}}        # dotted paths reach into nested objects

Operators: ``$eq $ne $gt $gte $lt $lte $in $nin $exists $contains`` on fields,
``$and $or $not`` to combine. Several keys in one dict are ANDed.

Semantics (identical in :func:`matches` and :func:`evaluate`, which tests compare):

* values have a type: null, bool, number, string, array, object. Equality needs
  the same type (``true`` never equals ``1``); numbers compare as float64.
* ``$gt $gte $lt $lte`` take a number or a string and hold only for a field of
  that type (strings compare by code point).
* ``$ne`` / ``$nin`` are the negations of ``$eq`` / ``$in``: they hold for a
  missing field too. ``$exists: false`` holds only for a missing field.
* ``$contains`` holds when the field is an array with an element equal to the value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vecpack import validate
from vecpack.errors import InvalidInput

FIELD_OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$contains")
LOGIC_OPS = ("$and", "$or", "$not")
MAX_FILTER_NODES = 1000

# value kinds, as stored in Column.kind
MISSING, NULL, BOOL, NUMBER, STRING, ARRAY, OBJECT = range(7)


@dataclass(frozen=True, slots=True)
class Cond:
    """``path op value``, e.g. (("year",), "$gt", 2015)."""

    path: tuple[str, ...]
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class And:
    parts: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    parts: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Not:
    part: Filter


Filter = Cond | And | Or | Not


# -- parsing ---------------------------------------------------------------------------------------
def parse(where: Any) -> Filter:
    """The filter tree of a ``where`` dict; InvalidInput naming the bad part (``where['year']['$gt']: ...``)."""
    validate.json_depth(where, "where")  # before anything recurses into it
    node = _parse_doc(where, "where")
    if _size(node) > MAX_FILTER_NODES:
        raise InvalidInput(f"where has more than {MAX_FILTER_NODES} conditions")
    return node


def canonical(where: Any) -> str:
    """A string equal for equal filters (queries sharing a filter share its evaluation)."""
    validate.json_depth(where, "where")
    try:
        return json.dumps(where, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"where is not JSON: {exc}") from exc


def _parse_doc(doc: Any, at: str) -> Filter:
    if not isinstance(doc, dict):
        raise InvalidInput(f"{at}: a filter must be a dict, got {type(doc).__name__}")
    parts = [_parse_entry(key, value, f"{at}[{key!r}]") for key, value in doc.items()]
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _parse_entry(key: Any, value: Any, at: str) -> Filter:
    if not isinstance(key, str):
        raise InvalidInput(f"{at}: keys must be strings")
    if key in ("$and", "$or"):
        if not isinstance(value, list) or not value:
            raise InvalidInput(f"{at}: {key} takes a non-empty list of filters")
        parts = tuple(_parse_doc(v, f"{at}[{i}]") for i, v in enumerate(value))
        return And(parts) if key == "$and" else Or(parts)
    if key == "$not":
        return Not(_parse_doc(value, at))
    if key.startswith("$"):
        raise InvalidInput(f"{at}: unknown operator {key!r} here; use $and, $or, $not or a field name")
    path = field_path(key, at)
    if not isinstance(value, dict):
        return _cond(path, "$eq", value, at)
    if not value:
        raise InvalidInput(f"{at}: empty operator dict")
    if not all(isinstance(op, str) and op.startswith("$") for op in value):
        raise InvalidInput(f"{at}: a field's value must be a scalar or a dict of operators "
                           f"({', '.join(FIELD_OPS)}); use dotted paths for nested fields")
    conds: list[Filter] = []
    for op, arg in value.items():
        if op == "$not":
            conds.append(Not(_parse_entry(key, arg, f"{at}['$not']")))
        else:
            conds.append(_cond(path, op, arg, f"{at}[{op!r}]"))
    return conds[0] if len(conds) == 1 else And(tuple(conds))


def field_path(name: Any, at: str = "field") -> tuple[str, ...]:
    """A dotted field name as a path ("a.b" -> ("a", "b")); InvalidInput if malformed."""
    if not isinstance(name, str) or not name or len(name) > 256:
        raise InvalidInput(f"{at}: a field name must be a non-empty string of at most 256 characters")
    parts = tuple(name.split("."))
    if any(not p or p.startswith("$") or '"' in p or any(ord(c) < 32 for c in p) for p in parts):
        raise InvalidInput(f"{at}: invalid field name {name!r} (empty part, leading '$', '\"' or a control character)")
    return parts


def _scalar(value: Any, at: str) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidInput(f"{at}: {value!r} is not a finite number")
        return value
    raise InvalidInput(f"{at}: expected a string, number, bool or null, got {type(value).__name__}")


def _cond(path: tuple[str, ...], op: str, value: Any, at: str) -> Cond:
    if op not in FIELD_OPS:
        raise InvalidInput(f"{at}: unknown operator {op!r}; expected one of {', '.join(FIELD_OPS)} or $not")
    if op in ("$in", "$nin"):
        if not isinstance(value, list):
            raise InvalidInput(f"{at}: {op} takes a list, got {type(value).__name__}")
        return Cond(path, op, tuple(_scalar(v, f"{at}[{i}]") for i, v in enumerate(value)))
    if op == "$exists":
        if not isinstance(value, bool):
            raise InvalidInput(f"{at}: $exists takes true or false, got {value!r}")
        return Cond(path, op, value)
    if op in ("$gt", "$gte", "$lt", "$lte") and (isinstance(value, bool) or not isinstance(value, int | float | str)):
        raise InvalidInput(f"{at}: {op} takes a number or a string, got {type(value).__name__}")
    if isinstance(value, list):
        raise InvalidInput(f"{at}: {op} takes a single value; use $in for a list")
    return Cond(path, op, _scalar(value, at))


def _size(node: Filter) -> int:
    if isinstance(node, Cond):
        return 1
    if isinstance(node, Not):
        return 1 + _size(node.part)
    return 1 + sum(_size(p) for p in node.parts)


def unconditional(node: Filter) -> bool:
    """True if the filter has no condition that could fail (``{}``, ``{"$and": [{}]}``, ``{"$not": {"$not": {}}}``):
    it passes every record. Destructive calls refuse such filters."""
    if isinstance(node, And):
        return all(unconditional(p) for p in node.parts)
    if isinstance(node, Or):
        return any(unconditional(p) for p in node.parts)
    if isinstance(node, Not):
        return isinstance(node.part, Not) and unconditional(node.part.part)
    return False


def paths(node: Filter) -> set[tuple[str, ...]]:
    """Every field path the filter reads."""
    if isinstance(node, Cond):
        return {node.path}
    if isinstance(node, Not):
        return paths(node.part)
    return set().union(*(paths(p) for p in node.parts))


# -- one record (the reference semantics) -------------------------------------------------------
_ABSENT = object()


def kind_of(value: Any) -> int:
    """The value kind of a JSON value (``_ABSENT`` -> MISSING)."""
    if value is _ABSENT:
        return MISSING
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int | float):
        return NUMBER
    if isinstance(value, str):
        return STRING
    return ARRAY if isinstance(value, list) else OBJECT


def _lookup(doc: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return _ABSENT
        doc = doc[key]
    return doc


def _equal(a: Any, b: Any) -> bool:
    kind = kind_of(a)
    if kind != kind_of(b) or kind in (ARRAY, OBJECT):
        return False
    return kind == NULL or (float(a) == float(b) if kind in (BOOL, NUMBER) else a == b)


def _order(a: Any, op: str, b: Any) -> bool:
    if kind_of(a) != kind_of(b):
        return False
    if isinstance(b, str):
        x, y = a, b
    else:
        x, y = float(a), float(b)
    return {"$gt": x > y, "$gte": x >= y, "$lt": x < y, "$lte": x <= y}[op]


def matches(node: Filter, metadata: dict[str, Any] | None) -> bool:
    """Whether one record's metadata passes the filter (the reference for :func:`evaluate`)."""
    if isinstance(node, And):
        return all(matches(p, metadata) for p in node.parts)
    if isinstance(node, Or):
        return any(matches(p, metadata) for p in node.parts)
    if isinstance(node, Not):
        return not matches(node.part, metadata)
    value = _lookup(metadata if metadata is not None else {}, node.path)
    op, arg = node.op, node.value
    if op == "$eq":
        return _equal(value, arg)
    if op == "$ne":
        return not _equal(value, arg)
    if op == "$in":
        return any(_equal(value, v) for v in arg)
    if op == "$nin":
        return not any(_equal(value, v) for v in arg)
    if op == "$exists":
        return (value is not _ABSENT) == arg
    if op == "$contains":
        return isinstance(value, list) and any(_equal(v, arg) for v in value)
    return value is not _ABSENT and _order(value, op, arg)


# -- many records: typed columns -----------------------------------------------------------------
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
