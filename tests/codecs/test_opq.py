"""OPQ rotation (``opq<M>``): orthogonality, lower PQ error than plain PQ, chains, save/load, bad specs."""

from __future__ import annotations

import numpy as np
import pytest

from vecpack.codecs import load_codec, make_codec, save_codec
from vecpack.codecs.opq import OPQTransform, cluster_means, eigenvalue_allocation, procrustes
from vecpack.errors import InvalidInput, UnknownSpec
from vecpack.kernels.topk import new_heaps, sort_heaps


@pytest.fixture(scope="module")
def correlated() -> np.ndarray:
    """2000 x 32 float32 with a decaying spectrum in random directions: PQ's sub-spaces see correlated, uneven data."""
    rng = np.random.default_rng(7)
    basis, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    scales = np.exp(-np.arange(32) / 6.0)
    return ((rng.normal(size=(2000, 32)) * scales) @ basis.T).astype(np.float32)


def rel_error(codec, x) -> float:
    x_hat = codec.decode(codec.encode(x))
    return float(np.linalg.norm(x - x_hat) / np.linalg.norm(x))


@pytest.fixture(scope="module")
def opq_pq(correlated):
    return make_codec("opq4,pq4", 32, "l2").fit(correlated)


def test_rotation_is_orthogonal(opq_pq):
    r = opq_pq.transforms[0].rotation
    assert r.shape == (32, 32) and r.dtype == np.float32
    np.testing.assert_allclose(r @ r.T, np.eye(32), atol=1e-5)
    assert opq_pq.transforms[0].lossless and opq_pq.lossless_transforms


def test_opq_beats_plain_pq_on_correlated_data(correlated, opq_pq):
    plain = make_codec("pq4", 32, "l2").fit(correlated)
    assert rel_error(opq_pq, correlated) <= 0.9 * rel_error(plain, correlated)
    fast = make_codec("pq4x4fs", 32, "l2").fit(correlated)
    opq_fast = make_codec("opq4,pq4x4fs", 32, "l2").fit(correlated)
    assert rel_error(opq_fast, correlated) <= rel_error(fast, correlated)


def test_training_error_decreases(opq_pq):
    errors = opq_pq.transforms[0].errors
    assert len(errors) >= 10
    assert errors[-1] < errors[0]
    assert max(np.diff(errors)) <= 1e-3 * errors[0]  # alternating minimisation: no real increase


def test_rotation_preserves_scores(correlated, opq_pq, rng):
    """Queries are rotated like the data: chain scores are the (rotated) ADC scores of the reconstruction."""
    q = (correlated[:6] + 0.05 * rng.normal(size=(6, 32))).astype(np.float32)
    codes = opq_pq.encode(correlated)
    heaps = new_heaps(6, 20)
    opq_pq.scorer(q).scan(codes, 0, np.ones(len(codes), np.uint8), *heaps)
    sort_heaps(*heaps)
    x_hat = opq_pq.decode(codes).astype(np.float64)
    exact = -((q[:, None].astype(np.float64) - x_hat[None]) ** 2).sum(-1)
    np.testing.assert_allclose(heaps[0], np.take_along_axis(exact, heaps[1], 1), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("spec", ["opq4,pq4", "opq8,pq8x4fs"])
def test_chain_save_load_round_trip(correlated, spec):
    codec = make_codec(spec, 32, "ip").fit(correlated)
    loaded = load_codec(save_codec(codec))
    assert loaded.spec == spec
    np.testing.assert_array_equal(loaded.transforms[0].rotation, codec.transforms[0].rotation)
    codes = codec.encode(correlated)
    np.testing.assert_array_equal(loaded.encode(correlated), codes)
    np.testing.assert_array_equal(loaded.decode(codes), codec.decode(codes))


def test_bad_specs():
    with pytest.raises(UnknownSpec, match=r"'opq7'.*384 is not divisible by 7"):
        make_codec("opq7,pq48", 384, "ip")
    with pytest.raises(UnknownSpec, match="divisible by 0"):
        make_codec("opq0,pq48", 384, "ip")
    with pytest.raises(UnknownSpec, match="ends with the transform"):
        make_codec("opq48", 384, "ip")
    with pytest.raises(UnknownSpec, match="only the last element"):
        make_codec("pq48,opq48", 384, "ip")


def test_needs_enough_rows(correlated):
    with pytest.raises(InvalidInput, match="at least 256"):
        make_codec("opq4,pq4x4fs", 32, "ip").fit(correlated[:100])
    with pytest.raises(InvalidInput, match="at least 256"):
        OPQTransform(32, "ip", "opq4", 4).fit(correlated[:100])
    with pytest.raises(InvalidInput, match="rotation of shape"):
        OPQTransform(32, "ip", "opq4", 4).set_state({"rotation": np.eye(16, dtype=np.float32)})


def test_eigenvalue_allocation_balances_variance(correlated):
    r = eigenvalue_allocation(correlated, 4)
    np.testing.assert_allclose(r @ r.T, np.eye(32), atol=1e-5)
    var = (correlated @ r).var(axis=0).reshape(4, 8)
    log_products = np.log(var).sum(axis=1)
    plain = np.log(correlated.var(axis=0).reshape(4, 8)).sum(axis=1)
    assert np.ptp(log_products) < 0.2 * np.ptp(plain)  # products of variances nearly equal


def test_procrustes_recovers_rotation(rng):
    x = rng.normal(size=(500, 12)).astype(np.float32)
    r0, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    np.testing.assert_allclose(procrustes(x, x @ r0.astype(np.float32)), r0, atol=1e-5)


def test_cluster_means_match_loop(rng):
    xr = rng.normal(size=(300, 6)).astype(np.float32)
    old = rng.normal(size=(3, 256, 2)).astype(np.float32)
    codes = rng.integers(0, 40, size=(300, 3)).astype(np.uint8)  # clusters 40..255 stay empty
    got = cluster_means(xr, codes, old)
    for s in range(3):
        for c in range(256):
            members = xr[codes[:, s] == c, 2 * s : 2 * s + 2]
            want = members.mean(0) if len(members) else old[s, c]
            np.testing.assert_allclose(got[s, c], want, rtol=1e-5, atol=1e-6)
