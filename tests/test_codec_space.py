"""The codec spec space: candidates build and fit their budget, grow with it, follow the registry; taxonomy groups."""

from __future__ import annotations

import pytest

from vecpack.codecs import make_codec
from vecpack.codecs.registry import CODEC_FAMILIES, TRANSFORM_FAMILIES
from vecpack.codecs.scalar import Int8Codec
from vecpack.codecs.space import (
    BINARY,
    FAMILIES,
    OTHER,
    REDUCTION,
    SCALAR,
    UNCOMPRESSED,
    VECTOR,
    candidate_specs,
    family_of,
)
from vecpack.errors import InvalidInput, UnknownSpec


def sizes(dim, specs, metric="ip"):
    return [make_codec(s, dim, metric).code_size for s in specs]


@pytest.mark.parametrize(("dim", "budget", "metric"), [(384, 96, "ip"), (784, 196, "l2"), (40, 40, "ip")])
def test_every_candidate_builds_and_fits(dim, budget, metric):
    specs = candidate_specs(dim, budget, metric=metric)
    assert specs and len(set(specs)) == len(specs)
    got = sizes(dim, specs, metric)
    assert max(got) <= budget
    assert got == sorted(got)  # ordered by bytes
    assert all(family_of(s) in FAMILIES for s in specs)


def test_budgets_are_monotone():
    budgets = [0, 6, 12, 24, 48, 96, 192, 384, 1536]
    lists = [candidate_specs(384, b) for b in budgets]
    assert lists[0] == []
    largest = lists[-1]
    for b, specs in zip(budgets, lists, strict=True):
        # a smaller budget returns exactly the larger budget's specs that fit it, in the same order
        assert specs == [s for s, size in zip(largest, sizes(384, largest), strict=True) if size <= b]
    assert "float32" in largest and "float32" not in lists[-2]


def test_covers_each_kind_of_codec():
    specs = set(candidate_specs(384, 384))
    assert {"int8", "binary", "pq48", "pq24"} <= specs
    assert {"pca192,int8", "pca96,float32", "pca192,pq48"} <= specs
    assert any(s.startswith("pq") and s.endswith("x4fs") for s in specs) == ("pq4fs" in CODEC_FAMILIES)
    assert ("opq48,pq48" in specs) == ("opq" in TRANSFORM_FAMILIES)
    assert {family_of(s) for s in specs} >= {SCALAR, BINARY, VECTOR, REDUCTION}


def test_unregistered_families_are_skipped(monkeypatch):
    monkeypatch.delitem(CODEC_FAMILIES, "pq")
    monkeypatch.delitem(TRANSFORM_FAMILIES, "pca")
    specs = candidate_specs(384, 384)
    assert specs
    assert not [s for s in specs if s.split(",")[-1].startswith("pq") and s.split(",")[-1][2:].isdigit()]
    assert not [s for s in specs if s.startswith("pca")]


def test_new_parameter_free_family_is_picked_up(monkeypatch):
    monkeypatch.setitem(CODEC_FAMILIES, "fake", (r"fake8", lambda d, m, s, g: Int8Codec(d, m, s)))
    assert "fake8" in candidate_specs(64, 64)
    assert "fake8" not in candidate_specs(64, 63)


def test_optional_chains():
    assert not [s for s in candidate_specs(384, 192) if s.startswith(("mrl", "leanvec"))]
    assert "mrl192,int8" in candidate_specs(384, 192, matryoshka=True)
    if "leanvec" in TRANSFORM_FAMILIES:
        assert "leanvec192,int8" in candidate_specs(384, 192, queries=True)
        # LeanVec keeps inner products only: no l2 candidates
        assert not [s for s in candidate_specs(384, 192, metric="l2", queries=True) if s.startswith("leanvec")]
    assert not [s for s in candidate_specs(384, 384, reduce_to=()) if s.startswith("pca")]
    assert {s.split(",")[0] for s in candidate_specs(384, 384, reduce_to=(0.5,)) if s.startswith("pca")} == {"pca192"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0, "max_bytes": 10}, "dim must be an integer >= 1"),
        ({"dim": 384, "max_bytes": -1}, "max_bytes must be an integer >= 0"),
        ({"dim": 384.0, "max_bytes": 10}, "dim must be an integer"),
        ({"dim": 384, "max_bytes": True}, "max_bytes must be an integer"),
        ({"dim": 384, "max_bytes": 10, "metric": "cosine"}, "metric must be 'ip' or 'l2'"),
        ({"dim": 384, "max_bytes": 10, "reduce_to": (1.5,)}, r"reduce_to fractions must be in \(0, 1\)"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(InvalidInput, match=match):
        candidate_specs(**kwargs)


@pytest.mark.parametrize(
    ("spec", "group"),
    [
        ("float32", UNCOMPRESSED),
        ("float16", SCALAR),
        ("bf16", SCALAR),
        ("int4", SCALAR),
        ("lvq4x8", SCALAR),
        ("binary", BINARY),
        ("rabitq", BINARY),
        ("rabitq4", BINARY),
        ("rbin2", BINARY),
        ("pq48", VECTOR),
        ("pq96x4fs", VECTOR),
        ("opq48,pq48", VECTOR),
        ("pca192,int8", REDUCTION),
        ("mrl256,rabitq4", REDUCTION),
        ("leanvec160,lvq8", REDUCTION),
        ("pca96,float32", REDUCTION),
        # FAISS factory strings
        ("SQ4", SCALAR),
        ("OPQ48,PQ48", VECTOR),
        ("PQ96x4fs", VECTOR),
        ("RaBitQ2", BINARY),
        ("RaBitQfs", BINARY),
        ("LSH384", BINARY),
        ("PCA96,RaBitQ", REDUCTION),
        ("muvera", OTHER),
    ],
)
def test_family_of(spec, group):
    assert family_of(spec) == group


@pytest.mark.parametrize("spec", [None, 8, "", "pca192,", ",int8"])
def test_family_of_rejects(spec):
    with pytest.raises(UnknownSpec):
        family_of(spec)
