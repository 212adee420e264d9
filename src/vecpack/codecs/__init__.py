"""Codecs turn float32 vectors into compact byte codes and score queries against them.

A codec knows nothing about indexes or storage. ``make_codec`` parses a spec
string such as ``"int8"`` or ``"pq48"``.
"""

from vecpack.codecs.base import Codec, Scorer
from vecpack.codecs.registry import CODEC_FAMILIES, load_codec, make_codec, save_codec

__all__ = ["CODEC_FAMILIES", "Codec", "Scorer", "load_codec", "make_codec", "save_codec"]
