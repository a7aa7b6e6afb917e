"""The teacher-data regime's params: sample.policy, reference.policy and the teacher section."""

from pathlib import Path

import pytest

from iwsft.config.loading import profiled, read_yaml
from iwsft.config.schema import check
from iwsft.errors import UserError

ROOT = Path(__file__).resolve().parents[3]
PROJECT = read_yaml(ROOT / "params.yaml")


def with_section(name: str, **values) -> dict:
    return {**PROJECT, name: {**PROJECT[name], **values}}


def test_params_yaml_writes_the_on_policy_defaults():
    params = check(PROJECT)
    assert params.sample.policy == params.model.base == "data/prepare/base_model"
    assert params.reference.policy == "base"
    assert (params.teacher.hidden_size, params.teacher.steps) == (PROJECT["teacher"]["hidden_size"], PROJECT["teacher"]["steps"])


def test_sample_policy_not_given_is_model_base():
    sample = {key: value for key, value in PROJECT["sample"].items() if key != "policy"}
    params = check({**PROJECT, "model": {**PROJECT["model"], "base": "data/models/mine"}, "sample": sample})
    assert params.sample.policy == "data/models/mine"


def test_a_teacher_policy_is_kept():
    assert check(with_section("sample", policy="data/prepare/teacher_model")).sample.policy == "data/prepare/teacher_model"


def test_reference_policy_takes_base_or_sampler_only():
    assert check(with_section("reference", policy="sampler")).reference.policy == "sampler"
    with pytest.raises(UserError, match=r"reference.policy: Input should be 'base' or 'sampler'"):
        check(with_section("reference", policy="teacher"))


def test_a_sampler_reference_cannot_be_the_online_copy_of_the_base():
    params = {**with_section("reference", policy="sampler"), "train": {**PROJECT["train"], "reference_source": "online"}}
    with pytest.raises(UserError, match=r"reference.policy: sampler needs train.reference_source: column"):
        check(params)


def test_the_teacher_section_is_checked_like_prepare():
    with pytest.raises(UserError, match=r"teacher.hidden_size: Input should be greater than 0"):
        check(with_section("teacher", hidden_size=0))
    with pytest.raises(UserError, match=r"teacher.lr: unknown key"):
        check(with_section("teacher", lr=0.1))


@pytest.mark.parametrize("name, policy, raw", [
    ("teacher", "data/prepare/teacher_model", "data/sample/raw.jsonl"),
    ("smollm2-teacher", "data/models/smollm2-135m-instruct", "data/teacher/raw.jsonl"),
    ("smollm2", "data/models/smollm2-135m-instruct", "data/sample/raw.jsonl"),
])
def test_profiles_name_the_writer_of_their_data(name, policy, raw, monkeypatch):
    monkeypatch.chdir(ROOT)
    params = profiled(name)
    assert (params.sample.policy, params.curate.raw) == (policy, raw)
    assert params.reference.policy == "base"  # pi_ref = the model fine-tuned, as in the paper's LLM runs
