"""Quality sampling for SFT(Q) and iw-SFT(Q) (PAPER.md section 8, item 8): percentile thresholds of a
score, and how many of them each example reaches. numpy only, so that the quality stage, which needs
nothing else, starts without torch.
"""

from __future__ import annotations

import numpy as np


def quality_thresholds(scores, percentiles=(90, 95, 98)) -> np.ndarray:
    """Score thresholds at the given percentiles (SFT(Q): 90, 95, 98)."""
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        raise ValueError("quality_thresholds needs at least one score")
    if not np.all(np.isfinite(values)):
        raise ValueError("quality scores must be finite")
    return np.percentile(values, list(percentiles))


def quality_multiplicity(scores, percentiles=(90, 95, 98)) -> np.ndarray:
    """How many thresholds each example reaches (0..len(percentiles)).

    Sampling uniformly from D_{>=p90} + D_{>=p95} + D_{>=p98} is the same as sampling each example
    with probability proportional to this count (PAPER.md section 8, item 8).
    """
    values = np.asarray(scores, dtype=np.float64)
    thresholds = quality_thresholds(values, percentiles)
    return (values[:, None] >= thresholds[None, :]).sum(axis=1).astype(np.int64)
