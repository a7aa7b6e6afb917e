"""Tasks and verifiers (iwsft.tasks): hand-checked answers for every built-in, the demo's numbers
unchanged, math time-boxed from a worker thread, user scorers and their errors, `iwsft score`."""

from __future__ import annotations

import copy
import random
import threading
import time
from pathlib import Path

import pytest
import yaml

from iwsft.tasks.rewards import fill_missing_rewards
from iwsft.tasks.chain_sum import verify
from iwsft.errors import UserError
from iwsft.evaluation.metrics import majority_at_k
from iwsft.config.schema import Task, check
from iwsft.tasks import build, from_params
from iwsft.tasks.reasoning_gym import last_line, last_number
from support import iwsft_score

ROOT = Path(__file__).resolve().parents[3]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def build_task(settings: dict):
    """The task of a `task:` section written as in params.yaml (checked by the schema first, as a stage's)."""
    return build(Task.model_validate(settings))


@pytest.fixture(scope="module")
def math_task():
    task = build_task({"name": "math", "timeout_s": 1.0})
    yield task
    task.close()


# --- chain_sum: the embedded demo, exactly as before -----------------------------------------

def _demo_samples(seed: int, prompts: int = 400, k: int = 4):
    """Completions like the demo model's: the right number, a near miss or junk, some padded."""
    rng = random.Random(seed)
    gold, samples = [], []
    for _ in range(prompts):
        answer = rng.randint(-150, 150)
        row = []
        for _ in range(k):
            kind = rng.random()
            if kind < 0.4:
                text = str(answer)
            elif kind < 0.8:
                text = str(answer + rng.choice([-10, -1, 1, 2, 10]))
            else:
                text = "".join(rng.choice("0123456789-+ .") for _ in range(rng.randint(0, 4)))
            row.append(rng.choice(["", " ", "\n"]) + text if rng.random() < 0.2 else text)
        gold.append(str(answer))
        samples.append(row)
    return gold, samples


def test_chain_sum_scores_exactly_like_the_demo_verifier():
    task = from_params(check(PARAMS))
    assert task.name == "chain_sum"
    gold, samples = _demo_samples(0)
    for answer, row in zip(gold, samples):
        for completion in row + [None, "07", "+7", " 7.0 ", "15"]:
            assert task.score(completion, answer) == float(verify(completion, answer))
            assert task.success(completion, answer) == verify(completion, answer)
            assert task.extract(completion) == (None if completion is None else completion.strip())


def test_chain_sum_majority_vote_is_todays_on_demo_like_samples():
    from iwsft.evaluation.scoring import majority_correct

    task = build(check(PARAMS).task)
    for seed in range(5):
        gold, samples = _demo_samples(seed)
        # the one intended difference (below): a winner spelled differently from the gold string
        kept = [(a, row) for a, row in zip(gold, samples)
                if not any(verify(c, a) and c.strip() != a for c in row)]
        gold, samples = [a for a, _ in kept], [row for _, row in kept]
        correct = [[task.success(c, a) for c in row] for a, row in zip(gold, samples)]
        votes = [[task.extract(c) for c in row] for row in samples]
        for k in (1, 2, 3, 4):
            old = majority_at_k([[c.strip() for c in row] for row in samples], gold, k)
            assert majority_correct(votes, correct, k) == old


def test_majority_vote_is_judged_by_the_verifier():
    from iwsft.evaluation.scoring import majority_correct

    task = build(check(PARAMS).task)
    samples, gold = [["07", "07", "8"]], ["7"]
    correct = [[task.success(c, "7") for c in samples[0]]]
    assert majority_correct([[task.extract(c) for c in samples[0]]], correct, 3) == 1.0  # as pass@1 sees it
    assert majority_at_k([["07", "07", "8"]], gold, 3) == 0.0  # the old raw-string judge
    # no answer found does not vote; a prompt without any answer is wrong
    assert majority_correct([[None, None, "8"]], [[0, 0, 1]], 3) == 1.0
    assert majority_correct([[None, None]], [[0, 0]], 2) == 0.0


def test_curation_rewards_records_without_a_reward():
    records = [{"prompt": "3+4=", "completion": "7", "answer": "7"},
               {"prompt": "3+4=", "completion": "8", "answer": 7},
               {"prompt": "3+4=", "completion": "8", "answer": "7", "reward": 1},  # a given reward stays
               {"prompt": "3+4=", "completion": "7"}]  # nothing to check against
    assert fill_missing_rewards(records, build(check(PARAMS).task)) == 2
    assert [r.get("reward") for r in records] == [1, 0, 1, None]


# --- reasoning_gym ----------------------------------------------------------------------------

def test_reasoning_gym_basic_arithmetic_hand_checked():
    task = build_task({"name": "reasoning_gym", "dataset": "basic_arithmetic"})
    entry = task.prompts(3, seed=1)[0]
    assert entry["prompt"].endswith("Calculate 5 - 3 - 6.") and entry["answer"] == "-4"
    assert set(entry) == {"id", "prompt", "answer", "metadata"} and entry["metadata"]["expression"] == "5 - 3 - 6"
    meta = entry["metadata"]
    assert task.score("-4", "-4", meta) == 1.0
    assert task.score("-3", "-4", meta) == 0.0
    chatty = "Let me think.\n5 - 3 = 2, and 2 - 6 = -4.\n<answer>-4</answer>\nHope that helps!"
    assert task.extract(chatty) == "-4" and task.score(chatty, "-4", meta) == 1.0
    assert task.extract("First 5 - 3 = 2.\nThe answer is -4.") == "-4"
    assert task.success("First 5 - 3 = 2.\nThe answer is -4.", "-4", meta) == 1
    # reasoning-gym's partial credit (a substring of the answer) is no success
    assert 0 < task.score("5 - 3 - 6 = -4", "-4", meta) < 1 and task.success("5 - 3 - 6 = -4", "-4", meta) == 0


def test_reasoning_gym_last_number_fallback_and_kwargs():
    task = build_task({"name": "reasoning_gym", "dataset": "chain_sum", "extract_fallback": "last_number",
                  "kwargs": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}})
    first = task.prompts(2, seed=1)[0]
    assert first["prompt"].endswith("4 - 1 =") and first["answer"] == "3"
    assert task.extract("4 - 1 = 3") == "3" and task.score("4 - 1 = 3", "3") == 1.0
    assert task.score("<answer>4</answer> or 3", "3") == 0.0  # the tag wins over the fallback
    assert last_number("it is -1,024.5 then") == "-1,024.5" and last_number("none") is None
    assert last_line("x\n\nFinal answer: Paris.\n") == "Paris" and last_line("  \n") is None


def test_reasoning_gym_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="no dataset 'no_such_dataset'"):
        build_task({"name": "reasoning_gym", "dataset": "no_such_dataset"})
    with pytest.raises(UserError, match="task.kwargs"):
        build_task({"name": "reasoning_gym", "dataset": "chain_sum", "kwargs": {"min_termz": 2}})


# --- math -------------------------------------------------------------------------------------

@pytest.mark.parametrize("completion", ["1/2", "0.5", r"\frac{1}{2}", r"so the answer is $\boxed{\frac12}$"])
def test_math_equivalent_forms_score_one(math_task, completion):
    for gold in ("1/2", "0.5", r"\frac{1}{2}"):
        assert math_task.score(completion, gold) == 1.0
    assert math_task.extract(completion) == "1/2"  # one vote key for all four forms


def test_math_wrong_answers_score_zero(math_task):
    assert math_task.score("1/3", "0.5") == 0.0
    assert math_task.score("0.5", "1/3") == 0.0
    assert math_task.score("I have no idea", "0.5") == 0.0
    assert math_task.extract("I have no idea") is None
    assert math_task.score(r"First $x = 2$, then \boxed{42}", "42") == 1.0


def test_math_check_that_would_hang_is_time_boxed_from_a_worker_thread(math_task):
    before = math_task.stats()["score_timeouts"]
    results = []
    started = time.monotonic()
    # sympy would evaluate 9^(9^(9^9)) for hours; Prefect runs tasks in threads like this one
    worker = threading.Thread(target=lambda: results.append(math_task.score(r"$9^{9^{9^{9}}}$", "1")))
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and results == [0.0]
    assert time.monotonic() - started < 30
    assert math_task.stats()["score_timeouts"] == before + 1
    assert math_task.score("0.5", "1/2") == 1.0  # the worker was restarted


# --- exact and custom -------------------------------------------------------------------------

def test_exact_normalised_match():
    task = build_task({"name": "exact"})
    assert task.score("  Paris\n", "paris") == 1.0
    assert task.score("New   York", "new york") == 1.0 and task.extract(" New\tYork ") == "new york"
    assert task.score("Paris.", "paris") == 0.0
    assert task.score("", "") == 0.0 and task.extract("   ") is None


SCORER = '''
def score(completion, answer):
    return float(completion.strip().lower() == str(answer).lower())

def extract(completion):
    return completion.strip().lower() or None

def out_of_range(completion, answer):
    return 2
'''


def test_custom_scorer_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_scoring_ok.py").write_text(SCORER)
    monkeypatch.syspath_prepend(str(tmp_path))
    task = build_task({"name": "custom", "scorer": "my_scoring_ok:score", "extractor": "my_scoring_ok:extract"})
    assert task.score(" YES ", "yes") == 1.0 and task.score("no", "yes") == 0.0
    assert task.success("Yes", "yes") == 1 and task.extract(" YES ") == "yes"
    bad = build_task({"name": "custom", "scorer": "my_scoring_ok:out_of_range"})
    with pytest.raises(UserError, match=r"my_scoring_ok:out_of_range returned 2.*\[0, 1\]"):
        bad.score("x", "y")


def test_bad_scorer_paths_are_user_errors_naming_them(tmp_path, monkeypatch):
    (tmp_path / "my_scoring_partial.py").write_text("def other(c, a):\n    return 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match=r"task.scorer: cannot import 'no_such_pkg.scoring' for 'no_such_pkg.scoring:score'"):
        build_task({"name": "custom", "scorer": "no_such_pkg.scoring:score"})
    with pytest.raises(UserError, match=r"task.scorer: 'my_scoring_partial' has no function 'score'"):
        build_task({"name": "custom", "scorer": "my_scoring_partial:score"})
    # a malformed path ("my_scoring_partial.score") is the schema's to refuse: test_task_settings_cross_checks


# --- params.yaml `task:` ----------------------------------------------------------------------

@pytest.mark.parametrize("task, message", [
    ({"name": "reasoning_gym"}, "reasoning_gym needs dataset"),
    ({"name": "custom"}, "custom needs scorer"),
    ({"name": "custom", "scorer": "not a path"}, "task.scorer: must be module.path:function"),
    ({"name": "math", "dataset": "gcd"}, "dataset is only used by name: reasoning_gym"),
    ({"name": "exact", "timeout_s": 3.0}, "timeout_s is only used by name: math"),
    ({"name": "chain_sum"}, "chain_sum needs min_terms"),
    ({"name": "sympy"}, "task.name: Input should be"),
])
def test_task_settings_cross_checks(task, message):
    params = copy.deepcopy(PARAMS)
    params["task"] = task
    with pytest.raises(UserError, match=message):
        check(params)


def test_task_settings_for_each_builtin_are_valid():
    for task in ({"name": "math", "timeout_s": 2.5}, {"name": "exact"}, {"name": "custom", "scorer": "a.b:c"},
                 {"name": "reasoning_gym", "dataset": "gcd", "kwargs": {"min_numbers": 2}}):
        check({**copy.deepcopy(PARAMS), "task": task})


# --- iwsft score ------------------------------------------------------------------------------

def _cli(argv):
    code, message = iwsft_score(argv)
    if message:
        print(message)
    return code


def test_score_command_prints_extracted_answer_and_score(capsys):
    params = str(ROOT / "params.yaml")
    assert _cli(["score", "--task", "math", "--params", params, "--answer", "1/2",
                 r"so \boxed{\frac12}", "0.5", "1/3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == r"[1] extracted: '1/2'  score: 1.000  completion: 'so \\boxed{\\frac12}'"
    assert lines[1].startswith("[2] extracted: '1/2'  score: 1.000")
    assert lines[2].startswith("[3] extracted: '1/3'  score: 0.000")
    # the demo's task from params.yaml, and a reasoning-gym dataset named on the command line
    assert _cli(["score", "--params", params, "--answer", "-29", "-29", " -29", "-28"]) == 0
    assert [line.split("  completion")[0] for line in capsys.readouterr().out.splitlines()] == [
        "[1] extracted: '-29'  score: 1.000", "[2] extracted: '-29'  score: 1.000", "[3] extracted: '-28'  score: 0.000"]
    assert _cli(["score", "--task", "reasoning_gym", "--dataset", "basic_arithmetic", "--params", params,
                 "--answer", "-4", "Sure!\n<answer>-4</answer>"]) == 0
    assert "extracted: '-4'  score: 1.000" in capsys.readouterr().out


def test_score_command_errors(capsys):
    params = str(ROOT / "params.yaml")
    assert _cli(["score", "--task", "custom", "--scorer", "no_such_pkg.x:score", "--params", params, "x"]) == 1
    assert "cannot import 'no_such_pkg.x'" in capsys.readouterr().out
    assert _cli(["score", "--task", "reasoning_gym", "--params", params, "x"]) == 1
    assert "reasoning_gym needs dataset" in capsys.readouterr().out


def test_score_through_iwsft_main(capsys):
    from iwsft.cli import main as cli

    if "cli_tasks" not in vars(cli):
        pytest.skip("iwsft.cli.main does not wire iwsft.cli.tasks yet")
    assert cli.main(["score", "--task", "exact", "--params", str(ROOT / "params.yaml"), "--answer", "Paris", " paris "]) == 0
    assert "extracted: 'paris'  score: 1.000" in capsys.readouterr().out
