"""What every built-in verifier does to the text (iwsft.tasks.text, iwsft.tasks.final_answer):
Unicode minus signs and full-width digits read as ASCII, and a restated question never scored as
an answer, for each built-in task. Verdicts were decided by reading each completion."""

from __future__ import annotations

import pytest

from iwsft.config.schema import Task
from iwsft.tasks import build
from iwsft.tasks.final_answer import final_answer
from iwsft.tasks.text import MINUS_SIGNS, ascii_numbers, copies_prompt

CHAIN_SUM = {"name": "chain_sum", "min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2,
             "pretrain_examples": 10, "train_prompts": 10, "eval_prompts": 10}
TASKS = {
    "chain_sum": CHAIN_SUM,
    "reasoning_gym": {"name": "reasoning_gym", "dataset": "basic_arithmetic"},
    "reasoning_gym_last_number": {"name": "reasoning_gym", "dataset": "basic_arithmetic", "extract_fallback": "last_number"},
    "math": {"name": "math", "timeout_s": 5.0},
    "exact": {"name": "exact"},
}


@pytest.fixture(scope="module")
def tasks():
    built = {name: build(Task.model_validate(settings)) for name, settings in TASKS.items()}
    yield built
    for task in built.values():
        task.close()


# --- Unicode ----------------------------------------------------------------------------------

def test_every_unicode_minus_and_full_width_digit_is_ascii_and_nothing_else_changes():
    assert {ascii_numbers(sign + "5") for sign in MINUS_SIGNS} == {"-5"}
    assert ascii_numbers("－１２．５") == "-12.5" and ascii_numbers("＋７") == "+7"
    # what NFKC would change and these verifiers must not: a square is not a 2, ½ is not 1⁄2
    for text in ("3²", "x² + 1", "½", "ﬁnal", "5 °C", "π", "√2", "Paris", "naïve"):
        assert ascii_numbers(text) == text


# (task, completion, answer): each scores 1 (the same text in ASCII did before)
UNICODE_RIGHT = [
    ("chain_sum", "−5", "-5"), ("chain_sum", "－５", "-5"), ("chain_sum", " –29", "-29"), ("chain_sum", "１２", "12"),
    ("reasoning_gym", "The answer is −5", "-5"), ("reasoning_gym", "<answer>−5</answer>", "-5"),
    ("reasoning_gym_last_number", "So 3 − 8 = −5", "-5"), ("reasoning_gym_last_number", "答案是 －５", "-5"),
    ("math", "The answer is −5", "-5"), ("math", "\\boxed{−5}", "-5"), ("math", "－５", "-5"),
    ("math", "x = −\\frac{1}{2}", "-1/2"),
    ("exact", "−5", "-5"), ("exact", "  －５ ", "-5"),
]


@pytest.mark.parametrize("name, completion, answer", UNICODE_RIGHT)
def test_unicode_minus_and_full_width_digits_score_like_ascii(tasks, name, completion, answer):
    assert tasks[name].score(completion, answer) == 1.0
    assert tasks[name].success(completion, answer) == 1


@pytest.mark.parametrize("name", TASKS)
def test_a_unicode_minus_is_still_a_minus(tasks, name):
    assert tasks[name].success("−5", "5") == 0  # -5 is not 5 (reasoning-gym's partial credit aside)


# --- restated questions -----------------------------------------------------------------------

# (task, prompt, answer, completions that restate the question: each scores 0 and casts no vote)
RESTATED = [
    ("chain_sum", "38-57-10=", "-29", ["38-57-10=", "38-57-10"]),
    ("chain_sum", "0+7=", "7", ["0+7=", "0+7"]),
    ("reasoning_gym", "Calculate 0 + 3. Reply with just the number.", "3", ["Calculate 0 + 3.", "0 + 3", "<answer>0 + 3</answer>"]),
    ("reasoning_gym_last_number", "Calculate 0 + 3. Reply with just the number.", "3",
     ["Calculate 0 + 3.", "0 + 3", "Calculate 0 + 3. Reply with just the number.", "We need 0 + 3"]),
    ("math", "Calculate 3 - 5.", "-2", ["Calculate 3 - 5.", "3 - 5", "\\boxed{3 - 5}", "The answer is $3-5$.", "x = 3 - 5"]),
    ("math", "What is 0 + 3?", "3", ["What is 0 + 3?", "0 + 3", "So we need 0 + 3."]),
    ("exact", "What is the capital of France?", "Paris", ["What is the capital of France?"]),
]


@pytest.mark.parametrize("name, prompt, answer, completions", RESTATED, ids=[f"{r[0]}-{r[2]}" for r in RESTATED])
def test_a_restated_question_is_not_a_success(tasks, name, prompt, answer, completions):
    task = tasks[name]
    for completion in completions:
        assert task.success(completion, answer, None, prompt) == 0, completion
        assert task.score(completion, answer, prompt=prompt) < 1.0, completion
        if name in ("math", "reasoning_gym_last_number"):  # their extraction found the copy: no vote
            assert task.extract(completion, prompt) is None, completion
    # as a message list (TRL's conversational prompt) too
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
    assert task.success(completions[0], answer, None, messages) == 0


# (task, prompt, answer, completions that answer: each scores 1 although they quote the question)
ANSWERED = [
    ("chain_sum", "0+7=", "7", ["7", " 7"]),
    ("reasoning_gym_last_number", "Calculate 0 + 3. Reply with just the number.", "3",
     ["3", "0 + 3 = 3", "Calculate 0 + 3.\n3", "The answer is 3."]),
    ("reasoning_gym", "Calculate 0 + 3. Reply with just the number.", "3", ["3", "<answer>3</answer>", "0 + 3 = 3\nThe answer is 3."]),
    ("math", "Calculate 3 - 5.", "-2", ["3 - 5 = -2", "Calculate 3 - 5.\nThe answer is -2.", "\\boxed{-2}", "So it is -2."]),
    ("math", "What is 1/2 of 1?", "1/2", ["1/2", "\\boxed{\\frac{1}{2}}"]),  # a plain number is never a copy
    ("exact", "Paris or Rome: which is the capital of France?", "Paris", ["Paris", " paris "]),
]


@pytest.mark.parametrize("name, prompt, answer, completions", ANSWERED, ids=[f"{r[0]}-{r[2]}" for r in ANSWERED])
def test_an_answer_that_quotes_the_question_still_scores(tasks, name, prompt, answer, completions):
    for completion in completions:
        assert tasks[name].success(completion, answer, None, prompt) == 1, completion


def test_math_never_scores_the_question_even_without_the_prompt(tasks):
    """The issue's case: `iwsft score --task math --answer -2 'Calculate 3 - 5.'` scored 1 (3 - 1*5.0)."""
    assert tasks["math"].score("Calculate 3 - 5.", "-2") == 0.0
    assert tasks["math"].extract("Calculate 3 - 5.") == "5"  # the last line's final number, not 3 - 5


def test_score_command_with_and_without_the_prompt(capsys):
    import argparse

    from iwsft.cli import tasks as cli_tasks

    parser = argparse.ArgumentParser(prog="iwsft")
    cli_tasks.add_commands(parser.add_subparsers(dest="command", required=True))
    for extra in ([], ["--prompt", "Calculate 3 - 5."]):
        cli_tasks.handle(parser.parse_args(["score", "--task", "math", "--params", "no-such-params.yaml", "--answer", "-2",
                                            *extra, "Calculate 3 - 5.", "3 - 5 = -2"]))
    lines = [line.split("  completion")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert lines == ["[1] extracted: '5'  score: 0.000", "[2] extracted: '-2'  score: 1.000",
                     "[1] extracted: None  score: 0.000", "[2] extracted: '-2'  score: 1.000"]


def test_copies_prompt_only_for_expressions_the_prompt_holds():
    assert copies_prompt("3 - 5", "Calculate 3 - 5.") and copies_prompt("3-5", "Calculate 3 − 5.")
    assert copies_prompt("\\frac{1}{2}+\\frac{1}{3}", "Find $\\frac{1}{2} + \\frac{1}{3}$.")
    assert not copies_prompt("-2", "Calculate 3 - 5.")          # a number is an answer
    assert not copies_prompt("1/2", "What is 1/2 of 1?")         # a fraction too
    assert not copies_prompt("3 - 6", "Calculate 3 - 5.")        # not in the prompt
    assert not copies_prompt("3 - 5", None) and not copies_prompt(None, "Calculate 3 - 5.")


# --- math: the final answer -------------------------------------------------------------------

@pytest.mark.parametrize("completion, answer, source", [
    ("so \\boxed{0.5}", "0.5", "0.5"),
    ("First $x = 2$, then \\boxed{42}", "42", "42"),                # the box wins over earlier maths
    ("\\boxed{1} or rather \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "\\frac{1}{2}"),  # the last box
    ("The final answer is $-2$.", "-2", "-2"),
    ("The answer is 7 because 3+4", "7", "7"),                      # up to the first word
    ("Answer: 12,345", "12,345", "12,345"),
    ("So the answer is $x = 5$, done", "5", "5"),
    ("x=2", "2", "2"),
    ("Thus $x = \\frac{1}{2}$.", "\\frac{1}{2}", "\\frac{1}{2}"),  # after the last =, delimiters dropped
    ("\\(x = 2\\)", "2", "2"),
    ("x^2+1", "x^2+1", "x^2+1"),                                     # a line of mathematics, whole
    ("it is 1/3", "1/3", "1/3"),                                     # else the final number
    ("which gives \\frac{3}{4}", "\\frac{3}{4}", "\\frac{3}{4}"),
    ("The length is $2\\sqrt{3}$.", "2\\sqrt{3}", "2\\sqrt{3}"),
    ("Calculate 0 + 3.", "3", "0 + 3"),                              # the source: what the number ended
    ("12 + 7 = 19", "19", "19"),
])
def test_final_answer_and_its_source(completion, answer, source):
    found = final_answer(completion)
    assert (found.text, found.source) == (answer, source)


@pytest.mark.parametrize("completion", ["I do not know", "", "  \n ", "\\boxed{3 - 5", "The answer is \\boxed{}"])
def test_no_final_answer(completion):
    assert final_answer(completion) is None  # an unclosed box was cut off: no answer


def test_math_scores_the_final_answer_only(tasks):
    math = tasks["math"]
    assert math.score("2\\sqrt{3}", "2\\sqrt{3}") == 1.0 and math.score("The length is $2\\sqrt{3}$.", "\\sqrt{12}") == 1.0
    assert math.score("It is 1/2, no wait, \\boxed{1/3}", "1/2") == 0.0  # the box is the answer
    assert math.score("The answer is 7 because 3+4", "7") == 1.0
