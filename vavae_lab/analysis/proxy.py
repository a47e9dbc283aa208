"""Whether a cheap proxy ranks tokenizers like the full gFID: Spearman's rank correlation."""
from __future__ import annotations

import numpy as np


def spearman(x, y) -> float:
    """Spearman rank correlation of two equally long sequences (average ranks for ties)."""
    from scipy.stats import spearmanr

    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"need two sequences of the same length >= 3, got {len(x)} and {len(y)}")
    return float(spearmanr(np.asarray(x, float), np.asarray(y, float)).statistic)
