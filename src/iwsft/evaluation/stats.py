"""The project's statistics, written once: normal and Student-t quantiles, the standard error of a
mean, t intervals and paired differences. Every other module imports them from here (evaluate's
pass@1 CI, the report's reading, the promotion rule, the study's seed intervals, the control pipeline),
so that "95 %" or "se" means the same thing wherever a reader meets it.

Pure functions of numbers; no I/O. scipy (for Student's t) is imported only inside `t_for`, so the
modules that need only z (evaluate, the CLI) start without it.

Exact arithmetic is part of the contract: metrics.json and the registry's decisions are persisted, so
each function keeps the float expression its callers used before it moved here (e.g. the standard
error is numpy's sd(ddof=1) divided by sqrt(n), the paired one Python's sqrt(sum / (n - 1) / n));
the two differ in the last bits, so they are not merged.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

_NORMAL = NormalDist()


def z_for(confidence: float, sides: int = 2) -> float:
    """The normal quantile for a `confidence` interval: sides=2 -> 1.95996 at 0.95, sides=1 -> 1.64485.

    The one place a z comes from (evaluate's CIs, the report's paired intervals, the promotion rule),
    so that one `confidence` setting means the same everywhere.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    if sides not in (1, 2):
        raise ValueError(f"sides must be 1 or 2, got {sides!r}")
    return _NORMAL.inv_cdf(1.0 - (1.0 - confidence) / sides)


# The default 95 % two-sided quantile, derived (never typed in) so that metrics, the report and the
# promotion rule cannot disagree on what "95 %" means.
Z_95 = z_for(0.95)


def normal_cdf(x: float) -> float:
    """Phi(x), the standard normal CDF (the promotion rule's p-values)."""
    return _NORMAL.cdf(x)


def t_for(confidence: float, dof: int) -> float:
    """The two-sided Student-t quantile for `confidence` with `dof` degrees of freedom (2.776 at 0.95, dof 4)."""
    from scipy import stats  # here only: the CLI and evaluate start without scipy

    return float(stats.t.ppf(0.5 + confidence / 2, dof))


def standard_error(values) -> float | None:
    """sd(values, ddof=1) / sqrt(n), the standard error of their mean; None for fewer than 2 values.

    Computed in the values' own dtype (float64 for Python numbers), as float(sd) / float(sqrt(n)).
    """
    array = np.asarray(values)
    if array.size < 2:
        return None
    return float(array.std(ddof=1)) / float(np.sqrt(array.size))


def t_half_width(values, confidence: float = 0.95) -> float:
    """Half-width of the Student-t interval of the mean of `values` (0.0 for fewer than 2 values):
    t_for(confidence, n - 1) * sd(ddof=1) / sqrt(n)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size < 2:
        return 0.0
    return float(t_for(confidence, array.size - 1) * array.std(ddof=1) / np.sqrt(array.size))


def t_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean of `values`, for a handful of independent
    runs (seeds) where the normal approximation would be too narrow. low = high = nan for one value;
    ValueError for none."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(array.mean())
    if array.size < 2:
        return mean, math.nan, math.nan
    half = t_half_width(array, confidence)
    return mean, mean - half, mean + half


def paired_mean_se(a, b) -> tuple[float, float | None]:
    """Mean of the per-item differences a - b (same items, same order) and its standard error
    sqrt(sum (d - mean)^2 / (n - 1) / n); se None for fewer than 2 items."""
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)


def paired_difference(a, b, confidence: float = 0.95) -> tuple[float, float, float] | None:
    """(mean, low, high) of the per-item differences a - b (e.g. two models' success rates on the same
    prompts, in the same order), low/high a two-sided normal interval at `confidence`; None when they
    cannot be paired (missing, unequal lengths, fewer than 2 items).

    Pairing removes what the items share (a prompt's difficulty) from the spread: two means' CIs
    overlap far more often than their difference's CI contains 0.
    """
    if not a or not b or len(a) != len(b) or len(a) < 2:
        return None
    mean, se = paired_mean_se(a, b)
    z = z_for(confidence)
    return mean, mean - z * se, mean + z * se
