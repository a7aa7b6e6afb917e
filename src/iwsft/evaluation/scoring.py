"""What the evaluate stage computes from completions and models (iwsft.stages.evaluate is its thin main).

- `score_samples`: P prompts' n samples and greedy completions, scored by the task's verifier ->
  pass@1 with its CI and se, greedy accuracy, maj@k on the task's extracted answers, coverage, and
  how many were cut off at max_new_tokens.
- `reference_sample_bounds`: J(theta) by importance sampling and the SFT / iw-SFT lower bounds
  (PAPER.md Eqs. 3-5, 19) on pi_ref's own T=1 samples, scoring one model at a time.
"""

from __future__ import annotations

import numpy as np

from iwsft.config.schema import Params
from iwsft.encoding.chat import ChatFormat
from iwsft.evaluation.metrics import majority_at_k, paper_bounds, pass_at_1, pass_at_k_coverage
from iwsft.model.artifacts import load_model_for
from iwsft.training.reference import sequence_logprobs


def score_samples(task, sampled: list[list[str]], greedy: list[str], gold: list, metadata: list, k: int, *,
                  prompts: list | None = None, sampled_finished: list[list[bool]] | None = None,
                  greedy_finished: list[bool] | None = None, score_unfinished: bool = False):
    """(correct [P, n] 0/1, metrics) for P prompts' n samples and greedy completions, all scored by
    the task's verifier: pass@1 with its CI and se, greedy accuracy, maj@k on extracted answers and
    coverage. Pure: tests/unit/evaluation/test_evaluate_scoring.py checks it against hand-scored completions.

    prompts: given to the verifier, which refuses an answer copied from the question (None: unknown).
    Unfinished completions (`*_finished` False: cut off at max_new_tokens; None: all finished) are
    not answered unless `score_unfinished` (params evaluate.score_unfinished): scored 0 and no vote,
    as a truncated text's last number is not the model's answer. `unfinished` / `unfinished_greedy`
    count them either way."""
    prompts = prompts if prompts is not None else [None] * len(gold)
    sampled_finished = sampled_finished if sampled_finished is not None else [[True] * len(row) for row in sampled]
    greedy_finished = greedy_finished if greedy_finished is not None else [True] * len(greedy)
    rows = list(zip(sampled, sampled_finished, gold, metadata, prompts, strict=True))
    correct = np.array([[int((f or score_unfinished) and task.success(c, answer, meta, prompt))
                         for c, f in zip(samples, finished, strict=True)]
                        for samples, finished, answer, meta, prompt in rows], dtype=int)
    votes = [[task.extract(c, prompt) if f or score_unfinished else None for c, f in zip(samples, finished, strict=True)]
             for samples, finished, _, _, prompt in rows]
    greedy_correct = [int((f or score_unfinished) and task.success(g, answer, meta, prompt))
                      for g, f, answer, meta, prompt in zip(greedy, greedy_finished, gold, metadata, prompts, strict=True)]
    accuracy = pass_at_1(correct)
    return correct, {
        "pass_at_1": accuracy["mean"], "pass_at_1_ci_low": accuracy["ci_low"], "pass_at_1_ci_high": accuracy["ci_high"],
        "pass_at_1_se": accuracy["se"],  # None with a single prompt: the spread is unknown
        "greedy_accuracy": float(np.mean(greedy_correct)),
        "maj_at_k": majority_correct(votes, correct, k),
        "k": k, "coverage": pass_at_k_coverage(correct),
        "n_prompts": accuracy["n_prompts"], "n_samples": accuracy["n_samples"],
        "unfinished": int(sum(not f for row in sampled_finished for f in row)),  # of n_prompts x n_samples
        "unfinished_greedy": int(sum(not f for f in greedy_finished)),  # of n_prompts
    }


def majority_correct(votes, correct, k: int) -> float:
    """maj@k on extracted answers: per prompt, the most frequent answer among the first k samples
    (None, no answer found, does not vote; a tie goes to the one seen first) is right when the first
    sample that gave it was scored correct, so the vote is judged by the task's own verifier, as
    pass@1 is. (Before tasks existed the winner had to equal the gold string: `07` lost for `7`.
    The demo's model never writes such a number, so its maj@k is unchanged.)"""
    answers, verdicts = [], []
    for row_votes, row_correct in zip(votes, correct, strict=True):
        first = list(zip(row_votes, row_correct, strict=True))[:k]
        answers.append([vote for vote, _ in first if vote is not None])
        verdicts.append({})
        for vote, ok in first:
            if vote is not None:
                verdicts[-1].setdefault(vote, bool(ok))
    # majority_at_k counts the votes; each prompt's "gold" is its answer -> verdict table
    return majority_at_k(answers, verdicts, k, is_correct=lambda winner, table: table[winner])


def reference_sample_bounds(model, tokenizer, params: Params, rows: list[dict], q: str | None, q_model_dir=None) -> dict:
    """J(theta) by importance sampling, and the SFT and iw-SFT lower bounds, on pi_ref's samples `rows`.

    q (iwsft.methods.trained_q): "theta" (q is the model itself), "ema" (the copy in q_model_dir) or
    None (an SFT method: the SFT bound only). The models score the same samples one at a time (theta,
    pi_ref, then the EMA q if any), so the stage holds one model in memory, as a GPU with a real model
    needs; `model` is freed first. pi_ref's log-probs come from the rows (`ref_logprob`, written by the
    baseline stage) when every row has one."""
    rewards = np.array([r["reward"] for r in rows], dtype=float)
    logp_theta = trajectory_logprobs(model, tokenizer, params, rows)
    free(model)
    if all("ref_logprob" in r for r in rows):  # scored by the baseline stage, with pi_ref itself
        logp_ref = np.array([r["ref_logprob"] for r in rows])
    else:  # samples written before the baseline stored them: score them with pi_ref now
        logp_ref = _directory_logprobs(params, params.model.base, rows)
    if q == "ema":
        logp_q = _directory_logprobs(params, q_model_dir, rows)
    else:
        logp_q = logp_theta if q == "theta" else None
    return {**paper_bounds(logp_theta, logp_ref, rewards, logp_q=logp_q), "bound_q": q}


def trajectory_logprobs(model, tokenizer, params: Params, rows: list[dict]):
    """log pi(trajectory) of each base sample (its sampled ids when it has them) under `model`."""
    ids = [r.get("completion_ids") for r in rows]
    have_ids = all(i is not None for i in ids)
    return np.array(sequence_logprobs(
        model, tokenizer, [r["prompt"] for r in rows], [r["completion"] for r in rows], params.reference.batch_size,
        chat=ChatFormat.from_params(params, tokenizer), completion_ids=ids if have_ids else None,
        finished=[r.get("finished", True) for r in rows] if have_ids else None))


def _directory_logprobs(params: Params, directory, rows: list[dict]):
    model, tokenizer = load_model_for(params, directory)
    try:
        return trajectory_logprobs(model, tokenizer, params, rows)
    finally:
        free(model)


def free(model) -> None:
    """Drop the weights now (the caller's name still points at the module, not at its tensors)."""
    import gc

    import torch

    model.to("meta")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
