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
