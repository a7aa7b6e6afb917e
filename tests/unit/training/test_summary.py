"""data/train_metrics/METHOD.json: a run's weights in a few numbers, from a log_history written by hand."""

import pytest

from iwsft.training.summary import train_metrics, weight_summary

LOG = [
    {"loss": 2.0, "step": 10, "weight_mean": 1.0, "weight_std": 0.1, "ess": 0.99, "weight_max": 1.5},
    {"loss": 1.5, "step": 20, "weight_mean": 2.0, "weight_std": 0.3, "ess": 0.95, "weight_max": 3.0,
     "weight_normalizer": 1.9},
    {"loss": 1.2, "step": 30, "weight_mean": 3.0, "weight_std": 0.2, "ess": 0.97, "weight_max": 2.5},
    {"train_runtime": 9.0, "train_loss": 1.6, "step": 30},  # HF's final summary row
]


def test_weight_summary_by_hand():
    assert weight_summary(LOG) == pytest.approx({
        "weight_mean": 2.0, "weight_mean_first": 1.0, "weight_mean_last": 3.0, "weight_std": 0.2, "weight_max": 3.0,
        "ess": 0.97, "ess_min": 0.95, "weight_normalizer": 1.9})


def test_train_metrics_for_an_iw_method_and_for_sft():
    assert train_metrics("iwsft", LOG) == pytest.approx({"method": "iwsft", "steps": 30, "train_loss": 1.6,
                                                         **weight_summary(LOG)})
    sft = [{k: v for k, v in row.items() if not k.startswith(("weight", "ess"))} for row in LOG]
    assert weight_summary(sft) is None
    assert train_metrics("sft", sft) == {"method": "sft", "steps": 30, "train_loss": 1.6}
    assert train_metrics("dft", []) == {"method": "dft", "steps": 0, "train_loss": None}
