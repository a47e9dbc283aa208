"""Calibrating the uniformity metrics (notebook 03) on 2-D points of known uniformity, before reading them on t-SNE
maps: how far each metric moves with the sample size n and the KDE bandwidth, against how far it moves between
distributions that really differ."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError
from .uniformity import METRICS, kde_densities, metrics_of


def known_points(clustered: float, n: int, *, seed: int = 0, clusters: int = 10, width: float = 0.03) -> np.ndarray:
    """n points in the unit square: a fraction `clustered` in `clusters` tight Gaussian blobs (std `width`), the rest
    uniform. 0 is as uniform as a sample gets, 1 is ten classes' worth of equally dense clumps.

    The metrics read how unequal the density is *at the points*: they rise from 0 to about 0.5 (dense blobs beside a
    sparse background) and fall again towards 1, where every point sits in a blob as dense as the others, so ten
    clean clusters score nearly as uniform as noise (tests/test_uniformity.py)."""
    if not 0.0 <= clustered <= 1.0:
        raise ConfigError(f"clustered={clustered} must be a fraction in [0, 1]")
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(10_000).uniform(0.15, 0.85, size=(clusters, 2))  # the same blobs for every seed
    k = int(round(clustered * n))
    blob = centres[rng.integers(0, clusters, size=k)] + rng.normal(0.0, width, size=(k, 2))
    return np.concatenate([blob, rng.uniform(0.0, 1.0, size=(n - k, 2))])


def calibrate(fractions: Sequence[float], ns: Sequence[int], bandwidths: Sequence, *, seeds: Sequence[int] = (0, 1, 2)
              ) -> list[dict]:
    """One row per (clustered fraction, n, bandwidth): each metric's mean and spread (max - min) over `seeds`.
    A bandwidth of None is Scott's rule, the one the study uses."""
    rows = []
    for frac in fractions:
        for n in ns:
            for bw in bandwidths:
                runs = [metrics_of(kde_densities(known_points(frac, n, seed=s), bandwidth=bw)) for s in seeds]
                row = {"clustered": frac, "n": n, "bandwidth": "Scott" if bw is None else bw}
                for k in METRICS:
                    values = [r[k] for r in runs]
                    row.update({k: float(np.mean(values)), f"{k}_spread": float(max(values) - min(values))})
                rows.append(row)
    return rows


def settings_sweep(sources: dict, *, n: int, perplexities: Sequence[float], bandwidths: Sequence,
                   runs: Sequence[int] = (0, 1)) -> list[dict]:
    """The same latents (name -> a `sample_vectors` source) read at other settings: one row per (perplexity,
    bandwidth) with each source's density CV, Gini and entropy (mean over `runs`, each a fresh sample of n vectors
    and t-SNE seed), and per metric the difference second - first (`_diff`) and the same in units of the larger
    spread (max - min) of the two sources' runs (`_change`; with two runs a rough unit). The sign as the metric reads:
    negative density CV / Gini and positive entropy mean "more uniform"."""
    from .uniformity import embed_tsne, sample_vectors

    if len(sources) != 2:
        raise ConfigError(f"settings_sweep compares two latents, got {len(sources)}: {', '.join(sources)}")
    scores: dict = {}  # (name, perplexity, bandwidth) -> one metrics dict per run; each embedding serves every bw
    for name, source in sources.items():
        for p in perplexities:
            for r in runs:
                emb = embed_tsne(sample_vectors(source, n, seed=r), perplexity=p, seed=r)
                for bw in bandwidths:
                    scores.setdefault((name, p, bw), []).append(metrics_of(kde_densities(emb, bandwidth=bw)))
    (a, b), rows = list(sources), []
    for p in perplexities:
        for bw in bandwidths:
            row = {"perplexity": p, "bandwidth": "Scott" if bw is None else bw, "n": n, "runs": len(runs)}
            for k in METRICS:
                va, vb = ([s[k] for s in scores[(name, p, bw)]] for name in (a, b))
                spread = max(max(va) - min(va), max(vb) - min(vb), 1e-12)
                row.update({f"{k}_a": float(np.mean(va)), f"{k}_b": float(np.mean(vb)),
                            f"{k}_diff": float(np.mean(vb) - np.mean(va)),
                            f"{k}_change": float((np.mean(vb) - np.mean(va)) / spread)})
            rows.append(row)
    return rows


# settings_sweep's rows as table columns (study.show_table): per metric a, b, b - a and b - a in run ranges
SWEEP_COLUMNS = [("perplexity", "perplexity", ""), ("bandwidth", "bandwidth", ""),
                 *[c for k, m in METRICS.items() for c in ((f"{k}_a", f"{m.label} a", m.fmt), (f"{k}_b", "b", m.fmt),
                                                           (f"{k}_diff", "b - a", "+" + m.fmt),
                                                           (f"{k}_change", "in run ranges", "+.1f"))]]
