"""sample: K completions per training prompt from pi_ref at temperature 1, rewarded by the task's
verifier (iwsft.tasks, params `task:`; reward 1 = full credit), written as the raw samples file
(DESIGN.md schema). Bring your own raw file instead by pointing `curate.raw` at it."""

from __future__ import annotations

from iwsft.artifacts import load_model_for
from iwsft.generation import generate_completions
from iwsft.schema import read_jsonl, write_json_atomic, write_jsonl_atomic
from iwsft.stages import DATA
from iwsft.tasks import from_params
from iwsft.runtime import quiet

OUT = DATA / "sample"


def run(params: dict) -> None:
    config = params["sample"]
    task = from_params(params)  # first: a scorer that does not import fails before minutes of sampling
    model, tokenizer = load_model_for(params, params["model"]["base"])  # the GPU in bf16 when there is one
    problems = read_jsonl(DATA / "prepare" / "train_prompts.jsonl")
    completions = generate_completions(
        model, tokenizer, [p["prompt"] for p in problems], num_samples=config["k"],
        temperature=config["temperature"], max_new_tokens=config["max_new_tokens"], seed=params["seed"],
        batch_size=config["batch_size"], show_progress=not quiet(),
    )
    rewards = [[task.success(c, p["answer"], p.get("metadata")) for c in samples] for p, samples in zip(problems, completions)]
    task.close()
    # An empty completion (EOS first) is a failed sample; the raw schema requires text, so it is
    # counted in the summary instead of written.
    records = [
        {"id": f"{problem['id']}-{j}", "prompt": problem["prompt"], "completion": completion,
         "answer": problem["answer"], "reward": reward}
        for problem, samples, row in zip(problems, completions, rewards)
        for j, (completion, reward) in enumerate(zip(samples, row))
        if completion.strip()
    ]
    rewards_per_prompt = [sum(row) for row in rewards]
    k = config["k"]
    write_jsonl_atomic(OUT / "raw.jsonl", records)
    write_json_atomic(OUT / "summary.json", {
        "samples": len(records),
        "empty_completions_dropped": len(problems) * config["k"] - len(records),
        "sample_accuracy": sum(r["reward"] for r in records) / max(len(records), 1),
        "prompts_with_a_success": sum(r > 0 for r in rewards_per_prompt) / max(len(problems), 1),
        "prompts_with_mixed_results": sum(0 < r < k for r in rewards_per_prompt) / max(len(problems), 1),
        **task.stats(),  # e.g. math's score_timeouts; nothing for chain_sum
    })
