"""evaluate@MODEL: sample the held-out prompts and score them; estimate the paper's bound.

- Scored by the task's verifier (iwsft.tasks, params `task:`): a sample is correct for full credit;
  maj@k votes on the task's extracted answers (`task.extract`), not on raw strings.
- n samples per prompt at T=1 -> pass@1 with a 95 % CI and its unclipped standard error
  `pass_at_1_se` (clustered by prompt), coverage, maj@k; one greedy completion per prompt -> greedy accuracy.
- A completion cut off at max_new_tokens (`finished` false) is not an answer unless
  `evaluate.score_unfinished`: scored 0, no maj@k vote (its last number is not the model's answer);
  `unfinished` / `unfinished_greedy` count them per model. The bounds use the same rewards.
- The first `evaluate.log_samples` prompts' samples (prompt, completion, extracted answer, reward) go to
  the stage's MLflow run as a table (iwsft.tracking.sample_table), shown in the MLflow UI.
- `model_sha256`: the hash of the model directory that was scored (iwsft.model.hashing), so the register
  stage can refuse metrics that belong to another model (e.g. train re-run, evaluate not).
- The bounds (PAPER.md Eqs. 3-5, 19) need samples from pi_ref: the `baseline` stage (`--model base`)
  saves its own T=1 samples, and every trained model scores those same samples: log pi_theta, log pi_ref and,
  for the iw bound, log q with the q the method trained with (methods.trained_q): theta itself for
  q_mode current (the bound then equals J), the EMA copy train saved for q_mode ema; an SFT method has
  no q and gets the SFT bound only. `bound_q` in the metrics says which.

The scoring and the bounds are iwsft.evaluation.scoring; this module reads, samples and writes.
"""

from __future__ import annotations

import numpy as np

from iwsft.config.schema import Params
from iwsft.data.eval_prompts import read_eval_prompts
from iwsft.data.records import read_jsonl
from iwsft.io.durable import write_json_atomic, write_jsonl_atomic
from iwsft.encoding.chat import ChatFormat, check_renderable
from iwsft.evaluation.generation import sample_with_greedy
from iwsft.evaluation.sharding import claim_device, is_main, map_shards
from iwsft.evaluation.metrics import paper_bounds
from iwsft.evaluation.scoring import reference_sample_bounds, score_samples, trajectory_logprobs
from iwsft.methods import evaluate_stage, trained_q
from iwsft.model.artifacts import load_model_for
from iwsft.model.hashing import directory_sha256
from iwsft.runtime import quiet
from iwsft.stages import DATA, model_dir
from iwsft.tasks import from_params, try_scorer
from iwsft.tracking.runs import track_stage
from iwsft.tracking.sample_table import link_file, log_sample_table, sample_table

OUT = DATA / "evaluate"


def run(params: Params, method: str) -> None:
    config, seed = params.evaluate, params.seed
    task = from_params(params)  # first: a scorer that does not import fails before the sampling
    # checked (iwsft.data.eval_prompts): a file without answers fails here, naming line, id and field
    prompts_file = read_eval_prompts(params.curate.eval_prompts)
    problems = prompts_file.records
    try_scorer(task, problems[0], params.curate.eval_prompts)  # a scorer that raises fails now, not after sampling
    scored = directory_sha256(model_dir(method, params))  # the files as loaded, before the long sampling
    claim_device()  # the GPU of this process when there are several
    model, tokenizer = load_model_for(params, model_dir(method, params))  # the GPU in bf16 when there is one
    prompts, gold = [p["prompt"] for p in problems], [p["answer"] for p in problems]
    metadata = [p.get("metadata") for p in problems]
    chat = ChatFormat.from_params(params, tokenizer)
    check_renderable(problems, chat, params.curate.eval_prompts, prompts_file.lines)
    generate = dict(max_new_tokens=config.max_new_tokens, seed=seed + 1, batch_size=config.batch_size,
                    show_progress=not quiet(), chat=chat)
    # the samples and the greedy completion continue from one pre-fill of each prompt; with
    # launch.num_processes > 1 each process draws its share (iwsft.evaluation.sharding) and all get every
    # draw (the scoring below is sharded too); the main process judges and writes
    pairs = map_shards(prompts, lambda indices, shard: list(zip(*sample_with_greedy(
        model, tokenizer, shard, num_samples=config.samples_per_prompt, temperature=config.temperature,
        max_batch_tokens=config.max_batch_tokens, prompt_indices=indices, **generate))), everywhere=True)
    drawn, greedy = [s for s, _ in pairs], [g for _, g in pairs]
    # the sampled tokens too: the bounds score pi_ref's samples on exactly those tokens
    samples = [{"prompt": p, "completion": c.text, "completion_ids": c.token_ids + ([c.stop_token_id] if c.finished else []),
                "finished": c.finished} for p, row in zip(prompts, drawn) for c in row]
    # pi_ref's log-prob of its own samples, scored once here, where the model is pi_ref: every trained
    # model's bounds need it (reference_sample_bounds), and would otherwise load pi_ref to score it again
    own_logprobs = trajectory_logprobs(model, tokenizer, params, samples) if method == "base" else None
    if not is_main():  # another process than the main one: its share of the bounds' scoring, then done
        task.close()
        if method != "base":
            _bounds(model, tokenizer, params, method)
        return
    correct, metrics = score_samples(
        task, [[c.text for c in samples] for samples in drawn], [g.text for g in greedy], gold, metadata, config.maj_k,
        prompts=prompts, sampled_finished=[[c.finished for c in samples] for samples in drawn],
        greedy_finished=[g.finished for g in greedy], score_unfinished=config.score_unfinished)
    metrics.update(model_sha256=scored, **task.stats())  # stats: e.g. math's score_timeouts
    table = sample_table(task, prompts, gold, metadata, drawn, greedy, correct, config.log_samples,
                         config.score_unfinished)  # before close: the greedy rows are scored by the same verifier
    task.close()
    out = OUT / method
    rewards = [int(r) for row in correct for r in row]
    rows = [{**sample, "reward": reward, **({"ref_logprob": own_logprobs[i]} if own_logprobs is not None else {})}
            for i, (sample, reward) in enumerate(zip(samples, rewards, strict=True))]
    write_jsonl_atomic(out / "samples.jsonl", rows)
    if method == "base":  # theta = pi_ref: every bound equals c_ref; nothing to score
        zeros = np.zeros(len(rows))
        metrics.update(paper_bounds(zeros, zeros, np.array([r["reward"] for r in rows]), logp_q=zeros), bound_q="pi_ref")
    else:  # every trained model scores the baseline's own T=1 samples; frees `model` first
        metrics.update(_bounds(model, tokenizer, params, method))
    write_json_atomic(out / "metrics.json", metrics)
    run_id = track_stage(evaluate_stage(method), params, sections=["seed", "evaluate"], method=method, metrics=metrics,
                         tags={"iwsft.model_sha256": scored})
    log_sample_table(params, run_id, table, link_file(method))  # browsable in the MLflow UI (iwsft.tracking.sample_table)


def _bounds(model, tokenizer, params: Params, method: str) -> dict:
    """J(theta) and the lower bounds on pi_ref's own samples (iwsft.evaluation.scoring); with several
    processes each scores its share of the rows and every one calls this (the scoring is collective)."""
    return reference_sample_bounds(model, tokenizer, params, read_jsonl(OUT / "base" / "samples.jsonl"),
                                   trained_q(method, params.train.q_mode), DATA / "train" / method / "q_model")
