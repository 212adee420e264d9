"""Codec specs: parse a string like ``"int8"`` or ``"pq48"`` into a codec, save and load trained codecs."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable

import numpy as np

from vecpack.codecs.base import Codec
from vecpack.codecs.binary import BinaryCodec
from vecpack.codecs.pq import PQCodec
from vecpack.codecs.scalar import Float16Codec, Float32Codec, Int8Codec
from vecpack.errors import CorruptData, UnknownSpec

FORMAT_VERSION = 1

#: spec pattern -> factory(dim, metric, spec, match)
CODEC_FAMILIES: dict[str, tuple[str, Callable[..., Codec]]] = {
    "float32": (r"float32", lambda d, m, s, g: Float32Codec(d, m, s)),
    "float16": (r"float16", lambda d, m, s, g: Float16Codec(d, m, s)),
    "int8": (r"int8", lambda d, m, s, g: Int8Codec(d, m, s)),
    "binary": (r"binary", lambda d, m, s, g: BinaryCodec(d, m, s)),
    "pq": (r"pq(\d+)", lambda d, m, s, g: PQCodec(d, m, s, int(g.group(1)))),
}


def make_codec(spec: str, dim: int, metric: str) -> Codec:
    """An untrained codec for ``spec`` (e.g. ``"float16"``, ``"int8"``, ``"binary"``, ``"pq48"``).

    ``metric`` is the codec-level metric, ``"ip"`` or ``"l2"``.

    Raises
    ------
    UnknownSpec
        If no codec family matches ``spec``.
    """
    if not isinstance(spec, str):
        raise UnknownSpec(f"codec spec must be a string, got {type(spec).__name__}")
    for pattern, factory in CODEC_FAMILIES.values():
        match = re.fullmatch(pattern, spec.strip().lower())
        if match:
            return factory(dim, metric, spec.strip().lower(), match)
    known = ", ".join(p.replace(r"(\d+)", "<M>") for p, _ in CODEC_FAMILIES.values())
    raise UnknownSpec(f"unknown codec spec {spec!r}; known: {known}")


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
