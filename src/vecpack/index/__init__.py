"""Index structures over compressed codes: flat (no structure), IVF and graph."""

from __future__ import annotations

from typing import Any

from vecpack.errors import InvalidInput
from vecpack.index.base import Index, IndexKind
from vecpack.index.graph import GraphIndex, graph_params
from vecpack.index.ivf import IVFIndex, ivf_params

INDEX_KINDS: dict[IndexKind, type[Index] | None] = {IndexKind.FLAT: None, IndexKind.IVF: IVFIndex,
                                                     IndexKind.GRAPH: GraphIndex}
_CHECKS = {IndexKind.IVF: ivf_params, IndexKind.GRAPH: graph_params}
_GRAPH_HINT = 'for a proximity graph as in HNSW use index="graph", a Vamana graph'
_IVF_HINT = 'for inverted lists use index="ivf"; the codec sets how rows are stored (codec="pq48", "int8", ...)'
_FLAT_HINT = 'exact search over every row, without an index, is index="flat"'
#: other libraries' names for our indexes, answered with the one to use
_ALIASES = {"hnsw": _GRAPH_HINT, "hnswlib": _GRAPH_HINT, "vamana": _GRAPH_HINT, "diskann": _GRAPH_HINT,
            "nsg": _GRAPH_HINT, "ivfflat": _IVF_HINT, "ivf_flat": _IVF_HINT, "ivfpq": _IVF_HINT,
            "ivf_pq": _IVF_HINT, "ivf_sq8": _IVF_HINT, "scann": _IVF_HINT,
            "brute_force": _FLAT_HINT, "bruteforce": _FLAT_HINT, "exact": _FLAT_HINT, "none": _FLAT_HINT}


def check_index(kind: Any, params: Any, metric: str) -> tuple[IndexKind, dict[str, Any]]:
    """(kind, params without the codec metric) if valid; InvalidInput naming the problem otherwise."""
    if not isinstance(kind, str) or kind not in INDEX_KINDS:
        hint = _ALIASES.get(kind.lower().replace("-", "_")) if isinstance(kind, str) else None
        raise InvalidInput(f"unknown index {kind!r}; choose one of {[str(k) for k in INDEX_KINDS]}"
                           + (f"; {hint}" if hint else ""))
    kind = IndexKind(kind)
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise InvalidInput(f"index_params must be a dict, got {type(params).__name__}")
    if kind == IndexKind.FLAT:
        if params:
            raise InvalidInput(f"the flat index takes no parameters, got {sorted(params)}")
        return kind, {}
    if "metric" in params:
        raise InvalidInput("index_params cannot set 'metric': it follows the collection's metric")
    _CHECKS[kind]({**params, "metric": metric})
    return kind, dict(params)


__all__ = ["INDEX_KINDS", "GraphIndex", "IVFIndex", "Index", "IndexKind", "check_index"]
