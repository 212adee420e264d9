"""Fit the packaged synthetic-data profile to the SciFact all-MiniLM-L6-v2 embeddings.

Usage: python bench/fit_profile.py [--out src/vecpack/profiles/minilm384.npz]

The output holds derived statistics only (mean, covariance eigenbasis and
spectra, cluster weights, two fitted shape scalars), never the data itself.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from vecpack.bench.datasets import PROFILE_PATH, fit_profile, load_dataset, synthetic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=PROFILE_PATH)
    ap.add_argument("--clusters", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    ds = load_dataset("scifact")
    t0 = time.perf_counter()
    prof = fit_profile(
        ds.corpus,
        args.clusters,
        args.seed,
        queries=ds.queries,
        note=f"all-MiniLM-L6-v2 SciFact corpus embeddings ({len(ds.corpus)} x {ds.dim})",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    prof.save(args.out)
    ev = prof.eigvals
    print(f"fitted in {time.perf_counter() - t0:.1f} s -> {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    print(f"  clusters {len(prof.weights)}, between/total variance {prof.between_vals.sum() / ev.sum():.3f}")
    print(f"  anisotropy a = {prof.anisotropy:.3g}, query noise = {prof.query_noise:.3g}")
    print(f"  top-10 eigenvalue fractions {np.round(ev[:10] / ev.sum(), 4)}")
    syn = synthetic(len(ds.corpus), ds.dim, n_queries=len(ds.queries), seed=1, profile=prof)
    for name, x, q in (("real", ds.corpus, ds.queries), ("synthetic", syn.corpus, syn.queries)):
        s = x[:1000] @ x.T
        s[np.arange(1000), np.arange(1000)] = -np.inf
        top = -np.sort(-s, axis=1)[:, :10]
        mean_sim = float(s[np.isfinite(s)].mean())
        print(
            f"  {name:9s}: NN1 cos {top[:, 0].mean():.3f}, NN10 cos {top[:, 9].mean():.3f}, "
            f"mean cos {mean_sim:.3f}, NN10/mean {top[:, 9].mean() / mean_sim:.2f}, "
            f"query->NN1 cos {(q @ x.T).max(axis=1).mean():.3f}"
        )


if __name__ == "__main__":
    main()
