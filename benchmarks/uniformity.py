"""Time of one latent-uniformity run on 10,000 x 32 vectors: plain sklearn t-SNE + scipy KDE versus the library.

Rows: (a) the straightforward path, `TSNE(perplexity=30, random_state=seed)` with sklearn's defaults and
`gaussian_kde(emb.T)(emb.T)`; (b) `uniformity.single_run` on the same sampled vectors, which must give the
same numbers; (c) the library with fewer t-SNE iterations (`--max-iter`, values change: the drift is shown);
(d) with --workers W, `uniformity_metrics` over W seeds in W processes (wall time for all of them).

    python benchmarks/uniformity.py                    # 10,000 x 32, seed 0, plus max_iter 500
    python benchmarks/uniformity.py --n 2000 --max-iter 500 750 --workers 2
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from vavae_lab.analysis import uniformity


def straightforward(x: np.ndarray, seed: int, perplexity: float) -> dict:
    """sklearn TSNE with its defaults and scipy's gaussian_kde evaluated at the points, timed stage by stage."""
    from scipy.stats import gaussian_kde
    from sklearn.manifold import TSNE

    t0 = time.perf_counter()
    emb = TSNE(n_components=2, perplexity=perplexity, random_state=seed).fit_transform(x)
    t1 = time.perf_counter()
    dens = gaussian_kde(emb.T)(emb.T)
    t2 = time.perf_counter()
    return {**uniformity.metrics_of(dens), "tsne_seconds": t1 - t0, "kde_seconds": t2 - t1, "seconds": t2 - t0}


def main() -> None:
    """Parse the options, run every row and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000, help="latent vectors (paper: 10,000)")
    parser.add_argument("--dim", type=int, default=32, help="channels per vector (f16d32: 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--perplexity", type=float, default=30.0)
    parser.add_argument("--max-iter", type=int, nargs="*", default=[500], help="extra rows with fewer iterations")
    parser.add_argument("--workers", type=int, default=0, help="also time this many seeds in parallel processes")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    latents = rng.standard_normal((args.n, args.dim)).astype(np.float32)  # random channel-normalised latents
    vectors = uniformity.sample_vectors(latents, args.n, seed=args.seed)  # the rows single_run will draw

    print(f"{args.n} x {args.dim} vectors, perplexity {args.perplexity}, seed {args.seed}, "
          f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.2f} at start)")
    rows = [("(a) sklearn TSNE defaults + scipy KDE", straightforward(vectors, args.seed, args.perplexity))]
    rows.append(("(b) uniformity.single_run", uniformity.single_run(latents, n=args.n, seed=args.seed,
                                                                    perplexity=args.perplexity)))
    for it in args.max_iter:
        rows.append((f"(c) single_run max_iter={it}", uniformity.single_run(
            latents, n=args.n, seed=args.seed, perplexity=args.perplexity, max_iter=it)))
    if args.workers > 1:
        t0 = time.perf_counter()
        res = uniformity.uniformity_metrics(latents, n=args.n, runs=args.workers, seed=args.seed,
                                            perplexity=args.perplexity, workers=args.workers)
        wall = time.perf_counter() - t0
        rows.append((f"(d) {args.workers} seeds, workers={args.workers} (mean)",
                     {**{k: res[k]["mean"] for k in uniformity.METRICS}, "tsne_seconds": float("nan"),
                      "kde_seconds": float("nan"), "seconds": wall}))

    print(f"{'path':42s} {'t-SNE s':>8s} {'KDE s':>7s} {'total s':>8s} "
          + " ".join(f"{m.short:>8s}" for m in uniformity.METRICS.values()))
    for name, r in rows:
        print(f"{name:42s} {r['tsne_seconds']:8.1f} {r['kde_seconds']:7.2f} {r['seconds']:8.1f} "
              + " ".join(f"{r[k]:8.5f}" for k in uniformity.METRICS))
    a, b = rows[0][1], rows[1][1]
    same = all(a[k] == b[k] for k in uniformity.METRICS)
    print(f"(a) and (b) give {'identical' if same else 'DIFFERENT'} metrics")


if __name__ == "__main__":
    main()
