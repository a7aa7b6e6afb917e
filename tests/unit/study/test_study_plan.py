"""The study's plan and its reading of `dvc exp show --json` (regimes: test_study_regimes.py; the
statistics and the report: test_study_report.py; the DVC runs themselves: tests/integration/test_study.py)."""

from pathlib import Path

import pytest
import yaml

from iwsft.config.loading import merge, read_yaml
from iwsft.config.schema import check
from iwsft.errors import UserError
from iwsft.study.plan import load_config, matches, plan
from iwsft.study.queue import parse_show

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
    ({"ablations": [{"param": "train.temp", "values": [1.0, 2.0]}]}, "must not hold params.yaml's own value"),
    ({"ablations": [{"param": "train.temp", "values": [2.0], "methods": ["dpo"]}]}, "methods ['dpo'] are not"),
    ({"ablations": [{"param": "train.temp", "values": [2.0], "methods": ["dft"]}]}, "not in the study's methods"),
    ({"ablations": [{"param": "train.temp", "values": [2.0], "regimes": ["teacher"]}]}, "regimes ['teacher'] are not"),
    ({"sedes": [0]}, "unknown keys ['sedes']"),
    ({"methods": ["sft", "dpo"]}, "dpo"),
    ({"methods": ["sft", "sft"]}, "methods must be a non-empty list of distinct"),
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


def test_the_study_files_methods_are_set_on_every_run_and_ablate_within_them(tmp_path):
    path = config_file(tmp_path, methods=["sft", "iwsft", "dft"],
                       ablations=[{"param": "train.temp", "values": [2.0], "methods": ["dft", "iwsft"]}])
    config = load_config(path, PARAMS)
    assert config.methods == ("sft", "iwsft", "dft")
    experiments = plan(config)
    assert experiments[0].set_params() == ["seed=0", 'methods=["sft", "iwsft", "dft"]']  # a list Hydra reads
    assert experiments[2].targets == ("evaluate@dft", "evaluate@iwsft")
    assert matches(experiments[0], {"seed": 0, "methods": ["sft", "iwsft", "dft"]})
    assert not matches(experiments[0], {"seed": 0, "methods": ["sft", "iwsft", "sftq", "iwsftq"]})
    # params.yaml's own list: nothing to set
    same = load_config(config_file(tmp_path, methods=list(WRITTEN["methods"])), PARAMS)
    assert same.methods == () and plan(same)[0].set_params() == ["seed=0"]
