"""Quality sampling for SFT(Q) and iw-SFT(Q) (PAPER.md section 8, item 8): percentile thresholds of a
score, and how many of them each example reaches. numpy only, so that the quality stage, which needs
nothing else, starts without torch.
"""

from __future__ import annotations

import itertools

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


def coinciding_groups(thresholds) -> list[list[int]]:
    """Indices of the runs of equal neighbouring thresholds (they are sorted: percentiles of one score),
    e.g. [[0, 1, 2]] for 0 / 0 / 0: the (Q) methods' bins there are one bin, and the multiplicity skips
    levels (only 0 or 3 when all three are equal)."""
    groups = [list(run) for _, run in itertools.groupby(range(len(thresholds)), key=lambda i: thresholds[i])]
    return [group for group in groups if len(group) > 1]


def degenerate_scores(scores, percentiles, thresholds) -> dict:
    """What the quality stage reports whatever the methods: `constant_score` (every example scored alike,
    as success-rate scores are on data that is all successes: teacher data) and `coinciding_thresholds`
    (the percentiles that share a threshold)."""
    values = np.asarray(scores, dtype=np.float64)
    return {"constant_score": bool(values.size and values.min() == values.max()),
            "coinciding_thresholds": [[percentiles[i] for i in group] for group in coinciding_groups(list(thresholds))]}
