"""Benchmark tooling (extra: bench): datasets, IR metrics, ``vecpack bench``, ``vecpack demo``, peers, load test.

The engine never imports this package; ``vecpack.cli`` imports it inside the ``bench`` and ``demo``
commands, and the scripts under ``bench/`` import it. Modules: ``datasets`` (BEIR / MNIST loaders, the
fitted synthetic generator), ``metrics`` (recall@k, nDCG@k), ``runner`` / ``report`` / ``ours`` /
``peers`` (the benchmark below), ``ann_peers`` (hnswlib, usearch, FAISS HNSW / IVF, ScaNN, SVS Vamana), ``codec_peers``
(FAISS codecs at a byte budget), ``timing``, ``serving`` (``vecpack serve`` as a child process),
``loadtest`` (``bench/load.py``), ``stress``, ``budget``, ``demo`` and ``pydoc`` (the demo's corpus).
Importing the package loads none of them.

The benchmark behind ``vecpack bench`` (``runner``): every codec against exact float32 and FAISS, on one
dataset. ``run_benchmark(dataset, out_dir)`` measures, per codec, bytes per vector,
fit + encode time, recall@k against exact float32 search (with and without
re-ranking, and a re-rank sweep for binary and PQ), nDCG@k where the dataset
has relevance labels, and QPS on a batch of queries at 1 thread and at all
threads, both at scan level (arrays in, row numbers out) and end to end
through ``Collection.search``. FAISS flat indexes run in the same process
with the same queries and thread counts. Results go to ``<dataset>.json``,
``<dataset>.md`` and ``<dataset>.png`` in ``out_dir``.
"""

import os

# benchmarks time kernels, never their numpy twins: no background warm-up (``kernels.warm``); every benchmark's
# untimed first call compiles what it measures
os.environ["VECPACK_WARMUP"] = "0"
