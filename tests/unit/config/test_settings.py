"""params.yaml's schema (iwsft.config.schema) and profiles (iwsft.config.loading): every bad value named at once."""

import copy
import re
from pathlib import Path

import pytest
import yaml

from iwsft.config.loading import apply_profile, layered, load_params, profile_path
from iwsft.config.schema import Params, check
from iwsft.errors import UserError

ROOT = Path(__file__).resolve().parents[3]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
PROFILES = sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml"))


def written(params: Params) -> dict:
    """The keys a file wrote, as the typed Params holds them (the schema's defaults left out)."""
    return params.model_dump(exclude_unset=True)


def problems(params) -> str:
    with pytest.raises(UserError) as error:
        check(params)
    return str(error.value)


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_params_yaml_and_every_profile_validate_through_the_schema(profile):
    """params.yaml alone and with each profile layered on it (as `iwsft profile` layers it, `extends`
    and `replace` included): typed, frozen, every written value read as written, defaults filled in."""
    raw = copy.deepcopy(PARAMS) if profile is None else layered(profile, copy.deepcopy(PARAMS), ROOT / "profiles")
    params = check(copy.deepcopy(raw), f"params.yaml + {profile}")
    assert isinstance(params, Params) and written(params) == raw
    assert params.gates.curated.min_examples >= 1 and params.curate.near_duplicate_ngram == 3  # defaults filled in
    with pytest.raises(ValueError):
        params.seed = 1  # frozen: a stage cannot change what the next one reads


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_is_applied(profile, tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    assert isinstance(apply_profile(profile, tmp_path / "params.yaml", ROOT / "profiles"), Params)


def test_every_bad_value_is_named_at_once():
    bad = copy.deepcopy(PARAMS)
    bad["train"]["steps"] = -5
    bad["train"]["stepz"] = 10
    bad["methods"] = ["sft", "dpo"]
    bad["seed"] = True  # a bool is not an int here
    bad["evaluate"]["batch_size"] = "512"
    message = problems(bad)
    assert message.startswith("params.yaml: 5 invalid settings:")
    for expected in ("train.steps: Input should be greater than 0 (got -5)", "train.stepz: unknown key",
                     "methods: unknown method(s) ['dpo']", "seed: Input should be a valid integer (got True)",
                     "evaluate.batch_size: Input should be a valid integer"):
        assert expected in message, message


def test_yaml_exponents_read_as_text_get_a_hint():
    bad = copy.deepcopy(PARAMS)
    bad["train"]["lr"] = yaml.safe_load("lr: 1e-3")["lr"]  # YAML 1.1: a string
    assert "write it as a plain number, e.g. 1.0e-3" in problems(bad)


@pytest.mark.parametrize("section, key, value, expected", [
    ("evaluate", "maj_k", 9, "maj_k (9) > samples_per_prompt (4)"),
    ("train", "logging_steps", 1000, "logging_steps (1000) > steps (300)"),
    ("train", "token_clip", [1.8, 0.2], "0 <= low < high"),
    ("quality", "percentiles", [95, 90], "strictly increasing"),
    ("task", "min_terms", 9, "min_terms (9) is larger than max_terms (3)"),
    ("train", "q_mode", "lagged", "'current', 'ema' or 'reference'"),
    ("registry", "confidence", 1.5, "registry.confidence"),
])
def test_inconsistent_or_out_of_range_settings(section, key, value, expected):
    bad = copy.deepcopy(PARAMS)
    bad[section][key] = value
    assert expected in problems(bad)


def test_a_methods_list_with_a_repeat_is_refused():
    bad = copy.deepcopy(PARAMS)
    bad["methods"] = ["sft", "sft"]
    assert "listed twice" in problems(bad)


def test_load_params_checks_and_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    bad = copy.deepcopy(PARAMS)
    bad["train"]["steps"] = 0
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(UserError, match=f"{path}: 1 invalid setting:\n  train.steps"):
        load_params(path)
    path.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        load_params(path)


@pytest.mark.parametrize("name", ["../params", "/etc/passwd", "micro/../micro", "", "nope"])
def test_profile_names_are_files_of_profiles_only(name):
    with pytest.raises(UserError, match="known profiles: micro"):
        profile_path(name, ROOT / "profiles")


def test_a_profile_is_written_atomically_and_checked_first(tmp_path):
    params, profiles = tmp_path / "params.yaml", tmp_path / "profiles"
    profiles.mkdir()
    params.write_text((ROOT / "params.yaml").read_text())
    (profiles / "broken.yaml").write_text("train:\n  steps: -1\n")
    before = params.read_bytes()
    with pytest.raises(UserError, match="train.steps"):
        apply_profile("broken", params, profiles)
    assert params.read_bytes() == before  # a bad profile writes nothing
    (profiles / "short.yaml").write_text("train:\n  steps: 50\n")
    merged = apply_profile("short", params, profiles)
    assert merged.train.steps == 50 and merged.train.lr == PARAMS["train"]["lr"]
    assert yaml.safe_load(params.read_text()) == written(merged)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "profiles"]  # no temporary left


def test_replace_and_extends_layer_profiles(tmp_path):
    params, profiles = tmp_path / "params.yaml", tmp_path / "profiles"
    profiles.mkdir()
    params.write_text((ROOT / "params.yaml").read_text())
    (profiles / "rg.yaml").write_text("replace: [task]\ntask:\n  name: reasoning_gym\n  dataset: basic_arithmetic\n"
                                      "train:\n  steps: 40\n")
    (profiles / "rg-small.yaml").write_text("extends: rg\ntrain:\n  steps: 2\n  logging_steps: 1\n")
    merged = apply_profile("rg-small", params, profiles)
    # the whole task section is the profile's: chain_sum's generator knobs would be errors for this task
    assert written(merged)["task"] == {"name": "reasoning_gym", "dataset": "basic_arithmetic"}
    assert merged.train.steps == 2 and merged.train.lr == PARAMS["train"]["lr"]  # child over parent
    assert "replace" not in written(merged) and "extends" not in written(merged)


@pytest.mark.parametrize("files, message", [
    ({"a.yaml": "extends: b\n", "b.yaml": "extends: a\n"}, "a -> b -> a extends itself"),
    ({"a.yaml": "replace: [task]\n"}, "replace names ['task'], which the profile does not define"),
    ({"a.yaml": "replace: task\ntask: {name: exact}\n"}, "replace must be a list of section names"),
    ({"a.yaml": "extends: nope\n"}, "no profile 'nope'"),
])
def test_bad_profile_layering_is_named(tmp_path, files, message):
    params, profiles = tmp_path / "params.yaml", tmp_path / "profiles"
    profiles.mkdir()
    params.write_text((ROOT / "params.yaml").read_text())
    for name, text in files.items():
        (profiles / name).write_text(text)
    with pytest.raises(UserError, match=re.escape(message)):
        apply_profile("a", params, profiles)


def test_training_knobs_are_checked():
    epochs = copy.deepcopy(PARAMS)
    epochs["train"].update(steps=None, epochs=2.5, lr_scheduler="cosine", precision="bf16", optimizer="adafactor",
                           gradient_checkpointing=True)
    assert written(check(copy.deepcopy(epochs))) == epochs
    both = copy.deepcopy(PARAMS)
    both["train"]["epochs"] = 2
    assert "set exactly one of steps and epochs, the other null (got steps=300, epochs=2.0)" in problems(both)
    bad = copy.deepcopy(PARAMS)
    bad["train"].update(optimizer="adamw_tourch", lr_scheduler="polynomial", precision="fp8")
    message = problems(bad)
    assert "train.optimizer: unknown optimizer 'adamw_tourch'; transformers knows: adamw_torch" in message
    assert "train.lr_scheduler: Input should be 'constant_with_warmup', 'cosine' or 'linear'" in message
    assert "train.precision: Input should be 'auto', 'bf16', 'fp16' or 'fp32'" in message


# Dict-style reads of params or of a section of it (`params.get("train") or {}`, `params["model"]["base"]`,
# `section.get("min_examples", 1)`, `cfg.get(...)`): the style that re-defaulted keys outside the schema.
DICT_READ = re.compile(r"""\b(params|section|cfg)(\.get\(|\[\s*["'])""")


def test_params_are_read_as_typed_fields_outside_config():
    """Every params read outside iwsft.config is an attribute of the typed Params (`params.train.steps`):
    a default lives only in the schema, so no `.get(key, default)` or `["key"]` on params elsewhere."""
    sources = [*sorted((ROOT / "src" / "iwsft").rglob("*.py")), *sorted((ROOT / "flows").rglob("*.py"))]
    config = ROOT / "src" / "iwsft" / "config"
    offenders = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for path in sources if config not in path.parents
                 for number, line in enumerate(path.read_text().splitlines(), 1) if DICT_READ.search(line)]
    assert not offenders, "dict-style params reads:\n" + "\n".join(offenders)
