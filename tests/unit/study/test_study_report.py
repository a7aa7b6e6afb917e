"""The study's statistics and its report: Student-t intervals over seeds, differences paired by seed,
the decision table per regime (iwsft.study.report, iwsft.study.document), from `dvc exp show` data made
by hand here (the DVC runs themselves: tests/integration/test_study.py)."""

import math
from pathlib import Path

import pytest
import yaml

from iwsft.config.loading import merge, read_yaml
from iwsft.config.schema import check
from iwsft.study.document import markdown, plots, reading
from iwsft.study.plan import load_config, plan
from iwsft.study.queue import Found
from iwsft.study.report import Estimate, bounds_hold, decision, summarize, train_stat

ROOT = Path(__file__).resolve().parents[3]
PARAMS = check(merge(read_yaml(ROOT / "params.yaml"), {"methods": ["sft", "iwsft", "sftq", "iwsftq"], "seed": 0,
                                                       "train": {"temp": 1.0, "w_max": 16.0}}))


def config_file(tmp_path, **content):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"seeds": [0, 1], "jobs": 2, **content}))
    return path


def test_estimate_is_a_student_t_interval_by_hand():
    # values 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 -> half-width 4.302653 / sqrt(3) = 2.484138
    estimate = Estimate.of([1.0, 2.0, 3.0])
    assert estimate.mean == 2.0 and estimate.n == 3 and estimate.positive == 3
    assert estimate.low == pytest.approx(2.0 - 2.484138, abs=1e-6) and estimate.high == pytest.approx(4.484138, abs=1e-6)
    single = Estimate.of([0.25, None])
    assert single.n == 1 and math.isnan(single.low) and single.text() == "0.250 (1 seed)"


def test_a_verdict_says_what_the_interval_shows_and_no_more():
    assert Estimate.of([0.1, 0.12, 0.11]).verdict() == "better"
    assert Estimate.of([-0.1, -0.12, -0.11]).verdict() == "worse"
    assert Estimate.of([0.1, -0.1, 0.05]).verdict() == "no difference shown"  # the CI contains 0
    assert Estimate.of([0.5]).verdict() == "one seed: no interval" and Estimate.of([]).verdict() == "n/a"


def test_bounds_hold_checks_j_then_iw_then_sft():
    assert bounds_hold({"j_importance": -1.0, "iw_bound": -1.0, "sft_bound": -2.0})  # q = theta: iw = J
    assert not bounds_hold({"j_importance": -1.0, "iw_bound": -0.5, "sft_bound": -2.0})
    assert not bounds_hold({"j_importance": -1.0, "iw_bound": -3.0, "sft_bound": -2.0})
    assert bounds_hold({"j_importance": -1.0, "iw_bound": None, "sft_bound": -2.0})  # SFT: J >= SFT bound
    assert bounds_hold({}) is None


def finished(name, seed, scores, train=None, **extra):
    metrics = {f"data/evaluate/{m}/metrics.json": {"pass_at_1": v, "j_importance": 0.0, "sft_bound": -1.0,
                                                   "iw_bound": 0.0 if m.startswith("iw") else None,
                                                   "bound_q": "theta" if m.startswith("iw") else None}
               for m, v in scores.items()}
    metrics.update({f"data/train_metrics/{m}.json": stats for m, stats in (train or {}).items()})  # the train stage's
    return Found(name, "success", {"seed": seed, **extra}, metrics)


def test_summary_pairs_by_seed_and_reads_honestly(tmp_path):
    path = config_file(tmp_path, seeds=[0, 1, 2], ablations=[{"param": "train.temp", "values": [2.0], "methods": ["iwsft"]}])
    config = load_config(path, PARAMS)
    experiments = plan(config)
    base = {0: 0.2, 1: 0.3, 2: 0.4}
    found = {f"study-s{s}": finished(f"study-s{s}", s, {"base": base[s], "sft": base[s] + 0.1, "iwsft": base[s] + 0.1 + d,
                                                         "sftq": base[s], "iwsftq": base[s]})
             for s, d in zip(range(3), (0.01, -0.01, 0.03))}
    found["study-s0-temp-2"] = finished("study-s0-temp-2", 0, {"iwsft": 0.35})
    found["study-s1-temp-2"] = Found("study-s1-temp-2", "failed")
    summary = summarize(config, experiments, found, PARAMS)
    [regime] = summary["regimes"]
    rows = {r["model"]: r for r in regime["rows"]}
    assert rows["sft"]["minus_base"]["mean"] == pytest.approx(0.1) and rows["sft"]["bounds_held"] == 3
    pair = Estimate(**regime["pairs"][0]["difference"])
    assert (pair.mean, pair.n, pair.positive) == (pytest.approx(0.01), 3, 2)
    assert pair.low < 0 < pair.high
    assert "the interval contains 0: no difference shown (higher on 2 of 3 seeds)" in reading(regime)[0]
    ablation = regime["ablations"][0]
    assert ablation["seeds"] == 1 and ablation["effects"][0]["effect"]["mean"] == pytest.approx(0.35 - 0.31)
    assert ablation["default"] == 1.0
    assert summary["failed"] == ["study-s1-temp-2"] and summary["regime_effects"] == []
    text = markdown(summary, config, 600.0, "abcdef")
    assert text.startswith("# Study: 3 seeds, 4 methods, 1 ablation settings")
    assert "| SFT | 3 | 0.400 [" in text and "**Failed experiments**" in text and "10.0 min" in text
    assert "mean weight" not in text  # no experiment carries training weight statistics: no empty column


def test_decision_names_the_best_method_and_the_comparisons_that_matter():
    score = {"sft": {0: 0.3, 1: 0.4, 2: 0.5}, "iwsft": {0: 0.4, 1: 0.5, 2: 0.62},
             "dft": {0: 0.3, 1: 0.38, 2: 0.48}, "sftq": {0: 0.1, 1: 0.1, 2: 0.1}, "iwsftq": {0: 0.1, 1: 0.12, 2: 0.1}}
    made = decision(("sft", "iwsft", "dft", "sftq", "iwsftq"), score)
    assert (made["best"], made["runner_up"]) == ("iwsft", "sft")
    pairs = {(p["method"], p["against"]): Estimate(**p["difference"]) for p in made["pairs"]}
    assert list(pairs) == [("iwsft", "sft"), ("dft", "sft"), ("sftq", "sft"), ("iwsftq", "sft"),
                           ("iwsftq", "sftq"), ("iwsft", "dft")]  # best − runner-up is iw-SFT − SFT, already there
    assert pairs[("iwsft", "sft")].mean == pytest.approx(0.32 / 3) and pairs[("iwsft", "sft")].verdict() == "better"
    assert pairs[("dft", "sft")].verdict() == "no difference shown"
    # a runner-up that is not SFT is compared with the best too
    made = decision(("sft", "iwsft", "dft"), {"sft": {0: 0.1, 1: 0.1}, "iwsft": {0: 0.3, 1: 0.4}, "dft": {0: 0.2, 1: 0.3}})
    assert [(p["method"], p["against"]) for p in made["pairs"]][-1] == ("iwsft", "dft")
    made = decision(("sft", "dft", "iwsft"), {"sft": {0: 0.1}, "iwsft": {0: 0.3}, "dft": {0: 0.4}})
    assert [(p["method"], p["against"]) for p in made["pairs"]][-1] == ("iwsft", "dft")  # one seed: still listed


def test_train_stat_reads_what_the_metrics_carry_and_nothing_else():
    found = finished("x", 0, {"iwsft": 0.3}, train={"iwsft": {"weight_mean": 2.5, "ess": 0.9}})
    assert train_stat(found, "iwsft", "weight_mean") == 2.5 and train_stat(found, "iwsft", "ess") == 0.9
    assert train_stat(found, "sft", "weight_mean") is None
    elsewhere = Found("z", "success", {}, {"data/train/iwsft/metrics.json": {"weight_mean": 3.0},
                                           "data/evaluate/iwsft/metrics.json": {"weight_mean": 9.0}})
    assert train_stat(elsewhere, "iwsft", "weight_mean") == 3.0 and train_stat(elsewhere, "iwsftq", "ess") is None
    assert train_stat(Found("x", "failed", {}, found.metrics), "iwsft", "ess") is None
    report = Found("y", "success", {}, {"reports/metrics.json": {"iwsft": {"mean_weight": 1.5, "ess": float("nan")}}})
    assert train_stat(report, "iwsft", "weight_mean") == 1.5 and train_stat(report, "iwsft", "ess") is None


def test_regimes_get_a_decision_table_each_and_are_compared_paired_by_seed(tmp_path):
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "teacher.yaml").write_text(yaml.safe_dump({"sample": {"k": 8}}))
    written = merge(read_yaml(ROOT / "params.yaml"), {"methods": ["sft", "iwsft", "dft"], "seed": 0})
    params = check(written)
    config = load_config(config_file(tmp_path, seeds=[0, 1, 2], regimes={"on-policy": {}, "teacher": {"profile": "teacher"}},
                                     ablations=[{"param": "train.temp", "values": [2.0], "regimes": ["teacher"]}]),
                         params, written, folder)
    experiments = plan(config)
    found = {}
    for s in range(3):
        found[f"study-on-policy-s{s}"] = finished(f"study-on-policy-s{s}", s, {"base": 0.2, "sft": 0.30 + 0.01 * s,
                                                                              "iwsft": 0.29 + 0.01 * s, "dft": 0.2})
        found[f"study-teacher-s{s}"] = finished(
            f"study-teacher-s{s}", s, {"base": 0.2, "sft": 0.4 + 0.01 * s, "iwsft": 0.45 + 0.02 * s, "dft": 0.41},
            train={"iwsft": {"weight_mean": 2.0 + s, "ess": 0.9}})
        found[f"study-teacher-s{s}-temp-2"] = finished(f"study-teacher-s{s}-temp-2", s, {"iwsft": 0.3})
    summary = summarize(config, experiments, found, params)
    on_policy, teacher = summary["regimes"]
    assert (on_policy["decision"]["best"], teacher["decision"]["best"]) == ("sft", "iwsft")
    assert on_policy["ablations"] == [] and teacher["ablations"][0]["effects"][0]["effect"]["n"] == 3
    rows = {r["model"]: r for r in teacher["rows"]}
    assert rows["iwsft"]["weights"]["weight_mean"]["mean"] == pytest.approx(3.0) and rows["sft"]["weights"] is None
    effects = {(e["model"], e["regime"], e["against"]): Estimate(**e["difference"]) for e in summary["regime_effects"]}
    assert effects[("sft", "teacher", "on-policy")].mean == pytest.approx(0.1)
    assert effects[("sft", "teacher", "on-policy")].verdict() == "better"  # the same shift on every seed: sd 0
    text = markdown(summary, config, 60.0, "abcdef")
    assert text.startswith("# Study: 2 regimes × 3 methods × 3 seeds, 1 ablation settings")
    table = text[text.index("## Decision"):text.index("## Regime on-policy")]
    assert "| regime | seeds | method | pass@1 | − SFT (paired) | reading | mean weight | ESS |" in table
    assert "| teacher | 3 | **iw-SFT** (best) | 0.470 [" in table and "| better | 3.00 | 0.90 |" in table
    assert "| on-policy | 3 | iw-SFT | 0.300 [0.275, 0.325] | -0.010 [-0.010, -0.010] | worse | — | — |" in table
    assert "- **teacher**: highest mean pass@1: iw-SFT; iw-SFT − DFT +0.060 [" in table
    assert "| train.temp | 2 (1) | 3 | iw-SFT | -0.170 [" in text  # paired with the teacher's own runs
    assert "profile teacher: sample.k=8; seeds [0, 1, 2]." in text
    assert "| SFT | teacher − on-policy | +0.100 [+0.100, +0.100] | better |" in text
    written_plots = plots(summary, tmp_path / "plots")
    assert [p.name for p in written_plots] == ["methods.png", "ablations.png"]
    assert all(p.stat().st_size > 0 for p in written_plots)
