"""sample: K completions per training prompt from pi_ref at temperature 1, rewarded by the task's
verifier (iwsft.tasks, params `task:`; reward 1 = full credit), written as the raw samples file
(DESIGN.md schema). Bring your own raw file instead by pointing `curate.raw` at it.

Each record also carries `ref_logprob`: log pi_ref(completion_ids | prompt), the stop token included,
scored after drawing by the reference stage's own code (iwsft.training.reference.sequence_logprobs ->
score_reference: fp32 log-softmax), so it equals the reference column summed. The quality stage's
graded_difficulty needs it (pi_ref's probability of the successes it produced on each prompt).

`sample.policy` is the model that draws (model.base unless it names another, e.g. the demo's teacher
from generate/dvc.yaml's prepare_teacher). A policy other than pi_ref must share its tokenizer: the
written tokens are scored by pi_ref as they are, so `ref_logprob` stays log pi_ref (what the quality
stage's scores mean), and `policy_logprob` adds the sampler's own log-prob of them."""

from __future__ import annotations

from iwsft.config.schema import Params
from iwsft.errors import UserError
from iwsft.model.artifacts import load_model_for, load_tokenizer
from iwsft.encoding.chat import ChatFormat, check_renderable
from iwsft.data.conversation import is_message_list
from iwsft.data.eval_prompts import read_eval_prompts
from iwsft.evaluation.generation import sample_completions
from iwsft.evaluation.sharding import claim_device, is_main, map_shards
from iwsft.training.reference import sequence_logprobs, tokenizer_mismatch
from iwsft.io.durable import write_json_atomic, write_jsonl_atomic
from iwsft.stages import DATA
from iwsft.tasks import from_params, try_scorer
from iwsft.runtime import quiet

OUT = DATA / "sample"


def run(params: Params) -> None:
    config = params.sample
    task = from_params(params)  # first: a scorer that does not import fails before minutes of sampling
    # the demo's prepare output, the prompts stage's, or yours: checked as the eval prompts are
    # (id, prompt, answer, optional metadata), so a bad line is named before minutes of sampling
    prompts_file = read_eval_prompts(config.prompts)
    problems = prompts_file.records
    try_scorer(task, problems[0], config.prompts)  # a scorer that raises fails now, not after the sampling
    on_policy = params.sample.policy == params.model.base
    claim_device()  # the GPU in bf16 when there is one (this process's, with several)
    model, tokenizer = load_model_for(params, params.model.base if on_policy else params.sample.policy)
    # prompts rendered as reference and train will see them: in pi_ref's chat format, whoever samples
    chat = ChatFormat.from_params(params, tokenizer if on_policy else shared_tokenizer(params, tokenizer))
    check_renderable(problems, chat, config.prompts, prompts_file.lines)
    # launch.num_processes > 1: each process samples its share (iwsft.evaluation.sharding), and all of them
    # get every draw: the log-probs below are scored in shards too; the main process judges and writes
    drawn = map_shards([p["prompt"] for p in problems], lambda indices, prompts: sample_completions(
        model, tokenizer, prompts, num_samples=config.k,
        temperature=config.temperature, max_new_tokens=config.max_new_tokens, seed=params.seed,
        batch_size=config.batch_size, show_progress=not quiet(), chat=chat, max_batch_tokens=config.max_batch_tokens,
        prompt_indices=indices,
    ), everywhere=True)
    main = is_main()
    completions = [[c.text for c in samples] for samples in drawn]
    # the prompt too: an answer copied from the question is no success (iwsft.tasks.text.copies_prompt);
    # judged once, by the main process (the others only score log-probs and write nothing)
    rewards = [[task.success(c, p["answer"], p.get("metadata"), p["prompt"]) if main else 0 for c in samples]
               for p, samples in zip(problems, completions)]
    task.close()
    # An empty completion (EOS first) is a failed sample; the raw schema requires text, so it is
    # counted in the summary instead of written. Each record keeps the tokens pi_ref sampled, its stop
    # token included (`completion_ids`), and whether it stopped (`finished`): reference and train use
    # exactly those tokens, and curation drops unfinished ones by default.
    records = [
        {"id": f"{problem['id']}-{j}", "prompt": problem["prompt"],
         # TRL's conversational form when the prompt is a message list (one kind per record)
         "completion": [{"role": "assistant", "content": sampled.text}] if is_message_list(problem["prompt"]) else sampled.text,
         "completion_ids": sampled.token_ids + ([sampled.stop_token_id] if sampled.finished else []),
         "finished": sampled.finished, "answer": problem["answer"], "reward": reward,
         **({"metadata": problem["metadata"]} if problem.get("metadata") else {})}
        for problem, samples, row in zip(problems, drawn, rewards)
        for j, (sampled, reward) in enumerate(zip(samples, row))
        if sampled.text.strip()
    ]
    if not on_policy:  # the sampler's own log-prob, then pi_ref in its place (one model in memory at a time)
        for record, logprob in zip(records, _logprobs(model, tokenizer, records, chat, config.batch_size)):
            record["policy_logprob"] = logprob
        del model
        model, tokenizer = load_model_for(params, params.model.base)
    # log pi_ref of exactly the tokens written (completion_ids), as the reference stage scores them
    for record, logprob in zip(records, _logprobs(model, tokenizer, records, chat, config.batch_size)):
        record["ref_logprob"] = logprob
    if not main:
        return
    rewards_per_prompt = [sum(row) for row in rewards]
    k = config.k
    write_jsonl_atomic(OUT / "raw.jsonl", records)
    write_json_atomic(OUT / "summary.json", {
        "policy": params.sample.policy,  # the model that drew them (model.base: on-policy)
        "on_policy": on_policy,
        "samples": len(records),
        "empty_completions_dropped": len(problems) * k - len(records),
        "unfinished": sum(not r["finished"] for r in records),  # cut at max_new_tokens
        "sample_accuracy": sum(r["reward"] for r in records) / max(len(records), 1),
        "prompts_with_a_success": sum(r > 0 for r in rewards_per_prompt) / max(len(problems), 1),
        "prompts_with_mixed_results": sum(0 < r < k for r in rewards_per_prompt) / max(len(problems), 1),
        **task.stats(),  # e.g. math's score_timeouts; nothing for chain_sum
    })


def _logprobs(model, tokenizer, records: list[dict], chat, batch_size: int) -> list[float]:
    """log model(completion_ids + stop | prompt) per record: the written tokens, whoever wrote them."""
    return sequence_logprobs(
        model, tokenizer, [r["prompt"] for r in records], [r["completion"] for r in records], batch_size=batch_size,
        chat=chat, completion_ids=[r["completion_ids"] for r in records], finished=[r["finished"] for r in records],
    ) if records else []


def shared_tokenizer(params: Params, policy_tokenizer):
    """model.base's tokenizer; UserError unless sample.policy's is the same (vocabulary, eos and pad ids)."""
    base, policy = params.model.base, params.sample.policy
    tokenizer = load_tokenizer(base, params.model.trust_remote_code)
    mismatch = tokenizer_mismatch(tokenizer, policy_tokenizer)
    if mismatch:
        raise UserError(f"params.yaml sample.policy: {policy} and model.base {base} must share the tokenizer (pi_ref "
                        f"scores the sampled token ids as they are), but {mismatch}")
    return tokenizer
