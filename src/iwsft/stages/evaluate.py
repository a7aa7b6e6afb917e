"""evaluate@MODEL: sample the held-out prompts and score them; estimate the paper's bound.

- n samples per prompt at T=1 -> pass@1 with a 95 % CI and its unclipped standard error
  `pass_at_1_se` (clustered by prompt), coverage, maj@k; one greedy completion per prompt -> greedy accuracy.
- `model_sha256`: the hash of the model directory that was scored (iwsft.hashing), so the register
  stage can refuse metrics that belong to another model (e.g. train re-run, evaluate not).
- The bounds (PAPER.md Eqs. 3-5, 19) need samples from pi_ref: evaluate@base saves its own T=1
  samples, and every trained model scores those same samples: log pi_theta, log pi_ref and log q
  (q = the time-lagged theta saved halfway through training).
"""

from __future__ import annotations

import numpy as np

from iwsft.artifacts import load_model
from iwsft.demo_task import verify
from iwsft.generation import generate_completions
from iwsft.hashing import directory_sha256
from iwsft.metrics import majority_at_k, paper_bounds, pass_at_1, pass_at_k_coverage
from iwsft.reference import sequence_logprobs
from iwsft.schema import read_jsonl, write_json_atomic, write_jsonl_atomic
from iwsft.stages import DATA, model_dir
from iwsft.runtime import quiet
from iwsft.tracking import track_stage

OUT = DATA / "evaluate"


def run(params: dict, method: str) -> None:
    config, seed = params["evaluate"], params["seed"]
    trust = params["model"]["trust_remote_code"]
    scored = directory_sha256(model_dir(method, params))  # the files as loaded, before the long sampling
    model, tokenizer = load_model(model_dir(method, params), trust)
    problems = read_jsonl(params["curate"]["eval_prompts"])
    prompts, gold = [p["prompt"] for p in problems], [p["answer"] for p in problems]
    generate = dict(max_new_tokens=config["max_new_tokens"], seed=seed + 1, batch_size=config["batch_size"],
                    show_progress=not quiet())
    sampled = generate_completions(model, tokenizer, prompts, num_samples=config["samples_per_prompt"],
                                   temperature=config["temperature"], **generate)
    greedy = generate_completions(model, tokenizer, prompts, greedy=True, **generate)
    correct = np.array([[verify(c, answer) for c in samples] for samples, answer in zip(sampled, gold)])
    accuracy = pass_at_1(correct)
    metrics = {
        "pass_at_1": accuracy["mean"], "pass_at_1_ci_low": accuracy["ci_low"], "pass_at_1_ci_high": accuracy["ci_high"],
        "pass_at_1_se": accuracy["se"],  # None with a single prompt: the spread is unknown
        "greedy_accuracy": float(np.mean([verify(g[0], answer) for g, answer in zip(greedy, gold)])),
        "maj_at_k": majority_at_k([[c.strip() for c in s] for s in sampled], gold, config["maj_k"]),
        "k": config["maj_k"], "coverage": pass_at_k_coverage(correct),
        "n_prompts": accuracy["n_prompts"], "n_samples": accuracy["n_samples"],
        "model_sha256": scored,
    }
    out = OUT / method
    rows = [{"prompt": p, "completion": c, "reward": int(r)}
            for p, samples, rewards in zip(prompts, sampled, correct) for c, r in zip(samples, rewards)]
    write_jsonl_atomic(out / "samples.jsonl", rows)
    if method == "base":  # theta = pi_ref: every bound equals c_ref; nothing to score
        zeros = np.zeros(len(rows))
        metrics.update(paper_bounds(zeros, zeros, np.array([r["reward"] for r in rows]), logp_q=zeros))
    else:
        metrics.update(_bounds(model, tokenizer, params, method))
    write_json_atomic(out / "metrics.json", metrics)
    track_stage(f"evaluate@{method}", params, sections=["seed", "evaluate"], method=method, metrics=metrics,
                tags={"iwsft.model_sha256": scored})


def _bounds(model, tokenizer, params: dict, method: str) -> dict:
    """J(theta) by importance sampling, and the SFT and iw-SFT lower bounds, on pi_ref's samples."""
    rows = read_jsonl(OUT / "base" / "samples.jsonl")
    prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    rewards = np.array([r["reward"] for r in rows], dtype=float)
    batch = params["reference"]["batch_size"]
    trust = params["model"]["trust_remote_code"]
    reference, _ = load_model(params["model"]["base"], trust)
    lagged, _ = load_model(DATA / "train" / method / "lagged_model", trust)
    logp_theta = np.array(sequence_logprobs(model, tokenizer, prompts, completions, batch))
    logp_ref = np.array(sequence_logprobs(reference, tokenizer, prompts, completions, batch))
    logp_q = np.array(sequence_logprobs(lagged, tokenizer, prompts, completions, batch))
    return paper_bounds(logp_theta, logp_ref, rewards, logp_q=logp_q)
