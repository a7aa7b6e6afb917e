"""The teacher's worked solutions (iwsft.data.worked_solutions, iwsft.stages.solutions): correct by
construction, every one rewarded 1 by the task's own verifier."""

import json
from pathlib import Path

import pytest

from iwsft.config.loading import read_yaml
from iwsft.config.schema import check
from iwsft.data.worked_solutions import expression_of, solve
from iwsft.errors import UserError
from iwsft.stages import solutions as stage
from iwsft.tasks import from_params

ROOT = Path(__file__).resolve().parents[3]
ARITHMETIC = {"name": "reasoning_gym", "dataset": "basic_arithmetic", "extract_fallback": "last_number",
              "kwargs": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ["+", "-"]}}


def params_for(task: dict, prompts: Path):
    project = read_yaml(ROOT / "params.yaml")
    return check({**project, "task": task, "sample": {**project["sample"], "prompts": str(prompts)}})


@pytest.mark.parametrize("expression, text, value", [
    ("8 - 2", "8 - 2: take 2 from 8, which leaves 6. The answer is 6.", 6),
    ("2 + -1", "2 + -1: adding -1 is taking 1 from 2, which leaves 1. The answer is 1.", 1),
    ("-4 - -2", "-4 - -2: taking away -2 is adding 2 to -4, which makes -2. The answer is -2.", -2),
    ("3 + 4 - 2", "3 + 4 - 2: add 4 to 3, which makes 7; take 2 from 7, which leaves 5. The answer is 5.", 5),
    ("-1 - -( -3 + 0 )", "-1 - -( -3 + 0 ): first -3 + 0: add 0 to -3, which makes -3; the negative of -3 is 3; "
     "take 3 from -1, which leaves -4. The answer is -4.", -4),
    ("-( -( -1 - -7 ) )", "-( -( -1 - -7 ) ): first -1 - -7: taking away -7 is adding 7 to -1, which makes 6; "
     "the negative of 6 is -6; the negative of -6 is 6. The answer is 6.", 6),
    ("( 3 + 4 ) - ( 2 - 1 )", "( 3 + 4 ) - ( 2 - 1 ): first 3 + 4: add 4 to 3, which makes 7; then 2 - 1: take 1 "
     "from 2, which leaves 1; take 1 from 7, which leaves 6. The answer is 6.", 6),
])
def test_solutions_by_hand(expression, text, value):
    assert solve(expression) == (text, value)


@pytest.mark.parametrize("expression", ["3 * 4", "2 + ", "(1 + 2", "1.5 + 2"])
def test_what_the_rule_cannot_write_out_is_refused(expression):
    with pytest.raises(ValueError, match="cannot solve"):
        solve(expression)


def test_the_expression_comes_from_metadata_or_the_prompt_text():
    assert expression_of("Calculate 5 - 3. Reply with just the number.", None) == "5 - 3"
    assert expression_of("38-57-10=", None) == "38-57-10"
    assert expression_of("anything", {"expression": "1 + 1"}) == "1 + 1"
    with pytest.raises(ValueError, match="no arithmetic expression"):
        expression_of("What is the capital of France?", None)


@pytest.mark.parametrize("kwargs", [
    ARITHMETIC["kwargs"],
    {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 2, "operators": ["+", "-"]},  # brackets, negations
])
def test_every_generated_item_is_solved_right_by_the_verifier(kwargs):
    task = from_params(params_for({**ARITHMETIC, "kwargs": kwargs}, ROOT / "params.yaml"))
    problems = task.prompts(300, seed=3)
    records = stage.solutions(problems, task, "prompts")
    assert len(records) == 300
    # the verifier, called again here: the stage's own check is not what this test relies on
    assert all(task.success(r["completion"], r["answer"], r.get("metadata"), r["prompt"]) == 1 for r in records)
    assert all(r["completion"].endswith(f"The answer is {r['answer']}.") for r in records)


def test_the_stage_writes_the_raw_schema_plain_or_conversational(tmp_path, monkeypatch):
    prompts = tmp_path / "train.jsonl"
    lines = [{"id": "a", "prompt": "Calculate 5 - 3.", "answer": "2", "metadata": {"expression": "5 - 3"}},
             {"id": "b", "prompt": [{"role": "user", "content": "Calculate 4 + -6."}], "answer": "-2"}]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    monkeypatch.setattr(stage, "OUT", tmp_path / "teacher")
    stage.run(params_for(ARITHMETIC, prompts))
    raw = [json.loads(line) for line in (tmp_path / "teacher" / "raw.jsonl").read_text().splitlines()]
    assert raw[0] == {"id": "a-teacher", "prompt": "Calculate 5 - 3.", "answer": "2", "reward": 1,
                      "completion": "5 - 3: take 3 from 5, which leaves 2. The answer is 2.",
                      "metadata": {"expression": "5 - 3"}}
    assert raw[1]["completion"] == [{"role": "assistant", "content":
                                     "4 + -6: adding -6 is taking 6 from 4, which leaves -2. The answer is -2."}]
    assert "completion_ids" not in raw[0]  # text, as a user's file: model.base's tokenizer tokenizes it later


def test_a_prompt_without_an_expression_is_named(tmp_path, monkeypatch):
    prompts = tmp_path / "train.jsonl"
    prompts.write_text(json.dumps({"id": "q7", "prompt": "Name a colour.", "answer": "red"}) + "\n")
    monkeypatch.setattr(stage, "OUT", tmp_path / "teacher")
    with pytest.raises(UserError, match=r"train.jsonl: record 1 \(id q7\): no arithmetic expression"):
        stage.run(params_for(ARITHMETIC, prompts))
