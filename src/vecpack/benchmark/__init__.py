"""The benchmark behind ``vecpack bench``: every codec against exact float32 and FAISS, on one dataset.

``run_benchmark(dataset, out_dir)`` measures, per codec, bytes per vector,
fit + encode time, recall@k against exact float32 search (with and without
re-ranking, and a re-rank sweep for binary and PQ), nDCG@k where the dataset
has relevance labels, and QPS on a batch of queries at 1 thread and at all
threads, both at scan level (arrays in, row numbers out) and end to end
through ``Collection.search``. FAISS flat indexes run in the same process
with the same queries and thread counts. Results go to ``<dataset>.json``,
``<dataset>.md`` and ``<dataset>.png`` in ``out_dir``.
"""

from vecpack.benchmark.runner import default_codecs, run_benchmark

__all__ = ["default_codecs", "run_benchmark"]
