"""Metadata filters: parse a ``where`` dict, evaluate it on one record (columns of many: ``query.columns``).

Syntax (Mongo / Chroma style)::

    {"year": 2020}                                   # equality
    {"year": {"$gte": 2015, "$lt": 2020}}            # several operators on one field: all must hold
    {"$or": [{"lang": "en"}, {"tags": {"$contains": "x"}}]}
    {"author.name": {"$in": ["Ada", "Alan"]}}        # dotted paths reach into nested objects

Operators: ``$eq $ne $gt $gte $lt $lte $in $nin $exists $contains`` on fields,
``$and $or $not`` to combine. Several keys in one dict are ANDed.

Semantics (identical in :func:`matches` and ``columns.evaluate``, which tests compare):

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
    """Whether one record's metadata passes the filter (the reference for ``columns.evaluate``)."""
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
