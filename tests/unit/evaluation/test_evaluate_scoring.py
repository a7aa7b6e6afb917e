"""evaluate's metrics (iwsft.evaluation.scoring.score_samples) on completions scored by hand, for the
reasoning-gym and math verifiers: pass@1, greedy, maj@k on extracted answers, coverage; completions
cut off at max_new_tokens (not answered unless evaluate.score_unfinished) and restated questions."""

import pytest

from iwsft.evaluation.scoring import score_samples
from iwsft.config.schema import Task
from iwsft.tasks import build

# Each completion's verdict was decided by reading it (the comment), not by running the scorer.
MATH = {
    "gold": ["1/2", "2"],
    "sampled": [
        ["so \\boxed{0.5}",         # 0.5 = 1/2: right
         "it is 1/3",               # wrong
         "\\boxed{\\frac{1}{2}}",   # right, another spelling
         "I do not know"],          # no answer: wrong, casts no vote
        ["\\boxed{3}",              # wrong
         "x=2",                     # right
         "\\boxed{3}",              # wrong: 3 now has two votes, the majority
         "The answer is \\boxed{2}"],  # right: 2 has two votes too, but 3 was seen first
    ],
    "greedy": ["\\boxed{1/2}", "\\boxed{4}"],  # right, wrong
    "correct": [[1, 0, 1, 0], [0, 1, 0, 1]],
    # prompt 1: votes 1/2 (x2), 1/3 -> 1/2, right; prompt 2: 3 (x2) and 2 (x2), tie to the first seen, 3: wrong
    "maj": 0.5, "greedy_accuracy": 0.5, "pass_at_1": 0.5, "coverage": 1.0,
}
ARITHMETIC = {
    "gold": ["7", "-2", "4"],
    "sampled": [
        ["<answer>7</answer>", "The answer is 7.", "3", "7 + 0 = 7"],   # right, right, wrong, right (last number)
        ["It is -2", "2", "2", "<answer>-2</answer>"],                  # right, wrong, wrong, right
        ["5", "6", "I cannot say", "<answer>3</answer>"],               # all wrong
    ],
    "greedy": ["7", "-2", "5"],
    "correct": [[1, 1, 0, 1], [1, 0, 0, 1], [0, 0, 0, 0]],
    # votes: 7 (x3) -> right; -2 (x2) vs 2 (x2): -2 seen first -> right; nothing right -> wrong
    "maj": 2 / 3, "greedy_accuracy": 2 / 3, "pass_at_1": 5 / 12, "coverage": 2 / 3,
}
TASKS = {
    "math": ({"name": "math"}, MATH),
    "reasoning_gym": ({"name": "reasoning_gym", "dataset": "basic_arithmetic", "extract_fallback": "last_number"},
                      ARITHMETIC),
}


@pytest.mark.parametrize("name", TASKS)
def test_metrics_agree_with_hand_scored_completions(name):
    settings, case = TASKS[name]
    task = build(Task.model_validate(settings))
    try:
        metadata = [None] * len(case["gold"])
        correct, metrics = score_samples(task, case["sampled"], case["greedy"], case["gold"], metadata, k=4)
    finally:
        task.close()
    assert correct.tolist() == case["correct"]
    assert metrics["pass_at_1"] == pytest.approx(case["pass_at_1"])
    assert metrics["greedy_accuracy"] == pytest.approx(case["greedy_accuracy"])
    assert metrics["maj_at_k"] == pytest.approx(case["maj"])
    assert metrics["coverage"] == pytest.approx(case["coverage"])
    assert metrics["n_prompts"] == len(case["gold"]) and metrics["n_samples"] == 4
    assert metrics["pass_at_1_ci_low"] <= metrics["pass_at_1"] <= metrics["pass_at_1_ci_high"]


# Unfinished (cut off at max_new_tokens) completions, exact task. Prompt 1: "8" twice, cut off, and a
# finished "7": not answered, the cut-off 8s cast no vote, so 7 wins; scored as written, 8 wins.
# Prompt 2: a cut-off "5" is right only when unfinished completions are scored.
UNFINISHED = {
    "sampled": [["8", "8", "7"], ["5", "5", "6"]], "finished": [[False, False, True], [False, True, True]],
    "greedy": ["7", "5"], "greedy_finished": [False, True], "gold": ["7", "5"],
    False: {"correct": [[0, 0, 1], [0, 1, 0]], "maj": 1.0, "greedy_accuracy": 0.5, "coverage": 1.0},
    True: {"correct": [[0, 0, 1], [1, 1, 0]], "maj": 0.5, "greedy_accuracy": 1.0, "coverage": 1.0},
}


@pytest.mark.parametrize("score_unfinished", [False, True])
def test_unfinished_completions_are_not_answers_unless_scored(score_unfinished):
    case, expected = UNFINISHED, UNFINISHED[score_unfinished]
    task = build(Task.model_validate({"name": "exact"}))
    correct, metrics = score_samples(task, case["sampled"], case["greedy"], case["gold"], [None, None], k=3,
                                     sampled_finished=case["finished"], greedy_finished=case["greedy_finished"],
                                     score_unfinished=score_unfinished)
    assert correct.tolist() == expected["correct"]
    assert metrics["maj_at_k"] == pytest.approx(expected["maj"])
    assert metrics["greedy_accuracy"] == pytest.approx(expected["greedy_accuracy"])
    assert metrics["coverage"] == pytest.approx(expected["coverage"])
    assert (metrics["unfinished"], metrics["unfinished_greedy"]) == (3, 1)  # counted either way


def test_without_finished_flags_every_completion_is_finished():
    task = build(Task.model_validate({"name": "exact"}))
    _, metrics = score_samples(task, [["7", "8"]], ["7"], ["7"], [None], k=2)
    assert metrics["pass_at_1"] == 0.5 and (metrics["unfinished"], metrics["unfinished_greedy"]) == (0, 0)


def test_a_restated_question_is_neither_correct_nor_a_vote():
    task = build(Task.model_validate({"name": "reasoning_gym", "dataset": "basic_arithmetic",
                                      "extract_fallback": "last_number"}))
    sampled, gold = [["Calculate 0 + 3.", "0 + 3", "3", "4"]], ["3"]
    correct, metrics = score_samples(task, sampled, ["0 + 3"], gold, [None], k=4, prompts=["Calculate 0 + 3."])
    assert correct.tolist() == [[0, 0, 1, 0]] and metrics["greedy_accuracy"] == 0.0
    assert metrics["maj_at_k"] == 1.0  # 3 and 4 one vote each, 3 seen first; the copies cast none
    unknown, _ = score_samples(task, sampled, ["0 + 3"], gold, [None], k=4)  # no prompt: the copy's last number counts
    assert unknown.tolist() == [[1, 1, 1, 0]]
