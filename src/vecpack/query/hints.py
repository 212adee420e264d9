"""Why a filter matched nothing: a field no record has, or values of another type than the filter's.

A filter on a misspelled field (``yaer``) or with a value of the wrong type (``"2020"`` for a field holding
numbers) is valid and matches no record, so a search silently returns nothing. When a filter matches no row a
call may see, ``why_empty`` looks at the columns of the fields it names over exactly those rows (a tenant's
call sees only its own records' fields) and says what is likely wrong; ``Collection.explain`` returns it as
``hint``, and searches, counts and gets warn with it (``FilterWarning``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from vecpack.query.filters import ARRAY, BOOL, MISSING, NULL, NUMBER, OBJECT, STRING, Cond, Filter, Not, kind_of

if TYPE_CHECKING:
    from vecpack.query.columns import Column

KIND_NAMES = {NULL: "null", BOOL: "booleans", NUMBER: "numbers", STRING: "strings", ARRAY: "arrays",
              OBJECT: "objects"}
#: operators whose result is empty when the field is missing or of another type (``$ne``, ``$nin`` and
#: ``$exists`` hold for missing fields or say nothing about types)
_TYPED_OPS = ("$eq", "$gt", "$gte", "$lt", "$lte", "$in", "$contains")


def why_empty(
    node: Filter, column: Callable[[tuple[str, ...]], Column], rows: np.ndarray, field_names: Callable[[], list[str]],
) -> str | None:
    """A hint for a filter that matched none of ``rows`` (int64, the live rows the call may see), or None.

    ``column(path)``: the field's column over at least those rows; ``field_names()``: dotted names of fields the
    rows have (asked only to suggest a spelling).
    """
    for cond in _conditions(node):
        if cond.op not in _TYPED_OPS:
            continue
        name = ".".join(cond.path)
        col = column(cond.path)
        kinds = col.kind[rows[rows < col.n]]
        held = set(np.unique(kinds[kinds != MISSING]).tolist())
        if not held:
            close = difflib.get_close_matches(name, field_names(), n=1, cutoff=0.6)
            return f"no record has field {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
        if cond.op == "$contains":
            if ARRAY not in held:
                return f"field {name!r} holds {_names(held)}; $contains looks inside arrays"
            held = set(np.unique(col.el_kind[np.isin(col.el_row, rows)]).tolist())
        values = cond.value if cond.op == "$in" else [cond.value]
        wanted = {kind_of(v) for v in values}
        if wanted and held.isdisjoint(wanted):  # ($in: [] matches nothing, whatever the types)
            shown = ", ".join(repr(v) for v in values[:3]) + (", ..." if len(values) > 3 else "")
            what = f"the arrays in field {name!r} hold" if cond.op == "$contains" else f"field {name!r} holds"
            return (f"{what} {_names(held) or 'nothing'}, the filter compares them with {_names(wanted)} ({shown}); "
                    "values of different types are never equal")
    return None


def _conditions(node: Filter) -> Iterator[Cond]:
    """The conditions outside any $not (under $not, a missing field or another type makes the $not hold)."""
    if isinstance(node, Cond):
        yield node
    elif not isinstance(node, Not):  # And, Or
        for part in node.parts:
            yield from _conditions(part)


def _names(kinds: set[int]) -> str:
    return " and ".join(KIND_NAMES[k] for k in sorted(kinds))
