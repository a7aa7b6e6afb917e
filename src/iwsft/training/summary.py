"""A training run's importance weights in a few numbers, from the trainer's logged rows (HF's log_history):
what the train stage writes to data/train_metrics/METHOD.json (a DVC metric, which `iwsft study` reads) and
what the report shows beside each iw method's result. Plain Python (no torch), so the report imports it cheaply."""

from __future__ import annotations

import math


def _finite(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _mean(values) -> float | None:
    values = [v for v in map(_finite, values) if v is not None]
    return math.fsum(values) / len(values) if values else None


def weight_summary(log_history) -> dict | None:
    """The importance weights over training, from the logging rows (per optimizer step, averaged over each
    logging window; before any self-normalisation): their mean over the run, at the first and last logged
    window, their spread (std), the largest, the ESS as a fraction of the batch (mean and lowest), and with
    train.weight_normalization self the step mean they were divided by. None for a method that logged no
    importance weights (SFT, DFT, q_mode reference)."""
    rows = [row for row in (log_history or []) if "loss" in row and "ess" in row and "weight_mean" in row]
    if not rows:
        return None
    maxima = [_finite(row.get("weight_max")) for row in rows]
    return {
        "weight_mean": _mean(row["weight_mean"] for row in rows),
        "weight_mean_first": _finite(rows[0]["weight_mean"]),
        "weight_mean_last": _finite(rows[-1]["weight_mean"]),
        "weight_std": _mean(row.get("weight_std") for row in rows),
        "weight_max": max((m for m in maxima if m is not None), default=None),
        "ess": _mean(row["ess"] for row in rows),
        "ess_min": min((e for e in map(_finite, (row["ess"] for row in rows)) if e is not None), default=None),
        "weight_normalizer": _mean(row.get("weight_normalizer") for row in rows),
    }


def train_metrics(method: str, log_history) -> dict:
    """data/train_metrics/METHOD.json: the steps taken, the final training loss and, for an iw method,
    weight_summary's numbers (null where not logged)."""
    final = next((row for row in reversed(log_history or []) if "train_loss" in row), {})
    steps = max((row.get("step", 0) for row in log_history or []), default=0)
    return {"method": method, "steps": steps, "train_loss": _finite(final.get("train_loss")),
            **(weight_summary(log_history) or {})}
