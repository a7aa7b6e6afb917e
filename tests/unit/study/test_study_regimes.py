"""The study's regimes (iwsft.study.regimes): a profile's keys or the study file's own, set with
`dvc exp run -S` on each of the regime's experiments; refused, naming the key, where `-S` cannot set it."""

import copy
from pathlib import Path

import pytest
import yaml

from iwsft.config.loading import load_params, merge, read_yaml
from iwsft.config.schema import check
from iwsft.errors import UserError
from iwsft.study.plan import load_config, plan
from iwsft.study.regimes import leaves, nested

ROOT = Path(__file__).resolve().parents[3]
WRITTEN = merge(read_yaml(ROOT / "params.yaml"), {"methods": ["sft", "iwsft", "dft"], "seed": 0})
PARAMS = check(WRITTEN)


def study(tmp_path, profiles: dict | None = None, written: dict = WRITTEN, **content):
    """A study file (and profiles/NAME.yaml files) in tmp_path, loaded against `written`."""
    folder = tmp_path / "profiles"
    folder.mkdir(exist_ok=True)
    for name, profile in (profiles or {}).items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(profile))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"seeds": [0, 1], "jobs": 2, **content}))
    return load_config(path, check(written), written, folder)


TEACHER = {"sample": {"k": 8, "temperature": 1.0}, "train": {"temp": 0.5}}  # k and temp change; temperature does not


def test_leaves_and_nested_are_inverse_on_a_params_document():
    tree = {"train": {"temp": 2.0, "token_clip": [0.2, 1.8]}, "seed": 3, "peft": {"target_modules": None}}
    assert leaves(tree) == {"train.temp": 2.0, "train.token_clip": [0.2, 1.8], "seed": 3, "peft.target_modules": None}
    assert nested(leaves(tree)) == tree


def test_a_profile_regime_sets_the_keys_it_changes_and_names_its_experiments(tmp_path):
    config = study(tmp_path, {"teacher": TEACHER}, regimes={"on-policy": {}, "teacher": {"profile": "teacher"}},
                   ablations=[{"param": "train.w_max", "values": [2.0], "regimes": ["teacher"]},
                              {"param": "train.temp", "values": [2.0]}])
    regimes = {r.name: r for r in config.regimes}
    assert regimes["on-policy"].overrides == {}
    assert regimes["teacher"].overrides == {"sample.k": 8, "train.temp": 0.5}  # temperature 1.0 is params.yaml's
    experiments = plan(config)
    assert [e.name for e in experiments] == [
        "study-on-policy-s0", "study-on-policy-s1", "study-teacher-s0", "study-teacher-s1",
        "study-on-policy-s0-temp-2", "study-on-policy-s1-temp-2",
        "study-teacher-s0-w_max-2", "study-teacher-s0-temp-2", "study-teacher-s1-w_max-2", "study-teacher-s1-temp-2"]
    by_name = {e.name: e for e in experiments}
    assert by_name["study-teacher-s1"].set_params() == ["seed=1", "sample.k=8", "train.temp=0.5"]
    assert by_name["study-teacher-s1"].targets == ("report",) and by_name["study-teacher-s1"].regime == "teacher"
    # the ablated value replaces the regime's own
    assert by_name["study-teacher-s0-temp-2"].set_params() == ["seed=0", "sample.k=8", "train.temp=2.0"]
    assert by_name["study-teacher-s0-w_max-2"].targets == ("evaluate@iwsft",)


def test_a_profile_given_as_its_file_and_extends_are_followed(tmp_path):
    profiles = {"teacher": TEACHER, "teacher-small": {"extends": "teacher", "train": {"steps": 20}}}
    config = study(tmp_path, profiles, regimes={"small": {"profile": "profiles/teacher-small.yaml"}})
    assert config.regimes[0].overrides == {"sample.k": 8, "train.temp": 0.5, "train.steps": 20}


def test_own_params_go_over_the_profile_and_a_regime_may_run_on_some_seeds(tmp_path):
    config = study(tmp_path, {"teacher": TEACHER}, seeds=[0, 1, 2],
                   regimes={"on-policy": None, "teacher": {"profile": "teacher", "params": {"train.temp": 0.25,
                                                                                       "sample": {"k": 2}},
                                                           "seeds": [2]}})
    assert config.regimes[1].overrides == {"sample.k": 2, "train.temp": 0.25}
    assert [e.name for e in plan(config)] == ["study-on-policy-s0", "study-on-policy-s1", "study-on-policy-s2",
                                            "study-teacher-s2"]


def without(dotted: str) -> dict:
    document = copy.deepcopy(WRITTEN)
    *path, last = dotted.split(".")
    node = document
    for part in path:
        node = node[part]
    del node[last]
    return document


@pytest.mark.parametrize("regime, profiles, message", [
    # a key params.yaml does not write: -S cannot set it (the schema's default is not in the file)
    ({"profile": "teacher"}, {"teacher": {"train": {"ema_decay": 0.5}}},
     "profile teacher sets ['train.ema_decay'], which params.yaml does not write"),
    ({"params": {"train.ema_decay": 0.5}}, {}, "params sets ['train.ema_decay'], which params.yaml does not write"),
    ({"profile": "swap"}, {"swap": {"replace": ["task"], "task": {"name": "exact"}}}, "removes params.yaml keys"),
    ({"profile": "nothere"}, {}, "no profile 'nothere'"),
    ({"profile": "../params.yaml"}, {}, "must be a profile name or a file in"),
    ({"params": {"train": 2}}, {}, "['train'] are sections of params.yaml"),
    ({"params": {"seed": 3}}, {}, "the study file's `seeds` and `methods` set those"),
    ({"params": {"train.w_max": "1.0e9"}}, {}, "YAML reads 1.0e9 as text"),
    ({"params": {"train.q_mode": "sometimes"}}, {}, "q_mode"),  # the schema's own check, naming the key
    ({"seeds": [7]}, {}, "seeds must be a non-empty list of distinct seeds of the study [0, 1]"),
    ({"policy": "teacher"}, {}, "expected a mapping with profile, params, seeds"),
])
def test_a_regime_that_dvc_cannot_set_is_refused_naming_the_key(tmp_path, regime, profiles, message):
    with pytest.raises(UserError, match="study.yaml: regime 'teacher'") as error:
        study(tmp_path, profiles, written=without("train.ema_decay"), regimes={"on-policy": {}, "teacher": regime})
    assert message in str(error.value)


@pytest.mark.parametrize("content, message", [
    ({"regimes": {"Teacher": {}}}, "a regime name is lower-case letters and digits"),
    ({"regimes": []}, "regimes must be a mapping of names"),
    ({"regimes": {"a": {}}, "ablations": [{"param": "train.temp", "values": [2.0], "regimes": ["b"]}]},
     "regimes ['b'] are not the study's regimes ['a']"),
    ({"regimes": {"a": {}}, "ablations": [{"param": "train.temp", "values": [2.0], "regimes": "a"}]},
     "regimes must be a list"),
    # the ablated value is the regime's own: its seed runs already have it
    ({"regimes": {"a": {}, "b": {"params": {"train.temp": 2.0}}},
      "ablations": [{"param": "train.temp", "values": [2.0], "regimes": ["a", "b"]}]},
     "values must not hold regime b's own value (train.temp = 2.0"),
])
def test_a_bad_regime_or_ablation_is_named(tmp_path, content, message):
    with pytest.raises(UserError, match="study.yaml") as error:
        study(tmp_path, **content)
    assert message in str(error.value)


def test_an_ablation_the_schema_refuses_in_a_regime_is_refused_before_anything_is_queued(tmp_path):
    written = merge(WRITTEN, {"reference": {"policy": "base"}, "train": {"reference_source": "column"}})
    with pytest.raises(UserError, match=r"study.yaml: ablations entry 1 \(train.reference_source = 'online' in "
                                        r"regime sampler\)") as error:
        study(tmp_path, written=written, regimes={"base": {}, "sampler": {"params": {"reference.policy": "sampler"}}},
              ablations=[{"param": "train.reference_source", "values": ["online"]}])
    assert "sampler needs train.reference_source: column" in str(error.value)


def test_the_regimes_study_file_loads_against_the_projects_params_and_profiles():
    """configs/study-regimes.yaml, as the lead runs it: every key it sets is one params.yaml writes."""
    written = load_params(ROOT / "params.yaml", check=False)
    config = load_config(ROOT / "configs/study-regimes.yaml", check(written), written, ROOT / "profiles")
    assert [r.name for r in config.regimes] == ["on-policy", "teacher"] and len(config.seeds) == 5
    assert set(config.methods or written["methods"]) == {"sft", "iwsft", "dft", "sftq", "iwsftq"}
    teacher = config.regimes[1].overrides
    assert "sample.policy" in teacher  # the teacher writes the data
    experiments = plan(config)
    assert {e.regime for e in experiments} == {"on-policy", "teacher"}
    assert all(e.name.startswith(f"study-{e.regime}-s{e.seed}") for e in experiments)
