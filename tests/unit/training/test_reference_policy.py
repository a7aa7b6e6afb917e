"""reference.policy: base | sampler. The column's fingerprint says whose log-probs it holds, and
training accepts a column only when params say that policy (iwsft.training.reference)."""

from pathlib import Path

import pytest
from datasets import Dataset

from iwsft.config.loading import read_yaml
from iwsft.config.schema import check
from iwsft.encoding.sequences import tokenize_dataset
from iwsft.errors import ReferenceMismatchError
from iwsft.model.artifacts import save_model
from iwsft.model.tiny_lm import build_char_tokenizer
from iwsft.training.reference import (check_reference, column_summary, expected_fingerprint, fingerprint,
                                      reference_policy_path, tokenizer_mismatch)
from tests.support import tiny_model

ROOT = Path(__file__).resolve().parents[3]
PROJECT = read_yaml(ROOT / "params.yaml")


def params(base: str, teacher: str, policy: str):
    return check({**PROJECT, "model": {**PROJECT["model"], "base": base},
                  "sample": {**PROJECT["sample"], "policy": teacher},
                  "reference": {**PROJECT["reference"], "policy": policy}})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """pi_ref and a teacher (two seeds, one tokenizer) saved as model directories, and the data."""
    folder = tmp_path_factory.mktemp("models")
    tokenizer = build_char_tokenizer()
    base, teacher = tiny_model(0, tokenizer), tiny_model(1, tokenizer)
    save_model(base, tokenizer, folder / "base")
    save_model(teacher, tokenizer, folder / "teacher")
    data = tokenize_dataset(Dataset.from_dict({"prompt": ["1+2=", "7+8="], "completion": ["3", "15"]}), tokenizer)
    return str(folder / "base"), str(folder / "teacher"), base, teacher, tokenizer, data


def stored(model, tokenizer, data, policy: str, path: str) -> dict:
    """A fingerprint.json as the reference stage writes it."""
    return {**fingerprint(data, model, tokenizer), "policy": policy, "policy_model": path}


def test_the_reference_policy_names_the_scoring_model(models):
    base_dir, teacher_dir, *_ = models
    assert reference_policy_path(params(base_dir, teacher_dir, "base")) == base_dir
    assert reference_policy_path(params(base_dir, teacher_dir, "sampler")) == teacher_dir


@pytest.mark.parametrize("policy", ["base", "sampler"])
def test_training_accepts_the_column_of_the_policy_params_name(models, policy):
    base_dir, teacher_dir, base, teacher, tokenizer, data = models
    scorer, path = (base, base_dir) if policy == "base" else (teacher, teacher_dir)
    column = stored(scorer, tokenizer, data, policy, path)
    expected = expected_fingerprint(params(base_dir, teacher_dir, policy), data, base, tokenizer, column, "fp.json")
    check_reference(column, expected)  # no error: data, weights (the scorer's) and tokenizer all match


def test_a_sampler_column_is_refused_when_params_say_base(models):
    base_dir, teacher_dir, base, teacher, tokenizer, data = models
    column = stored(teacher, tokenizer, data, "sampler", teacher_dir)
    with pytest.raises(ReferenceMismatchError, match=r"fp.json: the reference log-probs are 'sampler'.s .*params.yaml "
                                                     r"says reference.policy: base. Re-run the reference stage"):
        expected_fingerprint(params(base_dir, teacher_dir, "base"), data, base, tokenizer, column, "fp.json")


def test_a_base_column_is_refused_when_params_say_sampler(models):
    base_dir, teacher_dir, base, _, tokenizer, data = models
    column = stored(base, tokenizer, data, "base", base_dir)
    with pytest.raises(ReferenceMismatchError, match=r"'base'.s .* says reference.policy: sampler"):
        expected_fingerprint(params(base_dir, teacher_dir, "sampler"), data, base, tokenizer, column, "fp.json")


def test_a_column_labelled_sampler_but_scored_by_the_base_fails_on_the_weights(models):
    base_dir, teacher_dir, base, _, tokenizer, data = models
    column = stored(base, tokenizer, data, "sampler", teacher_dir)  # a mislabelled column
    expected = expected_fingerprint(params(base_dir, teacher_dir, "sampler"), data, base, tokenizer, column, "fp.json")
    with pytest.raises(ReferenceMismatchError, match="other model weights"):
        check_reference(column, expected)


def test_a_fingerprint_from_before_the_policy_key_means_base(models):
    base_dir, teacher_dir, base, _, tokenizer, data = models
    old = fingerprint(data, base, tokenizer)  # no "policy": written before reference.policy existed
    check_reference(old, expected_fingerprint(params(base_dir, teacher_dir, "base"), data, base, tokenizer, old, "fp"))
    with pytest.raises(ReferenceMismatchError, match="'base'"):
        expected_fingerprint(params(base_dir, teacher_dir, "sampler"), data, base, tokenizer, old, "fp")


def test_tokenizer_mismatch_names_vocabulary_and_special_ids():
    same, other, stops = build_char_tokenizer(), build_char_tokenizer(), build_char_tokenizer()
    assert tokenizer_mismatch(same, build_char_tokenizer()) is None
    other.add_tokens(["<think>"])
    assert tokenizer_mismatch(same, other) == "the vocabularies differ (99 vs 100 tokens; e.g. '<think>')"
    stops.eos_token = "<unk>"
    assert tokenizer_mismatch(same, stops) == "eos_token_id differs (2 vs 3)"


def test_column_summary_by_hand():
    summary = column_summary("sampler", "data/prepare/teacher_model", [[-1.0, -2.0, -3.0], [-0.5]])
    assert summary == {"policy": "sampler", "policy_model": "data/prepare/teacher_model", "completions": 2,
                       "mean_completion_tokens": 2.0,          # (3 + 1) / 2
                       "mean_logprob_per_completion": -3.25,   # (-6 - 0.5) / 2
                       "mean_logprob_per_token": -1.625}       # -6.5 / 4
