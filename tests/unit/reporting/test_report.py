"""iwsft.reporting (report, tables, reading, plots): files, table rows, valid PNGs and the generated reading, from fake results."""

import csv
import json

import pytest

from iwsft.evaluation.stats import paired_difference
from iwsft.reporting.reading import bound_order, intervals_overlap
from iwsft.reporting.report import write_report
from iwsft.reporting.tables import ordered_methods, weight_snapshots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics(pass_at_1, low, high, j, iw, sft, **extra):
    return {"pass_at_1": pass_at_1, "pass_at_1_ci_low": low, "pass_at_1_ci_high": high, "greedy_accuracy": pass_at_1 + 0.02,
            "maj_at_k": pass_at_1 + 0.05, "k": 8, "coverage": min(1.0, pass_at_1 + 0.3), "c_ref": 0.30,
            "j_importance": j, "sft_bound": sft, "iw_bound": iw, "j_importance_ess": 150.0, "n_successes": 300,
            "n_prompts": 100, "n_samples": 10, **extra}


def _train_log(start, weighted):
    rows = []
    for step in range(10, 110, 10):
        row = {"step": step, "loss": start / (1 + step / 50), "sft_equivalent_loss": start / (1 + step / 60)}
        if weighted:
            row.update(weight_mean=1 + step / 500, weight_max=2 + step / 50, ess=1 - step / 400)
        rows.append(row)
    return rows + [{"step": 100, "train_runtime": 12.0, "train_loss": 1.1}]  # HF's final summary row


@pytest.fixture
def fake_results():
    weight_history = [{"step": s, "weights": [1.0 + 0.01 * i * s / 10 for i in range(32)]} for s in (1, 1, 50, 100)]
    return {
        # given out of order on purpose: the report sorts them base, sft, iwsft
        "iwsft": {"metrics": _metrics(0.46, 0.41, 0.51, 0.47, 0.44, 0.39, bound_q="ema"),
                  "train_log": _train_log(2.0, weighted=True), "weight_history": weight_history},
        "base": {"metrics": _metrics(0.30, 0.26, 0.34, 0.30, 0.30, 0.30, bound_q="pi_ref"), "train_log": None, "weight_history": None},
        "sft": {"metrics": _metrics(0.43, 0.38, 0.48, 0.45, None, 0.36, extra_nan=float("nan")),
                "train_log": _train_log(2.2, weighted=False), "weight_history": None},
    }


def test_write_report_writes_every_file(tmp_path, fake_results):
    report = write_report(fake_results, tmp_path / "reports", context={"seed": 0, "date": "2025-01-01",
                                                                       "train": {"steps": 100, "temp": 1.0}})
    out = tmp_path / "reports"
    assert report == out / "report.md"
    for name in ("report.md", "accuracy.png", "loss.png", "weights.png", "metrics.json",
                 "plots/accuracy.csv", "plots/loss.csv", "plots/train/sft.csv", "plots/train/iwsft.csv", "plots/ess/iwsft.csv"):
        assert (out / name).is_file(), name
    for name in ("accuracy.png", "loss.png", "weights.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC
        assert 5_000 < len(data) < 300_000, (name, len(data))


def test_report_table_and_reading(tmp_path, fake_results):
    text = write_report(fake_results, tmp_path, context={"seed": 0, "train": {"steps": 100}}).read_text()
    assert "- **seed**: 0" in text and "steps=100" in text
    assert ("| method | pass@1 ± 95% CI | greedy | maj@8 | coverage | J (IS est.) | iw bound | q of the iw bound "
            "| SFT bound |") in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "[" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| base (π_ref)", "| SFT", "| iw-SFT"]
    assert "| iw-SFT | 0.460 [0.410, 0.510] | 0.480 | 0.510 | 0.760 | 0.470 | 0.440 | EMA of θ | 0.390 |" in text
    sft_cells = rows[1].strip("| ").split(" | ")
    assert sft_cells[6:8] == ["–", "–"]  # plain SFT: no q, no iw bound
    assert "J ≥ SFT bound held for: SFT (no iw bound: these methods train with w = 1, no q)." in text
    assert "by construction" not in text  # no method trained with q = theta here
    assert "iw-SFT vs SFT: pass@1 0.460 vs 0.430, cannot be told apart" in text
    assert "iw-SFT vs base (π_ref): pass@1 0.460 vs 0.300, is better (95% CIs do not overlap)" in text
    assert "J ≥ iw bound ≥ SFT bound held for: base (π_ref), iw-SFT." in text
    for image in ("accuracy.png", "loss.png", "weights.png"):
        assert f"]({image})" in text


def test_report_says_when_the_iw_bound_is_j_by_construction(tmp_path, fake_results):
    fake_results["iwsft"]["metrics"].update(iw_bound=0.47, bound_q="theta")  # q = theta: iw bound = J
    text = write_report(fake_results, tmp_path, context=None).read_text()
    assert "| 0.470 | 0.470 | θ (bound = J) | 0.390 |" in text
    assert "iw-SFT trained with q = θ (train.q_mode: current), so their iw bound equals J by construction" in text


def test_paired_difference_by_hand():
    # diffs 0.5, 0.5, 0, 0.5: mean 0.375, sd = sqrt(3 * 0.125**2 + 0.375**2) / sqrt(3) = 0.25, se 0.125
    mean, low, high = paired_difference([1.0, 0.5, 0.5, 1.0], [0.5, 0.0, 0.5, 0.5])
    assert mean == pytest.approx(0.375) and high - mean == pytest.approx(1.959964 * 0.125, abs=1e-6)
    assert low == pytest.approx(0.375 - 0.244996, abs=1e-6)
    assert paired_difference([1.0], [0.0]) is None and paired_difference([1.0, 0.0], [0.0]) is None
    assert paired_difference(None, [0.0, 1.0]) is None


def test_reading_pairs_methods_on_their_prompts_when_it_can(tmp_path, fake_results):
    # Overlapping CIs, yet iw-SFT beats SFT on 3 of 4 prompts and ties the last: the paired test tells them apart.
    fake_results["iwsft"]["per_prompt"] = [1.0, 0.5, 0.5, 1.0]
    fake_results["sft"]["per_prompt"] = [0.5, 0.0, 0.5, 0.5]
    text = write_report(fake_results, tmp_path).read_text()
    assert ("iw-SFT vs SFT: pass@1 0.460 vs 0.430, is better (difference +0.375, paired 95% CI [+0.130, +0.620] "
            "over 4 prompts)") in text
    fake_results["iwsft"]["per_prompt"] = [1.0, 0.0, 0.5, 1.0]
    text = write_report(fake_results, tmp_path).read_text()
    assert "iw-SFT vs SFT: pass@1 0.460 vs 0.430, cannot be told apart (difference +0.250" in text
    assert "which includes 0)" in text and "not adjusted for the several made" in text
    assert "iw-SFT vs base (π_ref): pass@1 0.460 vs 0.300, is better (95% CIs do not overlap)" in text  # base: unpaired


def test_reading_flags_failed_bounds_thin_ess_and_j_outside_the_ci(tmp_path, fake_results):
    fake_results["iwsft"]["metrics"].update(iw_bound=0.30, j_importance_ess=4.0, j_importance=0.70)
    text = write_report(fake_results, tmp_path).read_text()
    assert "J ≥ SFT bound held for: SFT (no iw bound: these methods train with w = 1, no q)." in text
    assert "It did not hold for: iw-SFT (not iw ≥ SFT)." in text
    assert "J for iw-SFT rests on an effective sample size of 4.0 out of 300 successes" in text
    assert "iw-SFT: J = 0.700 lies outside its pass@1 CI" in text


def test_machine_readable_files(tmp_path, fake_results):
    write_report(fake_results, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics) == ["base", "sft", "iwsft"]
    assert metrics["sft"]["iw_bound"] is None and metrics["sft"]["extra_nan"] is None
    with open(tmp_path / "plots" / "accuracy.csv") as handle:
        accuracy = list(csv.DictReader(handle))
    assert list(accuracy[0]) == ["method", "pass_at_1", "ci_low", "ci_high", "greedy_accuracy", "maj_at_k", "coverage"]
    assert [row["method"] for row in accuracy] == ["base", "sft", "iwsft"]
    with open(tmp_path / "plots" / "loss.csv") as handle:
        loss = list(csv.DictReader(handle))
    assert list(loss[0]) == ["method", "step", "loss", "sft_equivalent_loss"]
    assert len(loss) == 20 and {row["method"] for row in loss} == {"sft", "iwsft"}  # summary rows dropped
    header = (tmp_path / "plots" / "train" / "iwsft.csv").read_text().splitlines()[0]
    assert header == "step,loss,sft_equivalent_loss,weight_mean,weight_max"
    assert (tmp_path / "plots" / "ess" / "iwsft.csv").read_text().splitlines()[0] == "step,ess"
    assert (tmp_path / "plots" / "train" / "sft.csv").read_text().splitlines()[0] == "step,loss,sft_equivalent_loss"
    assert not (tmp_path / "plots" / "ess" / "sft.csv").exists()  # plain SFT has no weights


def test_report_without_any_training_still_draws(tmp_path, fake_results):
    only_base = {"base": fake_results["base"]}
    write_report(only_base, tmp_path)
    assert (tmp_path / "weights.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "plots" / "loss.csv").read_text() == "method,step,loss,sft_equivalent_loss\n"


def test_helpers():
    assert ordered_methods({"iwsftq": 0, "custom": 0, "base": 0, "sft": 0}) == ["base", "sft", "iwsftq", "custom"]
    a = {"pass_at_1_ci_low": 0.1, "pass_at_1_ci_high": 0.3}
    assert intervals_overlap(a, {"pass_at_1_ci_low": 0.3, "pass_at_1_ci_high": 0.5}) is True
    assert intervals_overlap(a, {"pass_at_1_ci_low": 0.31, "pass_at_1_ci_high": 0.5}) is False
    assert intervals_overlap(a, {"pass_at_1_ci_low": None, "pass_at_1_ci_high": 0.5}) is None
    assert bound_order({"j_importance": 0.5, "iw_bound": 0.3, "sft_bound": 0.4}) == (True, True, False)
    assert bound_order({"j_importance": 0.5, "iw_bound": None, "sft_bound": 0.4}) is None
    first, last = weight_snapshots([{"step": 2, "weights": [1.0]}, {"step": 2, "weights": [3.0]}, {"step": 9, "weights": [5.0]}])
    assert first == (2, [1.0, 3.0]) and last == (9, [5.0])
    assert weight_snapshots(None) is None and weight_snapshots([{"step": 1, "weights": []}]) is None


def test_the_iw_methods_training_weights_stand_beside_their_result(tmp_path, fake_results):
    """weights_table: mean weight over the logged windows (first -> last), spread, max, ESS mean (lowest); SFT,
    which logs no weights, has no row; a self-normalised run says what it divided by."""
    from iwsft.training.summary import weight_summary

    summary = weight_summary(fake_results["iwsft"]["train_log"])  # weight_mean 1 + step/500, ess 1 - step/400
    assert summary["weight_mean"] == pytest.approx(1.11) and summary["weight_mean_first"] == pytest.approx(1.02)
    assert summary["weight_mean_last"] == pytest.approx(1.2) and summary["ess_min"] == pytest.approx(0.75)
    assert summary["ess"] == pytest.approx(1 - 55 / 400) and summary["weight_max"] == pytest.approx(4.0)
    assert summary["weight_std"] is None and summary["weight_normalizer"] is None
    assert weight_summary(fake_results["sft"]["train_log"]) is None
    text = write_report(fake_results, tmp_path).read_text()
    assert "### Importance weights in training" in text
    assert "| iw-SFT | 0.460 | 1.11 (1.02 → 1.20) | – | 4.00 | 0.863 (0.750) | none |" in text
    assert "| SFT | 0.430 |" not in text
    for row in fake_results["iwsft"]["train_log"][:-1]:
        row.update(weight_std=0.5, weight_normalizer=1.1)
    text = write_report(fake_results, tmp_path / "self").read_text()
    assert "| iw-SFT | 0.460 | 1.11 (1.02 → 1.20) | 0.50 | 4.00 | 0.863 (0.750) | step mean (1.10 on average) |" in text


def test_the_run_says_whose_log_probs_and_how_likely_a_completion_is(tmp_path, fake_results):
    """reference_context: the reference stage's summary.json as Run bullets; a summary without the figures
    (an older reference stage) adds nothing rather than failing."""
    from iwsft.reporting.tables import reference_context

    summary = {"policy": "base", "policy_model": "data/models/pi_ref", "completions": 64, "mean_completion_tokens": 28.0,
               "mean_logprob_per_completion": -28.3, "mean_logprob_per_token": -1.0107}
    text = write_report(fake_results, tmp_path, context={"seed": 0, **reference_context(summary)}).read_text()
    assert "- **reference policy (π_ref in the weights)**: base (data/models/pi_ref)" in text
    assert "- **mean tokens per completion**: 28.0 (model.base's tokenizer)" in text
    assert "- **mean log π_ref per completion**: -28.30 nats (-1.011 per token)" in text
    assert reference_context(None) == {} and reference_context({"examples": 3}) == {}
