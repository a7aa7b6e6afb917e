"""iwsft.evaluation.stats: hand-computed values, and the exact float expressions the persisted outputs
(metrics.json's se, the study's and control's t intervals, the promotion rule's paired se) were made with."""

import math

import numpy as np
import pytest

from iwsft.evaluation.stats import (
    Z_95,
    paired_difference,
    paired_mean_se,
    standard_error,
    t_for,
    t_half_width,
    t_interval,
    z_for,
)


def test_quantiles_by_hand():
    assert Z_95 == z_for(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert z_for(0.95, sides=1) == pytest.approx(1.644854, abs=1e-6)
    assert t_for(0.95, 4) == pytest.approx(2.776445, abs=1e-6)
    assert t_for(0.95, 1) == pytest.approx(12.706205, abs=1e-6)
    with pytest.raises(ValueError):
        z_for(1.0)


def test_standard_error_is_numpys_sd_over_sqrt_n_bit_for_bit():
    values = np.random.default_rng(0).random(37)
    assert standard_error(values) == float(values.std(ddof=1)) / float(np.sqrt(37))  # evaluate's pass@1 se
    assert standard_error(tuple(values)) == float(np.std(tuple(values), ddof=1) / np.sqrt(37))  # control's
    assert standard_error([1.0, 3.0]) == pytest.approx(1.0)  # sd sqrt(2), n 2
    assert standard_error([0.5]) is None and standard_error([]) is None


def test_t_interval_by_hand_and_bit_for_bit():
    # 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), t(0.975, 2) = 4.302653
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.302653 / math.sqrt(3), abs=1e-6) and mean - low == high - mean
    from scipy import stats

    values = np.random.default_rng(1).random(5)
    half = float(stats.t.ppf(0.5 + 0.95 / 2, 4) * values.std(ddof=1) / math.sqrt(5))  # the study's expression
    assert t_half_width(values) == half
    assert t_interval(values) == (float(values.mean()), float(values.mean()) - half, float(values.mean()) + half)
    one = t_interval([0.4])
    assert one[0] == 0.4 and math.isnan(one[1]) and math.isnan(one[2])
    assert t_half_width([0.4]) == 0.0


def test_paired_difference_by_hand():
    # diffs 0.5, 0.5, 0, 0.5: mean 0.375, sd 0.25, se 0.125
    assert paired_mean_se([1.0, 0.5, 0.5, 1.0], [0.5, 0.0, 0.5, 0.5]) == (0.375, 0.125)
    mean, low, high = paired_difference([1.0, 0.5, 0.5, 1.0], [0.5, 0.0, 0.5, 0.5])
    assert mean == 0.375 and high == 0.375 + Z_95 * 0.125 and low == 0.375 - Z_95 * 0.125
    assert paired_difference([1.0, 0.5, 0.5, 1.0], [0.5, 0.0, 0.5, 0.5], confidence=0.9)[2] == pytest.approx(
        0.375 + 1.644854 * 0.125, abs=1e-6)
    assert paired_mean_se([1.0], [0.0]) == (1.0, None)
    assert paired_difference([1.0], [0.0]) is None and paired_difference(None, [0.0, 1.0]) is None
