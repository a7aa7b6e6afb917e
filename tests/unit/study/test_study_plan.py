"""The study's plan, its reading of `dvc exp show --json`, and its statistics (the DVC runs themselves:
tests/integration/test_study.py)."""

import math
from pathlib import Path

import pytest
import yaml

from iwsft.config.loading import merge, read_yaml
from iwsft.config.schema import check
from iwsft.errors import UserError
from iwsft.study.plan import load_config, matches, plan
from iwsft.study.queue import Found, parse_show
from iwsft.study.report import Estimate, bounds_hold, markdown, reading, summarize

ROOT = Path(__file__).resolve().parents[3]
WRITTEN = {"methods": ["sft", "iwsft", "sftq", "iwsftq"], "seed": 0,
           "train": {"temp": 1.0, "w_max": 16.0, "q_mode": "current", "steps": 300}}


def typed(written: dict):
    """The project's params.yaml with `written` over it, checked: what `iwsft study` reads."""
    return check(merge(read_yaml(ROOT / "params.yaml"), written))


PARAMS = typed(WRITTEN)


def config_file(tmp_path, **content):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"seeds": [0, 1], "jobs": 2, **content}))
    return path


def test_plan_seed_runs_first_then_each_seeds_ablations_named_and_targeted(tmp_path):
    path = config_file(tmp_path, ablations=[{"param": "train.temp", "values": [0.5, 2.0]},
                                            {"param": "train.steps", "values": [900], "methods": ["sft", "iwsft"]}])
    experiments = plan(load_config(path, PARAMS))
    assert [e.name for e in experiments] == [
        "study-s0", "study-s1", "study-s0-temp-0p5", "study-s0-temp-2", "study-s0-steps-900",
        "study-s1-temp-0p5", "study-s1-temp-2", "study-s1-steps-900"]
    assert experiments[0].targets == ("report",) and experiments[0].set_params() == ["seed=0"]
    temp = experiments[2]
    assert temp.targets == ("evaluate@iwsft", "evaluate@iwsftq")  # default: the importance-weighted methods
    assert temp.set_params() == ["seed=0", "train.temp=0.5"]
    assert experiments[4].targets == ("evaluate@sft", "evaluate@iwsft")


def test_w_max_1e9_and_booleans_and_strings_are_set_as_yaml_reads_them(tmp_path):
    params = typed({**WRITTEN, "train": {**WRITTEN["train"], "per_token": False, "reduction": "token"}})
    path = config_file(tmp_path, ablations=[{"param": "train.w_max", "values": [1.0e9]},
                                            {"param": "train.per_token", "values": [True]},
                                            {"param": "train.reduction", "values": ["sequence"]}])
    by_name = {e.name: e for e in plan(load_config(path, params))}
    assert by_name["study-s1-w_max-1e09"].set_params()[1] == "train.w_max=1000000000.0"
    assert by_name["study-s1-per_token-true"].set_params()[1] == "train.per_token=true"
    assert by_name["study-s1-reduction-sequence"].set_params()[1] == 'train.reduction="sequence"'


@pytest.mark.parametrize("content, message", [
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"seeds": [1, 1]}, "distinct integers"),
    ({"jobs": 0}, "jobs must be an integer >= 1"),
    ({"ablations": [{"param": "train.tmep", "values": [2]}]}, "params.yaml has no key 'train.tmep'"),
    ({"ablations": [{"param": "train.temp", "values": [1.0, 2.0]}]}, "without params.yaml's own value"),
    ({"ablations": [{"param": "train.temp", "values": [2.0], "methods": ["dpo"]}]}, "methods ['dpo'] are not"),
    ({"sedes": [0]}, "unknown keys ['sedes']"),
    ({"ablations": [{"param": "train.w_max", "values": ["1.0e9"]}]}, "values ['1.0e9'] are not (YAML reads 1.0e9 as text"),
    ({"ablations": [{"param": "train.q_mode", "values": [2]}]}, "train.q_mode is a str in params.yaml"),
])
def test_a_bad_study_file_is_named_with_its_key(tmp_path, content, message):
    with pytest.raises(UserError, match="study.yaml") as error:
        load_config(config_file(tmp_path, **content), PARAMS)
    assert message in str(error.value)


def test_parse_show_reads_states_params_and_existing_metrics_of_the_head_commit_only():
    shown = [
        {"rev": "workspace", "experiments": None},
        {"rev": "aaa", "experiments": [{"name": "old", "revs": [{"name": "old", "data": {}}]}]},
        {"rev": "head", "experiments": [
            {"name": "study-s0", "executor": {"state": "success"}, "revs": [{"name": "study-s0", "data": {
                "params": {"params.yaml": {"data": {"seed": 0}}},
                "metrics": {"data/evaluate/sft/metrics.json": {"data": {"pass_at_1": 0.5}},
                            "data/evaluate/sftq/metrics.json": {"error": {"type": "FileNotFoundError"}}}}}]},
            {"name": "study-s1", "executor": {"state": "running"}, "revs": [{"name": "study-s1", "data": {}}]},
            {"name": "study-s2", "executor": None, "revs": [{"name": "study-s2", "data": {}}]},
        ]},
    ]
    found = parse_show(shown, "head")
    assert set(found) == {"study-s0", "study-s1", "study-s2"}
    assert found["study-s0"].metrics == {"data/evaluate/sft/metrics.json": {"pass_at_1": 0.5}}
    assert found["study-s1"].state == "running" and found["study-s2"].state == "success"  # committed, worker gone


def test_a_finished_experiment_with_other_params_is_stale(tmp_path):
    experiment = plan(load_config(config_file(tmp_path, ablations=[{"param": "train.temp", "values": [2.0]}]), PARAMS))[2]
    assert matches(experiment, {"seed": 0, "train": {"temp": 2.0}})
    assert not matches(experiment, {"seed": 0, "train": {"temp": 0.5}})
    assert not matches(experiment, {"seed": 0})


def test_estimate_is_a_student_t_interval_by_hand():
    # values 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 -> half-width 4.302653 / sqrt(3) = 2.484138
    estimate = Estimate.of([1.0, 2.0, 3.0])
    assert estimate.mean == 2.0 and estimate.n == 3 and estimate.positive == 3
    assert estimate.low == pytest.approx(2.0 - 2.484138, abs=1e-6) and estimate.high == pytest.approx(4.484138, abs=1e-6)
    single = Estimate.of([0.25, None])
    assert single.n == 1 and math.isnan(single.low) and single.text() == "0.250 (1 seed)"


def test_bounds_hold_checks_j_then_iw_then_sft():
    assert bounds_hold({"j_importance": -1.0, "iw_bound": -1.0, "sft_bound": -2.0})  # q = theta: iw = J
    assert not bounds_hold({"j_importance": -1.0, "iw_bound": -0.5, "sft_bound": -2.0})
    assert not bounds_hold({"j_importance": -1.0, "iw_bound": -3.0, "sft_bound": -2.0})
    assert bounds_hold({"j_importance": -1.0, "iw_bound": None, "sft_bound": -2.0})  # SFT: J >= SFT bound
    assert bounds_hold({}) is None


def finished(name, seed, scores, **extra):
    metrics = {f"data/evaluate/{m}/metrics.json": {"pass_at_1": v, "j_importance": 0.0, "sft_bound": -1.0,
                                                   "iw_bound": 0.0 if m.startswith("iw") else None,
                                                   "bound_q": "theta" if m.startswith("iw") else None}
               for m, v in scores.items()}
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
    rows = {r["model"]: r for r in summary["rows"]}
    assert rows["sft"]["minus_base"]["mean"] == pytest.approx(0.1) and rows["sft"]["bounds_held"] == 3
    pair = Estimate(**summary["pairs"][0]["difference"])
    assert (pair.mean, pair.n, pair.positive) == (pytest.approx(0.01), 3, 2)
    assert pair.low < 0 < pair.high
    assert "the interval contains 0: no difference shown (higher on 2 of 3 seeds)" in reading(summary)[0]
    ablation = summary["ablations"][0]
    assert ablation["seeds"] == 1 and ablation["effects"][0]["effect"]["mean"] == pytest.approx(0.35 - 0.31)
    assert summary["failed"] == ["study-s1-temp-2"]
    text = markdown(summary, config, 600.0, "abcdef")
    assert "| SFT | 3 | 0.400 [" in text and "**Failed experiments**" in text and "10.0 min" in text
