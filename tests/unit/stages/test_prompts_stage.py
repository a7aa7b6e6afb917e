"""The prompts stage (iwsft.stages.prompts): train and eval prompts from a task's own generator."""

import json
from pathlib import Path

import pytest

from iwsft.config.loading import read_yaml
from iwsft.config.schema import check
from iwsft.errors import UserError
from iwsft.stages import prompts as stage

ARITHMETIC = {"name": "reasoning_gym", "dataset": "basic_arithmetic", "extract_fallback": "last_number",
              "kwargs": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ["+", "-"]}}


def run(tmp_path, monkeypatch, task: dict, instruction: str = "") -> tuple[list[dict], list[dict]]:
    monkeypatch.setattr(stage, "OUT", tmp_path)
    project = read_yaml(Path(__file__).resolve().parents[3] / "params.yaml")
    stage.run(check({**project, "seed": 0, "task": task, "prompts": {"instruction": instruction}}))
    read = lambda name: [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]  # noqa: E731
    return read("train.jsonl"), read("eval.jsonl")


def test_pools_are_disjoint_distinct_and_carry_the_instruction(tmp_path, monkeypatch):
    train, held_out = run(tmp_path, monkeypatch, {**ARITHMETIC, "train_prompts": 40, "eval_prompts": 20},
                          " Reply with just the number.")
    assert len(train) == 40 and len(held_out) == 20
    texts = [p["prompt"] for p in train + held_out]
    assert len(set(texts)) == 60  # no repeats within or across the pools
    assert all(text.startswith("Calculate ") and text.endswith(". Reply with just the number.") for text in texts)
    assert all(set(p) >= {"id", "prompt", "answer", "metadata"} for p in train + held_out)
    assert {p["id"] for p in train}.isdisjoint(p["id"] for p in held_out)  # seeds differ: so do the ids


def test_a_generator_too_narrow_for_the_counts_is_a_user_error(tmp_path, monkeypatch):
    narrow = {**ARITHMETIC, "kwargs": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1,
                                       "operators": ["+"]}, "train_prompts": 2000, "eval_prompts": 10}
    with pytest.raises(UserError, match=r"task.train_prompts: 2000 distinct train prompts wanted"):
        run(tmp_path, monkeypatch, narrow)
    assert not list(tmp_path.iterdir())  # nothing written


def test_counts_are_required(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="needs train_prompts and eval_prompts"):
        run(tmp_path, monkeypatch, ARITHMETIC)
