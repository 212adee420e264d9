"""Chained specs ("pca192,int8"), the dimension-reducing transforms, LeanVec, and bf16."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecpack.codecs import load_codec, make_codec, save_codec
from vecpack.codecs.chain import ChainCodec
from vecpack.codecs.leanvec import LeanVecTransform, frank_wolfe, leanvec_loss
from vecpack.codecs.transform import PCATransform
from vecpack.errors import UnknownSpec
from vecpack.search import exact_knn


def low_rank(rng, n, d, rank, noise=0.01):
    """Rows near a rank-``rank`` subspace, unit norm."""
    x = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d)) + noise * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("int8,pca12", "only the last element may be one"),
        ("pca12", "ends with the transform"),
        ("pca500,int8", "output dimension 500"),
        ("pca0,int8", "output dimension 0"),
        ("pca12,,int8", "empty element"),
        ("pca12,foo", "unknown codec spec"),
        ("bar12,int8", "unknown transform 'bar12'"),
        ("pca10,pq3", "not divisible"),
        ("leanvec16,int8", "inner products only"),  # built below with metric l2
    ],
)
def test_bad_chains_are_rejected_naming_the_part(spec, message):
    metric = "l2" if spec.startswith("leanvec") else "ip"
    with pytest.raises(UnknownSpec, match=message):
        make_codec(spec, 64, metric)


def test_chain_parses_and_sizes():
    codec = make_codec(" PCA32 , Int8 ", 64, "ip")
    assert isinstance(codec, ChainCodec) and codec.spec == "pca32,int8"
    assert codec.code_size == 32 and codec.codec.dim == 32
    assert make_codec("mrl16,pca8,float16", 64, "ip").code_size == 16
    assert make_codec("bf16", 64, "ip").code_size == 128


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_pca_chain_keeps_low_rank_data_nearly_exact(rng, metric):
    x = low_rank(rng, 3000, 64, 12)
    q = low_rank(rng, 50, 64, 12)
    codec = make_codec("pca16,float32", 64, metric).fit(x)
    codes = codec.encode(x)
    assert np.linalg.norm(codec.decode(codes) - x) < 0.05 * np.linalg.norm(x)
    # the transformed codes rank like the originals
    truth = exact_knn(x, q, 10, metric)[0]
    y = codec.decode(codes)
    found = exact_knn(y, q, 10, metric)[0]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)]) > 0.95
    # scorer and probe see the same projected query
    assert codec.probe(q).qf.shape == (50, 17 if metric == "ip" else 32)


def test_chain_state_round_trips(rng):
    x = low_rank(rng, 2000, 64, 20)
    codec = make_codec("pca32,int8", 64, "ip").fit(x)
    again = load_codec(save_codec(codec))
    assert again.spec == "pca32,int8"
    assert np.array_equal(again.encode(x[:100]), codec.encode(x[:100]))
    np.testing.assert_array_equal(again.decode(codec.encode(x[:5])), codec.decode(codec.encode(x[:5])))


def test_pca_reports_explained_variance(rng):
    x = low_rank(rng, 2000, 64, 8)
    t = PCATransform(64, "ip", "pca8", 8).fit(x)
    assert t.explained > 0.99
    assert np.allclose(t.components.T @ t.components, np.eye(8), atol=1e-4)


def test_matryoshka_truncates_and_renormalises(rng):
    x = low_rank(rng, 500, 64, 30)
    codec = make_codec("mrl16,float32", 64, "ip").fit(x)
    y = codec.codec.decode(codec.encode(x))
    assert np.allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    assert np.allclose(y, x[:, :16] / np.linalg.norm(x[:, :16], axis=1, keepdims=True), atol=1e-6)
    raw = make_codec("mrl16,float32", 64, "l2").fit(3 * x)  # not unit norm: plain truncation
    assert np.allclose(raw.codec.decode(raw.encode(3 * x)), 3 * x[:, :16], atol=1e-6)


def ood_data(rng, d=48):
    """Data with most variance in the first half of the dimensions, queries in the second half."""
    data_scale = np.r_[np.linspace(3, 1, d // 2), np.linspace(0.8, 0.5, d // 2)]
    query_scale = np.r_[np.full(d // 2, 0.1), np.linspace(2, 1, d // 2)]
    x = (rng.normal(size=(8000, d)) * data_scale).astype(np.float32)
    q = (rng.normal(size=(2000, d)) * query_scale).astype(np.float32)
    return x, q[:1000], q[1000:]


def test_leanvec_beats_pca_on_out_of_distribution_queries(rng):
    """Learned on one query set, evaluated on another: inner products are kept far better than by PCA."""
    x, q_train, q_test = ood_data(rng)
    lean = LeanVecTransform(48, "ip", "leanvec12", 12).fit(x, q_train)
    pca = PCATransform(48, "ip", "pca12", 12).fit(x)
    exact = q_test @ x[:2000].T

    def error(t):
        return np.linalg.norm(t.apply_query(q_test) @ t.apply(x[:2000]).T - exact) / np.linalg.norm(exact)

    assert lean.query_aware
    assert error(lean) < 0.75 * error(pca)


def test_leanvec_without_queries_is_pca(rng):
    x = ood_data(rng)[0]
    lean = LeanVecTransform(48, "ip", "leanvec12", 12).fit(x)
    pca = PCATransform(48, "ip", "pca12", 12).fit(x)
    assert not lean.query_aware
    np.testing.assert_allclose(np.abs(lean.apply(x[:50])), np.abs(pca.apply(x[:50])), atol=1e-4)


def test_frank_wolfe_never_raises_the_loss(rng):
    x, q, _ = ood_data(rng, d=24)
    k_q, k_x = q.T.astype(np.float64) @ q / len(q), x.T.astype(np.float64) @ x / len(x)
    start = np.linalg.eigh(k_x)[1][:, ::-1][:, :6]
    a, b = frank_wolfe(k_q, k_x, start)
    assert leanvec_loss(k_q, k_x, a, b) <= leanvec_loss(k_q, k_x, start, start) + 1e-9


def test_leanvec_chain_learns_from_sample_queries(rng):
    x, q_train, q_test = ood_data(rng)
    codec = make_codec("leanvec12,float32", 48, "ip").fit(x, queries=q_train)
    again = load_codec(save_codec(codec))
    assert again.transforms[0].query_aware
    np.testing.assert_allclose(again.forward_query(q_test[:5]), codec.forward_query(q_test[:5]))


def test_bf16_rounds_to_nearest_even(rng):
    x = (rng.normal(size=(200, 16)) * 10.0 ** rng.integers(-3, 6, size=(200, 1))).astype(np.float32)
    codec = make_codec("bf16", 16, "ip").fit(x)
    y = codec.decode(codec.encode(x))
    assert np.all(np.abs(y - x) <= np.abs(x) * 2.0**-8)  # half an ulp of an 8-bit mantissa
    # exact ties round to the even mantissa
    tie = np.array([[1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8] + [0.0] * 14], dtype=np.float32)
    assert codec.decode(codec.encode(tie))[0, :2].tolist() == [1.0, 1.0 + 2 * 2.0**-7]
    assert np.abs(codec.decode(codec.encode(np.full((1, 16), 3e38, np.float32)))).max() < np.inf


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(2, 40),
    d=st.integers(2, 24),
    out=st.integers(1, 24),
    tail=st.sampled_from(["float32", "float16", "bf16", "int8"]),
    head=st.sampled_from(["pca", "mrl"]),
)
def test_chain_shapes_and_dtypes(n, d, out, tail, head):
    out = min(out, d)
    x = np.random.default_rng(n * 31 + d).normal(size=(n, d)).astype(np.float32)
    codec = make_codec(f"{head}{out},{tail}", d, "ip").fit(x)
    codes = codec.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (n, codec.code_size)
    back = codec.decode(codes)
    assert back.dtype == np.float32 and back.shape == (n, d)
