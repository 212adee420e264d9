"""The space of codec specs: every sensible spec that fits a byte budget, and its taxonomy group.

Used by the memory-budget benchmark (``bench/budget.py``) and by ``codec="auto"``.
Nothing here trains: a candidate is a spec string that ``make_codec`` accepts
and whose ``code_size`` fits, so specs of families that are not registered
(yet) are skipped, and new families are picked up as they are registered.

Taxonomy (:func:`family_of`). The grouping adapts the intra-feature branch of
the taxonomy in Zhang et al., "Experimental Analysis of Large-scale Learnable
Vector Storage Compression" (PVLDB 17(4)): quantization / dimension reduction /
decomposition / pruning. That paper studies training-time compression of
embedding tables; for post-training vector codecs, quantization splits by how
a code is formed, and decomposition and pruning have no post-training member:

* ``SCALAR`` -- scalar quantization, each dimension on its own: float16, bf16,
  int8, int4, LVQ (``lvq8``, ``lvq4x8``, ...);
* ``BINARY`` -- binary codes / hashing, about one bit per dimension, scored with
  popcounts: ``binary``, RaBitQ (``rabitq``, ``rabitq<B>``), ``rbin<B>``, LSH;
* ``VECTOR`` -- vector / product quantization, groups of dimensions share a
  codebook entry: ``pq<m>``, OPQ chains (``opq<m>,pq<m>``), 4-bit fast scan (``pq<m>x4fs``);
* ``REDUCTION`` -- dimension reduction, any chain through a transform that drops
  dimensions (``pca<d>``, ``mrl<d>``, ``leanvec<d>``), whatever codec follows;
* ``UNCOMPRESSED`` -- bare float32, the reference; ``OTHER`` -- anything unrecognised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from vecpack.codecs.registry import CODEC_FAMILIES, make_codec
from vecpack.errors import InvalidInput, UnknownSpec

SCALAR = "scalar quantization"
BINARY = "binary / hashing"
VECTOR = "vector / product quantization"
REDUCTION = "dimension reduction"
UNCOMPRESSED = "uncompressed"
OTHER = "other"
#: taxonomy groups in display order
FAMILIES = (SCALAR, BINARY, VECTOR, REDUCTION, UNCOMPRESSED, OTHER)

#: default output dimensions of dimension-reducing chains, as fractions of the input dimension
REDUCE_TO = (3 / 4, 1 / 2, 1 / 4, 1 / 8)

_GROUP_OF_NAME = {
    "float": SCALAR,
    "bf": SCALAR,
    "int": SCALAR,
    "lvq": SCALAR,
    "sq": SCALAR,  # FAISS ScalarQuantizer (SQ8, SQ4)
    "binary": BINARY,
    "rabitq": BINARY,
    "rbin": BINARY,
    "lsh": BINARY,
    "pq": VECTOR,
    "opq": VECTOR,
}
_REDUCING = ("pca", "mrl", "leanvec")
_SCALAR_SPECS = ("float32", "float16", "bf16", "int8", "int4", "lvq8", "lvq4", "lvq4x4", "lvq4x8")
_BINARY_SPECS = ("binary", "rabitq", *(f"rabitq{b}" for b in range(2, 10)), *(f"rbin{b}" for b in range(1, 5)))
_PQ_SUB_DIMS = range(2, 17)  # dimensions per 8-bit sub-quantizer
_FS_SUB_DIMS = range(2, 9)  # dimensions per 4-bit (fast-scan) sub-quantizer


def family_of(spec: str) -> str:
    """The taxonomy group (one of ``FAMILIES``) of a codec spec, e.g. ``"pca192,int8"`` -> ``REDUCTION``.

    Works on the spec string alone (no dimension needed, nothing built), so it
    also classifies FAISS factory strings (``"SQ4"``, ``"OPQ48,PQ48"``, ``"PCA96,RaBitQ"``).

    Raises
    ------
    UnknownSpec
        If ``spec`` is not a string or has an empty chain element.

    Examples
    --------
    >>> family_of("pca192,int8"), family_of("opq48,pq48")
    ('dimension reduction', 'vector / product quantization')
    """
    if not isinstance(spec, str):
        raise UnknownSpec(f"codec spec must be a string, got {type(spec).__name__}")
    parts = [p.strip().lower() for p in spec.split(",")]
    if any(not p for p in parts):
        raise UnknownSpec(f"codec spec {spec!r} has an empty element")
    if any(p.startswith(_REDUCING) for p in parts):
        return REDUCTION
    if parts == ["float32"]:
        return UNCOMPRESSED
    return next((group for name, group in _GROUP_OF_NAME.items() if parts[-1].startswith(name)), OTHER)


def candidate_specs(
    dim: int,
    max_bytes: int,
    *,
    metric: str = "ip",
    reduce_to: Sequence[float] = REDUCE_TO,
    matryoshka: bool = False,
    queries: bool = False,
) -> list[str]:
    """Every sensible registered spec whose code for ``dim``-d vectors takes at most ``max_bytes`` bytes.

    Ordered by code size (then taxonomy group, then spec). Candidates are the
    scalar, binary, PQ and fast-scan codecs (PQ with 2..16 dimensions per
    8-bit sub-quantizer, 2..8 per 4-bit one), OPQ before PQ, and ``pca<d'>``
    chains in front of each codec, with d' the ``reduce_to`` fractions of ``dim``
    rounded down to multiples of 8 (``mrl<d'>`` and ``leanvec<d'>`` chains too when asked).
    Parameter-free registered families are included as they are. A budget
    that admits more bytes returns a superset. Nothing is trained.

    Parameters
    ----------
    dim : input dimension, >= 1.
    max_bytes : budget per vector, >= 0.
    metric : codec metric, ``"ip"`` or ``"l2"`` (code sizes rarely depend on it).
    reduce_to : fractions in (0, 1) of ``dim`` for dimension-reducing chains; empty = none.
    matryoshka : also chain ``mrl<d'>`` (prefix truncation: only meaningful for Matryoshka models).
    queries : also chain ``leanvec<d'>``, for callers that fit with sample queries (without
        them LeanVec is ``pca<d'>``).

    Raises
    ------
    InvalidInput
        If ``dim`` or ``max_bytes`` is not a non-negative integer (``dim`` positive),
        a fraction is outside (0, 1), or ``metric`` is neither ``"ip"`` nor ``"l2"``.

    Examples
    --------
    >>> specs = candidate_specs(384, 48)
    >>> "pq48" in specs and "pca192,pq24" in specs and "int8" not in specs
    True
    """
    for name, value, low in (("dim", dim, 1), ("max_bytes", max_bytes, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInput(f"candidate_specs: {name} must be an integer >= {low}, got {value!r}")
    if metric not in ("ip", "l2"):
        raise InvalidInput(f"candidate_specs: metric must be 'ip' or 'l2', got {metric!r}")
    if any(not 0 < f < 1 for f in reduce_to):
        raise InvalidInput(f"candidate_specs: reduce_to fractions must be in (0, 1), got {list(reduce_to)}")
    specs = list(_codec_specs(dim))
    specs += [f"opq{m},pq{m}" for m in _pq_sizes(dim)] + [f"opq{m},pq{m}x4fs" for m in _fs_sizes(dim)]
    transforms = ["pca", *(["leanvec"] if queries else []), *(["mrl"] if matryoshka else [])]
    for reduced in _reduced_dims(dim, reduce_to):
        specs += [f"{t}{reduced},{codec}" for t in transforms for codec in _codec_specs(reduced)]
    sized = []
    for spec in dict.fromkeys(specs):
        size = _code_size(spec, dim, metric)
        if size is not None and size <= max_bytes:
            sized.append((size, FAMILIES.index(family_of(spec)), spec))
    return [spec for *_, spec in sorted(sized)]


def _codec_specs(d: int) -> Iterable[str]:
    """Codec (last chain element) candidates for ``d``-d input, registered or not."""
    yield from _SCALAR_SPECS
    yield from _BINARY_SPECS
    yield from (f"pq{m}" for m in _pq_sizes(d))
    yield from (f"pq{m}x4fs" for m in _fs_sizes(d))
    for pattern, _ in CODEC_FAMILIES.values():  # registered parameter-free families not listed above
        if re.fullmatch(r"[a-z0-9_]+", pattern):
            yield pattern


def _pq_sizes(d: int) -> list[int]:
    return [d // s for s in _PQ_SUB_DIMS if d % s == 0]


def _fs_sizes(d: int) -> list[int]:
    return [d // s for s in _FS_SUB_DIMS if d % s == 0]


def _reduced_dims(dim: int, fractions: Sequence[float]) -> list[int]:
    dims = {int(dim * f) // 8 * 8 for f in fractions}
    return sorted((d for d in dims if 8 <= d < dim), reverse=True)


def _code_size(spec: str, dim: int, metric: str) -> int | None:
    """Bytes per vector of ``spec``, or None when it is not registered or does not fit ``dim``."""
    try:
        return make_codec(spec, dim, metric).code_size
    except ValueError:  # UnknownSpec / InvalidInput: unregistered family, misplaced element, numbers that do not fit
        return None
