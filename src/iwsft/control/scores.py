"""The control pipeline's score: a return normalised between the random policy's and the best
episode's in the data (D4RL's normalised score, with the data's best standing in for an expert)."""

from __future__ import annotations


def normalised_score(value: float, random: float, best: float) -> float:
    """100 (R - R_random) / (R_best_in_data - R_random)."""
    return 100.0 * (value - random) / (best - random)
