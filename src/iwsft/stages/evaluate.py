"""evaluate@MODEL: sample the held-out prompts and score them; estimate the paper's bound.

- Scored by the task's verifier (iwsft.tasks, params `task:`): a sample is correct for full credit;
  maj@k votes on the task's extracted answers (`task.extract`), not on raw strings.
- n samples per prompt at T=1 -> pass@1 with a 95 % CI and its unclipped standard error
  `pass_at_1_se` (clustered by prompt), coverage, maj@k; one greedy completion per prompt -> greedy accuracy.
- `model_sha256`: the hash of the model directory that was scored (iwsft.model.hashing), so the register
  stage can refuse metrics that belong to another model (e.g. train re-run, evaluate not).
- The bounds (PAPER.md Eqs. 3-5, 19) need samples from pi_ref: the `baseline` stage (`--model base`)
  saves its own T=1 samples, and every trained model scores those same samples: log pi_theta, log pi_ref and,
  for the iw bound, log q with the q the method trained with (methods.trained_q): theta itself for
  q_mode current (the bound then equals J), the EMA copy train saved for q_mode ema; an SFT method has
  no q and gets the SFT bound only. `bound_q` in the metrics says which.
"""

from __future__ import annotations

import numpy as np

from iwsft.model.artifacts import load_model_for
from iwsft.encoding.chat import ChatFormat, check_renderable
from iwsft.data.eval_prompts import read_eval_prompts
from iwsft.evaluation.generation import generate_completions, sample_completions
from iwsft.model.hashing import directory_sha256
from iwsft.methods import evaluate_stage, trained_q
from iwsft.evaluation.metrics import majority_at_k, paper_bounds, pass_at_1, pass_at_k_coverage
from iwsft.training.reference import sequence_logprobs
from iwsft.data.records import read_jsonl, write_json_atomic, write_jsonl_atomic
from iwsft.stages import DATA, model_dir
from iwsft.tasks import from_params
from iwsft.runtime import quiet
from iwsft.tracking.runs import track_stage

OUT = DATA / "evaluate"


def run(params: dict, method: str) -> None:
    config, seed = params["evaluate"], params["seed"]
    task = from_params(params)  # first: a scorer that does not import fails before the sampling
    # checked (iwsft.data.eval_prompts): a file without answers fails here, naming line, id and field
    prompts_file = read_eval_prompts(params["curate"]["eval_prompts"])
    problems = prompts_file.records
    scored = directory_sha256(model_dir(method, params))  # the files as loaded, before the long sampling
    model, tokenizer = load_model_for(params, model_dir(method, params))  # the GPU in bf16 when there is one
    prompts, gold = [p["prompt"] for p in problems], [p["answer"] for p in problems]
    metadata = [p.get("metadata") for p in problems]
    chat = ChatFormat.from_params(params, tokenizer)
    check_renderable(problems, chat, params["curate"]["eval_prompts"], prompts_file.lines)
    generate = dict(max_new_tokens=config["max_new_tokens"], seed=seed + 1, batch_size=config["batch_size"],
                    show_progress=not quiet(), chat=chat)
    drawn = sample_completions(model, tokenizer, prompts, num_samples=config["samples_per_prompt"],
                               temperature=config["temperature"], **generate)
    greedy = generate_completions(model, tokenizer, prompts, greedy=True, **generate)
    correct, metrics = score_samples(task, [[c.text for c in samples] for samples in drawn],
                                     [g[0] for g in greedy], gold, metadata, config["maj_k"])
    metrics.update(model_sha256=scored, **task.stats())  # stats: e.g. math's score_timeouts
    task.close()
    out = OUT / method
    # the sampled tokens too: the bounds score pi_ref's samples on exactly those tokens
    rows = [{"prompt": p, "completion": c.text, "reward": int(r),
             "completion_ids": c.token_ids + ([c.stop_token_id] if c.finished else []), "finished": c.finished}
            for p, samples, rewards in zip(prompts, drawn, correct) for c, r in zip(samples, rewards)]
    write_jsonl_atomic(out / "samples.jsonl", rows)
    if method == "base":  # theta = pi_ref: every bound equals c_ref; nothing to score
        zeros = np.zeros(len(rows))
        metrics.update(paper_bounds(zeros, zeros, np.array([r["reward"] for r in rows]), logp_q=zeros), bound_q="pi_ref")
    else:
        metrics.update(_bounds(model, tokenizer, params, method))  # frees `model` first
    write_json_atomic(out / "metrics.json", metrics)
    track_stage(evaluate_stage(method), params, sections=["seed", "evaluate"], method=method, metrics=metrics,
                tags={"iwsft.model_sha256": scored})


def score_samples(task, sampled: list[list[str]], greedy: list[str], gold: list, metadata: list, k: int):
    """(correct [P, n] 0/1, metrics) for P prompts' n samples and greedy completions, all scored by
    the task's verifier: pass@1 with its CI and se, greedy accuracy, maj@k on extracted answers and
    coverage. Pure: tests/unit/test_evaluate_scoring.py checks it against hand-scored completions."""
    correct = np.array([[task.success(c, answer, meta) for c in samples]
                        for samples, answer, meta in zip(sampled, gold, metadata, strict=True)])
    votes = [[task.extract(c) for c in samples] for samples in sampled]
    accuracy = pass_at_1(correct)
    return correct, {
        "pass_at_1": accuracy["mean"], "pass_at_1_ci_low": accuracy["ci_low"], "pass_at_1_ci_high": accuracy["ci_high"],
        "pass_at_1_se": accuracy["se"],  # None with a single prompt: the spread is unknown
        "greedy_accuracy": float(np.mean([task.success(g, answer, meta)
                                          for g, answer, meta in zip(greedy, gold, metadata, strict=True)])),
        "maj_at_k": majority_correct(votes, correct, k),
        "k": k, "coverage": pass_at_k_coverage(correct),
        "n_prompts": accuracy["n_prompts"], "n_samples": accuracy["n_samples"],
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


def _bounds(model, tokenizer, params: dict, method: str) -> dict:
    """J(theta) by importance sampling, and the SFT and iw-SFT lower bounds, on pi_ref's samples.

    The models score the same samples one at a time (theta, pi_ref, then the EMA q if any), so the
    stage holds one model in memory, as a GPU with a real model needs."""
    rows = read_jsonl(OUT / "base" / "samples.jsonl")
    rewards = np.array([r["reward"] for r in rows], dtype=float)
    logp_theta = _scored(model, tokenizer, params, rows)
    _free(model)
    logp_ref = _sequence_logprobs(params, params["model"]["base"], rows)
    q = trained_q(method, params["train"]["q_mode"])
    if q == "ema":
        logp_q = _sequence_logprobs(params, DATA / "train" / method / "q_model", rows)
    else:
        logp_q = logp_theta if q == "theta" else None
    return {**paper_bounds(logp_theta, logp_ref, rewards, logp_q=logp_q), "bound_q": q}


def _scored(model, tokenizer, params: dict, rows: list[dict]):
    """log pi(trajectory) of each base sample (its sampled ids when it has them) under `model`."""
    ids = [r.get("completion_ids") for r in rows]
    have_ids = all(i is not None for i in ids)
    return np.array(sequence_logprobs(
        model, tokenizer, [r["prompt"] for r in rows], [r["completion"] for r in rows], params["reference"]["batch_size"],
        chat=ChatFormat.from_params(params, tokenizer), completion_ids=ids if have_ids else None,
        finished=[r.get("finished", True) for r in rows] if have_ids else None))


def _sequence_logprobs(params: dict, directory, rows: list[dict]):
    model, tokenizer = load_model_for(params, directory)
    try:
        return _scored(model, tokenizer, params, rows)
    finally:
        _free(model)


def _free(model) -> None:
    """Drop the weights now (the caller's name still points at the module, not at its tensors)."""
    import gc

    import torch

    model.to("meta")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
