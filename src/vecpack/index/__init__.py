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


def check_index(kind: Any, params: Any, metric: str) -> tuple[IndexKind, dict[str, Any]]:
    """(kind, params without the codec metric) if valid; InvalidInput naming the problem otherwise."""
    if not isinstance(kind, str) or kind not in INDEX_KINDS:
        raise InvalidInput(f"unknown index {kind!r}; choose one of {[str(k) for k in INDEX_KINDS]}")
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
