"""Index structures over compressed codes: flat (no structure), IVF and graph."""

from __future__ import annotations

from typing import Any

from vecpack.errors import InvalidInput
from vecpack.index.base import Index
from vecpack.index.graph import GraphIndex, graph_params
from vecpack.index.ivf import IVFIndex, ivf_params

INDEX_KINDS: dict[str, type[Index] | None] = {"flat": None, "ivf": IVFIndex, "graph": GraphIndex}
_CHECKS = {"ivf": ivf_params, "graph": graph_params}


def check_index(kind: Any, params: Any, metric: str) -> tuple[str, dict[str, Any]]:
    """(kind, params with the codec metric) if valid; InvalidInput naming the problem otherwise."""
    if kind not in INDEX_KINDS:
        raise InvalidInput(f"unknown index {kind!r}; choose one of {list(INDEX_KINDS)}")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise InvalidInput(f"index_params must be a dict, got {type(params).__name__}")
    if kind == "flat":
        if params:
            raise InvalidInput(f"the flat index takes no parameters, got {sorted(params)}")
        return kind, {}
    if "metric" in params:
        raise InvalidInput("index_params cannot set 'metric': it follows the collection's metric")
    _CHECKS[kind]({**params, "metric": metric})
    return kind, dict(params)


__all__ = ["INDEX_KINDS", "GraphIndex", "IVFIndex", "Index", "check_index"]
