"""A user's scorer (task.scorer / task.extractor) that raises or returns no score: one message naming
it, the exception, the completion and the answer, never a traceback; in `iwsft score` (the cases of
tests/data/bad/cases.yaml `score`), in curation, and in the sample and evaluate stages, which try
the scorer once before they sample (iwsft.tasks.base.try_scorer)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import yaml

from iwsft.config.schema import Task, check
from iwsft.errors import UserError
from iwsft.tasks import build, try_scorer
from iwsft.tasks.rewards import fill_missing_rewards
from support import iwsft_score

ROOT = Path(__file__).resolve().parents[3]
CASES = yaml.safe_load((ROOT / "tests" / "data" / "bad" / "cases.yaml").read_text())["score"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
RAISES = "def score(completion, answer):\n    return 1 / 0\n"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project folder as the working directory (scorers next to params.yaml import from
    there), whose scorer modules are forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("my_"):
            del sys.modules[name]


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_a_broken_user_scorer_is_one_message(case, project):
    for name, text in case["files"].items():
        (project / name).write_text(text)
    (project / "params.yaml").write_text(yaml.safe_dump({"task": case["task"]}))
    code, message = iwsft_score(["score", "--params", "params.yaml", *case["args"]])
    assert code == 1
    for fragment in case["expect"]:
        assert fragment in message, message
    assert "Traceback" not in message and "\n" not in message


def custom_params(tmp_path: Path, scorer_code: str) -> object:
    """The demo's params with a custom scorer (written to tmp_path) and prompt files there."""
    (tmp_path / "my_stage_scorer.py").write_text(scorer_code)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"{i}+1=", "answer": str(i + 1)}) + "\n" for i in range(3)))
    params = copy.deepcopy(PARAMS)
    params["task"] = {"name": "custom", "scorer": "my_stage_scorer:score"}
    params["sample"]["prompts"] = params["curate"]["eval_prompts"] = str(prompts)
    return check(params)


def _no_model(*args, **kwargs):
    raise AssertionError("the model was loaded before the scorer was tried")


@pytest.mark.parametrize("stage", ["sample", "evaluate"])
def test_stages_try_the_scorer_before_loading_the_model_and_sampling(stage, project, monkeypatch):
    from iwsft.stages import evaluate, sample

    module = {"sample": sample, "evaluate": evaluate}[stage]
    monkeypatch.setattr(module, "load_model_for", _no_model)
    monkeypatch.setattr(module, {"sample": "sample_completions", "evaluate": "sample_with_greedy"}[stage], _no_model)
    params = custom_params(project, RAISES)
    with pytest.raises(UserError) as error:
        module.run(params) if stage == "sample" else module.run(params, "sft")
    message = str(error.value)
    for fragment in ("task.scorer my_stage_scorer:score raised ZeroDivisionError: division by zero",
                     "my_stage_scorer.py:2", "on the completion '1' with the answer '1'",
                     "a trial call before sampling, on the first prompt of", "prompts.jsonl, id 'p0'"):
        assert fragment in message, message


def test_try_scorer_passes_a_working_scorer_whatever_it_scores(project):
    (project / "my_strict.py").write_text("def score(completion, answer):\n    return 0.0\n")
    try_scorer(build(Task.model_validate({"name": "custom", "scorer": "my_strict:score"})),
               {"id": "p0", "prompt": "1+1=", "answer": 2}, "prompts.jsonl")
    chain_sum = build(check(PARAMS).task)
    try_scorer(chain_sum, {"id": "p0", "prompt": "1+1=", "answer": "2"}, "prompts.jsonl")


def test_curation_names_the_scorer_too(project):
    (project / "my_curate_scorer.py").write_text(RAISES)
    task = build(Task.model_validate({"name": "custom", "scorer": "my_curate_scorer:score"}))
    records = [{"id": "r1", "prompt": "3+4=", "completion": [{"role": "assistant", "content": "7"}], "answer": "7"}]
    with pytest.raises(UserError, match=r"task.scorer my_curate_scorer:score raised ZeroDivisionError.*"
                                        r"on the completion '7' with the answer '7'"):
        fill_missing_rewards(records, task)


def test_scores_of_other_number_types(project):
    (project / "my_numpy.py").write_text("import numpy as np\ndef score(completion, answer):\n    return np.float32(1.0)\n"
                                         "def big(completion, answer):\n    return -10 ** 400\n")
    assert build(Task.model_validate({"name": "custom", "scorer": "my_numpy:score"})).score("x", "y") == 1.0
    with pytest.raises(UserError, match=r"returned -1000000.*\.\.\.: a score must be a number in \[0, 1\]"):
        build(Task.model_validate({"name": "custom", "scorer": "my_numpy:big"})).score("x", "y")
