"""Codec specs: parse a string like ``"int8"``, ``"pq48"`` or ``"pca192,int8"`` into a codec; save and load codecs.

A spec is a comma-separated chain: zero or more transforms, then one codec
(``TRANSFORM_FAMILIES`` / ``CODEC_FAMILIES`` list the patterns).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable

import numpy as np

from vecpack.codecs.base import Codec
from vecpack.codecs.binary import BinaryCodec
from vecpack.codecs.chain import ChainCodec
from vecpack.codecs.leanvec import LeanVecTransform
from vecpack.codecs.lvq import Int4Codec, LVQCodec
from vecpack.codecs.opq import OPQTransform
from vecpack.codecs.pq import PQCodec
from vecpack.codecs.pqfs import PQ4Codec
from vecpack.codecs.rabitq import RaBitQCodec
from vecpack.codecs.rbin import RbinCodec
from vecpack.codecs.scalar import BFloat16Codec, Float16Codec, Float32Codec, Int8Codec
from vecpack.codecs.transform import MatryoshkaTransform, PCATransform, Transform
from vecpack.errors import CorruptData, InvalidInput, UnknownSpec

FORMAT_VERSION = 1

#: spec pattern -> factory(dim, metric, spec, match)
CODEC_FAMILIES: dict[str, tuple[str, Callable[..., Codec]]] = {
    "float32": (r"float32", lambda d, m, s, g: Float32Codec(d, m, s)),
    "float16": (r"float16", lambda d, m, s, g: Float16Codec(d, m, s)),
    "bf16": (r"bf16", lambda d, m, s, g: BFloat16Codec(d, m, s)),
    "int8": (r"int8", lambda d, m, s, g: Int8Codec(d, m, s)),
    "binary": (r"binary", lambda d, m, s, g: BinaryCodec(d, m, s)),
    "pq": (r"pq(\d+)", lambda d, m, s, g: PQCodec(d, m, s, int(g.group(1)))),
    "pq4fs": (r"pq(\d+)x4fs", lambda d, m, s, g: PQ4Codec(d, m, s, int(g.group(1)))),
    "int4": (r"int4", lambda d, m, s, g: Int4Codec(d, m, s)),
    "lvq": (r"lvq(\d+)", lambda d, m, s, g: LVQCodec(d, m, s, int(g.group(1)), 0)),
    "lvq2": (r"lvq(\d+)x(\d+)", lambda d, m, s, g: LVQCodec(d, m, s, int(g.group(1)), int(g.group(2)))),
    "rbin": (r"rbin(\d+)", lambda d, m, s, g: RbinCodec(d, m, s, int(g.group(1)))),
    "rabitq": (r"rabitq(\d+)?", lambda d, m, s, g: RaBitQCodec.from_spec(d, m, s, g.group(1))),
}


#: spec pattern -> factory(dim_in, metric, spec, match) of the transforms a chain may start with
TRANSFORM_FAMILIES: dict[str, tuple[str, Callable[..., Transform]]] = {
    "pca": (r"pca(\d+)", lambda d, m, s, g: PCATransform(d, m, s, int(g.group(1)))),
    "mrl": (r"mrl(\d+)", lambda d, m, s, g: MatryoshkaTransform(d, m, s, int(g.group(1)))),
    "opq": (r"opq(\d+)", lambda d, m, s, g: OPQTransform(d, m, s, int(g.group(1)))),
    "leanvec": (r"leanvec(\d+)", lambda d, m, s, g: LeanVecTransform(d, m, s, int(g.group(1)))),
}


def make_codec(spec: str, dim: int, metric: str) -> Codec:
    """An untrained codec for ``spec``: ``"float16"``, ``"int8"``, ``"pq48"``, ``"pca192,int8"``, ...

    ``metric`` is the codec-level metric, ``"ip"`` or ``"l2"``.

    Raises
    ------
    UnknownSpec
        If an element of the chain is unknown, misplaced, or its dimensions do not fit.
    """
    if not isinstance(spec, str):
        raise UnknownSpec(f"codec spec must be a string, got {type(spec).__name__}")
    parts = [p.strip() for p in spec.strip().lower().split(",")]
    if any(not p for p in parts):
        raise UnknownSpec(f"codec spec {spec!r} has an empty element")
    canonical = ",".join(parts)
    transforms = []
    for part in parts[:-1]:
        found = _match(TRANSFORM_FAMILIES, part, dim, metric)
        if found is None:
            if _match(CODEC_FAMILIES, part, dim, metric) is not None:
                raise UnknownSpec(f"codec spec {spec!r}: {part!r} is a codec, and only the last element may be one")
            raise UnknownSpec(f"codec spec {spec!r}: unknown transform {part!r}; known: {_known(TRANSFORM_FAMILIES)}")
        transforms.append(found)
        dim = found.dim_out
    codec = _match(CODEC_FAMILIES, parts[-1], dim, metric)
    if codec is None:
        if _match(TRANSFORM_FAMILIES, parts[-1], dim, metric) is not None:
            raise UnknownSpec(f"codec spec {spec!r} ends with the transform {parts[-1]!r}; add a codec, "
                              f"e.g. {canonical + ',int8'!r}")
        raise UnknownSpec(f"unknown codec spec {spec!r}; known codecs: {_known(CODEC_FAMILIES)}; "
                          f"transforms: {_known(TRANSFORM_FAMILIES)} (chained as 'pca192,int8')")
    if not transforms:
        return codec
    return ChainCodec(transforms[0].dim_in, metric, canonical, transforms, codec)


def _match(families: dict[str, tuple[str, Callable]], part: str, dim: int, metric: str):
    """The codec or transform for one chain element, or None; a known element with bad numbers raises."""
    for pattern, factory in families.values():
        match = re.fullmatch(pattern, part)
        if match:
            try:
                return factory(dim, metric, part, match)
            except InvalidInput as exc:
                raise UnknownSpec(str(exc)) from exc
    return None


def _known(families: dict[str, tuple[str, Callable]]) -> str:
    return ", ".join(re.sub(r"\(\\d\+\)", "<n>", p) for p, _ in families.values())


def save_codec(codec: Codec) -> bytes:
    """Serialise a trained codec (spec, dim, metric and arrays) to bytes (an .npz archive)."""
    config = {"format": FORMAT_VERSION, "spec": codec.spec, "dim": codec.dim, "metric": codec.metric}
    buf = io.BytesIO()
    np.savez(buf, __config__=np.frombuffer(json.dumps(config).encode(), dtype=np.uint8), **codec.state())
    return buf.getvalue()


def load_codec(data: bytes) -> Codec:
    """The trained codec serialised by ``save_codec``; raises CorruptData on a damaged archive."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        config = json.loads(arrays.pop("__config__").tobytes())
    except Exception as exc:  # a damaged zip or json raises many different types
        raise CorruptData(f"codec file is unreadable: {exc}") from exc
    if config.get("format") != FORMAT_VERSION:
        raise CorruptData(f"codec file has format {config.get('format')!r}, expected {FORMAT_VERSION}")
    codec = make_codec(config["spec"], config["dim"], config["metric"])
    codec.set_state(arrays)
    return codec
