"""Dataset loading (real and fake folders), the synthetic generator and its fit to real embeddings."""

from __future__ import annotations

import gzip
import json
import struct
import time

import numpy as np
import pytest

from vecpack.bench import datasets
from vecpack.bench.datasets import (
    PROFILE_PATH,
    Profile,
    data_root,
    default_profile,
    fit_profile,
    load_dataset,
    n_clusters_for,
    synthetic,
)


def _real_root():
    root = data_root()
    if root is None:
        pytest.skip("shared data folder not found")
    return root


# --------------------------------------------------------------------------- locating data and bad specs


def test_data_root_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("VECPACK_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.setenv("VECPACK_DATA", str(tmp_path / "absent"))
    assert data_root() is None


@pytest.mark.parametrize("spec", ["sciface", "", "mnist:10", "SCIFACT"])
def test_unknown_spec(spec):
    with pytest.raises(ValueError, match="unknown dataset spec"):
        load_dataset(spec)


@pytest.mark.parametrize("spec", ["synthetic", "synthetic:abc", "synthetic:10:x", "synthetic:1:2:3", "synthetic:0"])
def test_malformed_synthetic_spec(spec):
    with pytest.raises(ValueError, match="synthetic"):
        load_dataset(spec)


@pytest.mark.parametrize(("n", "d", "nq"), [(0, 8, 1), (-5, 8, 1), (10, 0, 1), (10, 8, -1), (2.5, 8, 1)])
def test_synthetic_rejects_bad_sizes(n, d, nq):
    with pytest.raises(ValueError):
        synthetic(n, d, n_queries=nq)


def test_missing_data_names_spec_and_place(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"scifact.*corpus\.npy"):
        load_dataset("scifact", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="mnist"):
        load_dataset("mnist", root=tmp_path)


# --------------------------------------------------------------------------- fake folders (always run)


def _fake_beir(root, n=6, m=4, d=5):
    base = root / "scifact"
    (base / "qrels").mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(base / "corpus.npy", rng.normal(size=(n, d)).astype(np.float64))  # loader must cast
    np.save(base / "queries.npy", rng.normal(size=(m, d)).astype(np.float32))
    cids, qids = [f"d{i}" for i in range(n)], [f"q{i}" for i in range(m)]
    (base / "corpus_ids.txt").write_text("\n".join(cids) + "\n")
    (base / "queries_ids.txt").write_text("\n".join(qids) + "\n")
    (base / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t2\nq1\td0\t0\nq3\td5\t1\n")
    docs = [{"_id": c, "title": f"T{c}", "text": f"body {c}"} for c in reversed(cids)]  # file order != row order
    (base / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in docs) + "\n")
    (base / "queries.jsonl").write_text("\n".join(json.dumps({"_id": q, "text": f"ask {q}"}) for q in qids))
    return base


def test_beir_loader_on_fake_folder(tmp_path):
    _fake_beir(tmp_path)
    ds = load_dataset("scifact", root=tmp_path)
    assert ds.corpus.dtype == np.float32 and ds.corpus.flags.c_contiguous and ds.corpus.shape == (6, 5)
    assert ds.metric == "cosine" and ds.qrels == {"q1": {"d2": 2, "d0": 0}, "q3": {"d5": 1}}
    assert ds.query_ids == ["q0", "q1", "q2", "q3"]  # judged or not, every query is kept
    assert ds.texts[2] == "Td2 body d2" and ds.query_texts[3] == "ask q3"
    short = load_dataset("scifact", root=tmp_path, max_queries=2)
    assert short.query_ids == ["q0", "q1"] and short.queries.shape == (2, 5)
    np.testing.assert_array_equal(short.queries, ds.queries[:2])


def test_mnist_loader_on_fake_idx(tmp_path):
    (tmp_path / "mnist").mkdir()
    pix = np.arange(30 * 784, dtype=np.uint64).reshape(30, 784) % 256
    with gzip.open(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, 30, 28, 28) + pix.astype(np.uint8).tobytes())
    ds = load_dataset("mnist", root=tmp_path)
    assert ds.metric == "l2" and ds.qrels is None
    assert ds.corpus.shape == (27, 784) and ds.queries.shape == (3, 784)  # last tenth are queries
    np.testing.assert_allclose(ds.queries[-1], pix[-1] / 255, rtol=1e-6)
    assert ds.corpus_ids[:2] == ["0", "1"] and ds.query_ids == ["0", "1", "2"]


# --------------------------------------------------------------------------- synthetic generator


def test_synthetic_shape_norm_and_provenance():
    ds = synthetic(3000, n_queries=50, seed=3)
    assert ds.corpus.shape == (3000, 384) and ds.queries.shape == (50, 384)
    assert ds.corpus.dtype == np.float32 and ds.corpus.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(ds.corpus, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ds.queries, axis=1), 1, atol=1e-5)
    assert ds.metric == "cosine" and ds.qrels is None and ds.corpus_ids[-1] == "2999"
    assert "synthetic" in ds.note and "SciFact" in ds.note and "fitted" in ds.note
    assert load_dataset("synthetic:200:16", max_queries=7).queries.shape == (7, 16)


def test_synthetic_is_deterministic_per_seed(monkeypatch):
    monkeypatch.setattr(datasets, "_CHUNK_ROWS", 512)  # several chunks, run on threads
    a, b, c = (synthetic(3000, 32, n_queries=600, seed=s) for s in (5, 5, 6))
    assert a.corpus.tobytes() == b.corpus.tobytes() and a.queries.tobytes() == b.queries.tobytes()
    assert not np.array_equal(a.corpus, c.corpus)
    assert not np.isin(a.queries[:, 0], a.corpus[:, 0]).any()  # queries are fresh draws


@pytest.mark.parametrize("d", [16, 100, 512])
def test_synthetic_other_dims_keep_spectrum_shape(d):
    ds = synthetic(4000, d, n_queries=10)
    x = ds.corpus - ds.corpus.mean(0)
    ev = np.linalg.eigvalsh(x.T @ x / len(x))[::-1]
    ref = default_profile().eigvals
    # the leading fraction of directions carries about the same share of variance
    for frac in (0.05, 0.25):
        got = ev[: max(1, round(frac * d))].sum() / ev.sum()
        want = ref[: round(frac * len(ref))].sum() / ref.sum()
        assert got == pytest.approx(want, rel=0.3)


def test_cluster_count_grows_as_sqrt_n():
    prof = default_profile()
    k0 = len(prof.weights)
    assert n_clusters_for(prof, 100) == k0 == n_clusters_for(prof, prof.n_fit)
    assert n_clusters_for(prof, 4 * prof.n_fit) == 2 * k0


def test_packaged_profile_is_small_and_sane():
    assert PROFILE_PATH.stat().st_size < 1.5e6
    p = default_profile()
    assert p.dim == 384 and "SciFact" in p.note
    np.testing.assert_allclose(p.within_vecs.T @ p.within_vecs, np.eye(384), atol=1e-4)
    np.testing.assert_allclose(p.between_vecs.T @ p.between_vecs, np.eye(63), atol=1e-4)
    assert p.weights.sum() == pytest.approx(1, abs=1e-5) and (np.diff(p.weights) <= 0).all()
    assert (p.between_vals > 0).all() and (p.within_vals >= 0).all()
    assert p.between_vals.sum() / p.eigvals.sum() == pytest.approx(0.29, abs=0.03)
    assert 0 < p.anisotropy < 100 and p.query_noise > 0


def test_fit_profile_roundtrip_and_self_consistency(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(8, 24)) * 2
    x = centers[rng.integers(0, 8, 1500)] + rng.normal(size=(1500, 24))
    prof = fit_profile(x, 8, queries=x[:100] + rng.normal(size=(100, 24)), note="toy")
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert prof.eigvals.sum() == pytest.approx(u.var(axis=0).sum(), rel=1e-4)
    assert prof.between_vals.sum() / prof.eigvals.sum() > 0.5  # strongly clustered toy data
    assert len(prof.weights) == 8 and prof.query_noise > 0
    prof.save(tmp_path / "p.npz")
    back = Profile.load(tmp_path / "p.npz")
    assert back.note == "toy" and back.n_fit == 1500 and back.anisotropy == pytest.approx(prof.anisotropy)
    np.testing.assert_array_equal(back.within_vecs, prof.within_vecs)
    syn = synthetic(1500, 24, n_queries=0, profile=back)
    s = syn.corpus - syn.corpus.mean(0)
    ev = np.linalg.eigvalsh(s.T @ s / len(s))[::-1]
    np.testing.assert_allclose(ev[:3] / ev.sum(), prof.eigvals[:3] / prof.eigvals.sum(), rtol=0.25)
    with pytest.raises(ValueError):
        fit_profile(x[:5], 8)


# --------------------------------------------------------------------------- real data


def test_real_beir_sets_load():
    root = _real_root()
    sci = load_dataset("scifact", root=root)
    assert sci.corpus.shape == (5183, 384) and sci.queries.shape == (1109, 384)
    assert sum(q in sci.qrels for q in sci.query_ids) == 300 and len(sci.texts) == 5183 and sci.texts[0]
    ms = load_dataset("msmarco-dl19", root=root)
    assert ms.corpus.shape == (5000, 384) and len(ms.query_ids) == 50  # 43 of them judged
    np.testing.assert_allclose(np.linalg.norm(ms.corpus, axis=1), 1, atol=1e-4)


def test_real_mnist_loads():
    ds = load_dataset("mnist", root=_real_root())
    assert ds.corpus.shape == (9000, 784) and ds.queries.shape == (1000, 784) and ds.metric == "l2"
    assert ds.corpus.dtype == np.float32 and 0 <= ds.corpus.min() and ds.corpus.max() == 1.0


def _nn_stats(x, q=None, m=1000):
    """Mean NN1 cosine, mean NN10 cosine, mean cosine of ``m`` queries (default: corpus rows, self excluded)."""
    self_q = q is None
    q = x[:m] if self_q else q[:m]
    s = q @ x.T
    total, count = s.sum(dtype=np.float64), s.size
    if self_q:
        total, count = total - np.trace(s), count - len(q)
        s[np.arange(len(q)), np.arange(len(q))] = -np.inf
    top = -np.sort(np.partition(-s, 9, axis=1)[:, :10], axis=1)
    return top[:, 0].mean(), top[:, 9].mean(), total / count


def test_synthetic_fits_real_scifact():
    real = load_dataset("scifact", root=_real_root())
    syn = synthetic(20_000, n_queries=300, seed=11)
    # spectrum: top-10 eigenvalue fractions within 25 % relative
    fr = []
    for x in (real.corpus, syn.corpus):
        xc = x - x.mean(0)
        ev = np.linalg.eigvalsh(xc.T @ xc / len(x))[::-1]
        fr.append(ev[:10] / ev.sum())
    np.testing.assert_allclose(fr[1], fr[0], rtol=0.25)
    np.testing.assert_allclose(np.linalg.norm(syn.corpus, axis=1).mean(), 1.0, atol=1e-5)
    # neighbour difficulty at the same corpus size
    n = len(real.corpus)
    r1, r10, rmean = _nn_stats(real.corpus)
    s1, s10, smean = _nn_stats(syn.corpus[:n])
    assert s1 == pytest.approx(r1, abs=0.05) and s10 == pytest.approx(r10, abs=0.06)
    assert smean == pytest.approx(rmean, abs=0.03)
    assert s10 / smean == pytest.approx(r10 / rmean, rel=0.15)
    q1, _, _ = _nn_stats(real.corpus, real.queries)
    sq1, _, _ = _nn_stats(syn.corpus[:n], syn.queries)
    assert sq1 == pytest.approx(q1, abs=0.05) and sq1 < s1  # queries sit further out, as real ones do


@pytest.mark.slow
def test_synthetic_million_is_fast_and_lean():
    t = time.perf_counter()
    ds = synthetic(1_000_000, 384)
    assert time.perf_counter() - t < 30
    assert ds.corpus.shape == (1_000_000, 384) and ds.corpus.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ds.corpus[::997], axis=1), 1, atol=1e-5)


# --------------------------------------------------------------------------- scifact-sentences (cache)


def test_sentences_missing_cache_says_how_to_build(tmp_path, monkeypatch):
    monkeypatch.setenv("VECPACK_CACHE", str(tmp_path))
    assert datasets.cache_root() == tmp_path
    with pytest.raises(FileNotFoundError, match=r"scifact-sentences.*corpus\.npy.*bench/embed_sentences\.py"):
        load_dataset("scifact-sentences")


def test_real_sentences_load():
    if not (datasets.cache_root() / "scifact-sentences" / "corpus.npy").is_file():
        pytest.skip("scifact-sentences not built (python bench/embed_sentences.py)")
    ds = load_dataset("scifact-sentences", max_queries=100)
    n, d = ds.corpus.shape
    assert n >= 30_000 and d == 384 and ds.dim == 384
    assert ds.corpus.dtype == np.float32 and ds.queries.dtype == np.float32
    assert ds.queries.shape == (100, 384) and len(ds.query_ids) == 100
    assert np.isfinite(ds.corpus).all() and np.isfinite(ds.queries).all()
    np.testing.assert_allclose(np.linalg.norm(ds.corpus, axis=1), 1, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(ds.queries, axis=1), 1, atol=1e-3)
    assert len(ds.corpus_ids) == n and len(set(ds.corpus_ids)) == n
    assert all("#" in i for i in ds.corpus_ids[:100])
    assert ds.qrels is None and ds.metric == "cosine"
