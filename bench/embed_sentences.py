"""Build the ``scifact-sentences`` ANN benchmark set: SciFact split into sentences, all-MiniLM-L6-v2.

Usage: python bench/embed_sentences.py [--source /work/shared/data/scifact] [--out DIR]

Every document's title (as its own sentence) and text, split on ``(?<=[.!?])\\s+``,
is embedded with :class:`vecpack.embeddings.Embedder`; sentences of fewer than 3
words are dropped. Ids are ``<docid>#<k>`` with k counting the kept sentences of
that document (the title, when kept, is k=0). Queries are the SciFact claims'
existing all-MiniLM-L6-v2 embeddings, copied from the source folder (a sample is
re-embedded to check that they come from the same model).

Writes ``corpus.npy``, ``corpus_ids.txt``, ``queries.npy``, ``queries_ids.txt``
and ``meta.json`` to ``$VECPACK_CACHE/scifact-sentences`` (default
``~/.cache/vecpack/scifact-sentences``). Embedding runs in chunks saved under
``parts/`` so an interrupted run resumes where it stopped; the parts are
removed once the corpus is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from vecpack.bench.datasets import SENTENCES_SET, cache_root, data_root

SPLIT = r"(?<=[.!?])\s+"
MIN_WORDS = 3
CHUNK = 2048
_SPLIT_RE = re.compile(SPLIT)


def split_corpus(path: Path) -> tuple[list[str], list[str]]:
    """(ids, sentences) for a BEIR corpus.jsonl, in file order; deterministic."""
    ids: list[str] = []
    sents: list[str] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            doc = str(rec["_id"])
            parts = [str(rec.get("title") or ""), *_SPLIT_RE.split(str(rec.get("text") or ""))]
            k = 0
            for p in parts:
                s = " ".join(p.split())
                if len(s.split()) < MIN_WORDS:
                    continue
                ids.append(f"{doc}#{k}")
                sents.append(s)
                k += 1
    return ids, sents


def _read_lines(path: Path) -> list[str]:
    return [s for s in (line.strip() for line in path.read_text().splitlines()) if s]


def _check_queries(emb, source: Path, qids: list[str], queries: np.ndarray, sample: int = 32) -> float:
    """Re-embed the first ``sample`` query texts; return the minimum cosine to the stored rows."""
    texts = {}
    with (source / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                texts[str(rec["_id"])] = str(rec.get("text", ""))
    ids = qids[:sample]
    fresh = emb.embed([texts[i] for i in ids])
    stored = queries[:sample] / np.linalg.norm(queries[:sample], axis=1, keepdims=True)
    return float(np.einsum("ij,ij->i", fresh, stored).min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_src = (data_root() or Path("/work/shared/data")) / "scifact"
    ap.add_argument("--source", type=Path, default=default_src, help="BEIR scifact folder")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: cache_root()/scifact-sentences)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()
    out: Path = args.out or cache_root() / SENTENCES_SET
    src: Path = args.source
    out.mkdir(parents=True, exist_ok=True)

    import torch

    torch.set_num_threads(args.threads)
    from vecpack.embeddings import MODEL_NAME, Embedder

    t0 = time.perf_counter()
    ids, sents = split_corpus(src / "corpus.jsonl")
    n = len(sents)
    digest = hashlib.sha256("\n".join(f"{i}\t{s}" for i, s in zip(ids, sents, strict=True)).encode()).hexdigest()
    print(f"{n} sentences from {src / 'corpus.jsonl'} (sha256 {digest[:12]})", flush=True)

    emb = Embedder(batch_size=args.batch_size)
    qids = _read_lines(src / "queries_ids.txt")
    queries = np.ascontiguousarray(np.load(src / "queries.npy"), dtype=np.float32)
    if len(qids) != len(queries) or queries.shape[1] != emb.dim:
        sys.exit(f"queries in {src} do not match: {len(qids)} ids, array {queries.shape}")
    agree = _check_queries(emb, src, qids, queries)
    if agree < 0.99:
        sys.exit(f"stored query embeddings in {src} do not match {MODEL_NAME} (min cosine {agree:.4f})")
    print(f"queries: {len(qids)} reused from {src / 'queries.npy'} (re-embedded sample, min cosine {agree:.5f})")

    parts = out / "parts"
    if (parts / "digest.txt").is_file() and (parts / "digest.txt").read_text().strip() != digest:
        shutil.rmtree(parts)  # a different split: the saved chunks do not apply
    parts.mkdir(exist_ok=True)
    (parts / "digest.txt").write_text(digest + "\n")
    n_chunks = (n + CHUNK - 1) // CHUNK
    t_embed, done_now = time.perf_counter(), 0
    for c in range(n_chunks):
        part = parts / f"{c:04d}.npy"
        if part.is_file():
            continue
        a, b = c * CHUNK, min(n, (c + 1) * CHUNK)
        vec = emb.embed(sents[a:b])
        np.save(parts / f"{c:04d}.tmp.npy", vec)
        (parts / f"{c:04d}.tmp.npy").replace(part)
        done_now += b - a
        rate = done_now / (time.perf_counter() - t_embed)
        left = n - b
        print(
            f"  chunk {c + 1}/{n_chunks}: {b}/{n} sentences, {rate:.0f}/s, ~{left / rate / 60:.1f} min left", flush=True
        )

    corpus = np.concatenate([np.load(parts / f"{c:04d}.npy") for c in range(n_chunks)])
    assert corpus.shape == (n, emb.dim) and corpus.dtype == np.float32
    np.save(out / "corpus.npy", corpus)
    (out / "corpus_ids.txt").write_text("\n".join(ids) + "\n")
    np.save(out / "queries.npy", queries)
    (out / "queries_ids.txt").write_text("\n".join(qids) + "\n")
    meta = {
        "name": SENTENCES_SET,
        "model": MODEL_NAME,
        "n": n,
        "dim": emb.dim,
        "n_queries": len(qids),
        "source": str(src / "corpus.jsonl"),
        "queries_source": str(src / "queries.npy"),
        "splitter": f"title + re.split({SPLIT!r}, text); whitespace collapsed; < {MIN_WORDS} words dropped",
        "ids": "<docid>#<k>, k counting kept sentences per document (title first)",
        "split_sha256": digest,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(parts)
    print(f"wrote {out}: corpus {corpus.shape}, queries {queries.shape} in {meta['seconds']:.0f} s")


if __name__ == "__main__":
    main()
