"""Input checks at the public boundary: every problem becomes a clear InvalidInput."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np

from vecpack.errors import DimensionMismatch, InvalidInput

METRICS = ("cosine", "ip", "l2")
MAX_ID_LENGTH = 512
MAX_METADATA_BYTES = 64 * 1024
MAX_BATCH = 1_000_000
MAX_K = 10_000
#: the largest magnitude accepted in a vector or a query: it keeps every float32 dot product and squared
#: distance finite at any dimension (65,536 * (2e15)^2 is far below float32's 3.4e38)
MAX_ABS = 1e15
#: under cosine a vector needs at least this norm: a zero vector has no direction, and float32 cannot
#: normalise much shorter ones (their squared components underflow)
MIN_COSINE_NORM = 1e-15
#: the deepest nesting of objects and arrays accepted in metadata (and in a filter's values)
MAX_JSON_DEPTH = 32
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def tenant_name(name: object) -> str:
    """A tenant name: the same rules as a collection name."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(f"invalid tenant name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
                           "starting with a letter or digit")
    return name


def collection_name(name: object) -> str:
    """A safe collection name: 1-64 chars of letters, digits, '_', '-', '.', not starting with '.', '-' or '_'."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(
            f"invalid collection name {name!r}: "
            "use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return name


def metric(value: object) -> str:
    if value not in METRICS:
        raise InvalidInput(f"unknown metric {value!r}; use one of {', '.join(METRICS)}")
    return str(value)


def dimension(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= 65536:
        raise InvalidInput(f"dim must be an integer in 1..65536, got {value!r}")
    return int(value)


def ids(values: object, *, unique: bool = True) -> list[str]:
    """Ids as strings; ints are accepted and stored as their decimal string."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | np.ndarray):
        raise InvalidInput(f"ids must be a list of str or int, got {type(values).__name__}")
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (str, int, np.integer)):
            raise InvalidInput(f"id {v!r} is a {type(v).__name__}; ids must be str or int")
        s = str(v)
        if not s or len(s) > MAX_ID_LENGTH:
            raise InvalidInput(f"id {s[:40]!r} must have 1..{MAX_ID_LENGTH} characters")
        if "\x1f" in s:
            raise InvalidInput(f"id {s[:40]!r} contains the reserved character \\x1f")
        out.append(s)
    if not out:
        raise InvalidInput("empty batch: no ids given")
    if len(out) > MAX_BATCH:
        raise InvalidInput(f"batch of {len(out)} exceeds the limit of {MAX_BATCH} per call")
    if unique and len(set(out)) != len(out):
        seen: set[str] = set()
        dups = sorted({s for s in out if s in seen or seen.add(s)})
        raise InvalidInput(f"duplicate ids in one call: {dups[:5]}")
    return out


def vectors(values: object, dim: int, n: int | None = None, *, metric: str | None = None) -> np.ndarray:
    """float32 C-contiguous (n, dim) array of finite values of magnitude <= MAX_ABS (and, under ``metric``
    "cosine", of norm >= MIN_COSINE_NORM)."""
    try:
        x = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"vectors are not numeric: {exc}") from exc
    if x.ndim == 1 and n == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise InvalidInput(f"vectors must be 2-D (n, {dim}), got shape {x.shape}")
    if x.shape[1] != dim:
        raise DimensionMismatch(f"vectors have dimension {x.shape[1]}, collection expects {dim}")
    if n is not None and x.shape[0] != n:
        raise InvalidInput(f"got {x.shape[0]} vectors for {n} ids")
    if x.shape[0] == 0:
        raise InvalidInput("empty batch: no vectors given")
    _check_values(x, "vector at row {}", cosine=metric == "cosine")
    return np.ascontiguousarray(x)


def queries(values: object, dim: int, *, metric: str | None = None) -> tuple[np.ndarray, bool]:
    """(queries float32 (m, dim), True if a single 1-D query was given); values as for ``vectors``."""
    try:
        q = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"query is not numeric: {exc}") from exc
    single = q.ndim == 1
    if single:
        q = q[None, :]
    if q.ndim != 2:
        raise InvalidInput(f"query must be (dim,) or (m, dim), got shape {q.shape}")
    if q.shape[1] != dim:
        raise DimensionMismatch(f"query has dimension {q.shape[1]}, collection expects {dim}")
    if q.shape[0] == 0:
        raise InvalidInput("empty query batch")
    _check_values(q, "query {}", cosine=metric == "cosine")
    return np.ascontiguousarray(q), single


def _check_values(x: np.ndarray, label: str, *, cosine: bool = False) -> None:
    """InvalidInput naming the first row (``label.format(row)``) with NaN / inf, a value beyond MAX_ABS, or
    (``cosine``) a norm below MIN_COSINE_NORM."""
    peak = np.abs(x).max(axis=1)  # NaN propagates: one pass finds all three kinds of bad value
    bad = ~np.isfinite(peak)
    if bad.any():
        raise InvalidInput(f"{label.format(int(np.argmax(bad)))} contains NaN or inf")
    if (peak > MAX_ABS).any():
        at = int(np.argmax(peak > MAX_ABS))
        raise InvalidInput(f"{label.format(at)} holds a value of magnitude {peak[at]:.3g}; the limit is {MAX_ABS:g} "
                           "(larger values overflow float32 scores)")
    if cosine:
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        if (norms < MIN_COSINE_NORM).any():
            at = int(np.argmax(norms < MIN_COSINE_NORM))
            norm = float(np.linalg.norm(x[at].astype(np.float64)))  # float32 squares underflow: the true norm
            raise InvalidInput(f"{label.format(at)} has norm {norm:.3g}; under cosine a vector needs a norm of "
                               f"at least {MIN_COSINE_NORM:g} (a zero vector has no direction; use metric 'ip' or "
                               "'l2' to store it)")


def positive_int(value: object, name: str, *, low: int = 1, high: int = MAX_K) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= int(value) <= high:
        raise InvalidInput(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return int(value)


def metadata(values: object, n: int) -> list[str | None]:
    """Metadata as JSON text per record (None when absent); each must be a JSON object."""
    if values is None:
        return [None] * n
    if isinstance(values, dict) or not isinstance(values, Sequence):
        raise InvalidInput("metadata must be a list with one dict (or None) per id")
    if len(values) != n:
        raise InvalidInput(f"got {len(values)} metadata entries for {n} ids")
    out: list[str | None] = []
    for i, m in enumerate(values):
        if m is None:
            out.append(None)
            continue
        if not isinstance(m, dict):
            raise InvalidInput(f"metadata[{i}] must be a dict or None, got {type(m).__name__}")
        try:
            text = json.dumps(m, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        except RecursionError as exc:
            raise InvalidInput(f"metadata[{i}] nests deeper than {MAX_JSON_DEPTH} levels") from exc
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"metadata[{i}] is not JSON-serialisable: {exc}") from exc
        if text.count("{") + text.count("[") > MAX_JSON_DEPTH:  # only then can it nest too deep
            json_depth(m, f"metadata[{i}]")
        if len(text.encode()) > MAX_METADATA_BYTES:
            raise InvalidInput(f"metadata[{i}] is {len(text.encode())} bytes; the limit is {MAX_METADATA_BYTES}")
        out.append(text)
    return out


def json_depth(value: object, at: str, limit: int = MAX_JSON_DEPTH) -> None:
    """InvalidInput if objects and arrays in ``value`` nest deeper than ``limit`` (iterative: any depth is safe to
    check, where json.dumps and every reader that recurses would fail)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list | tuple) else None
        if children is None:
            continue
        if depth > limit:
            raise InvalidInput(f"{at} nests deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)
