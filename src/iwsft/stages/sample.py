"""sample: K completions per training prompt from pi_ref at temperature 1, rewarded by the
verifier, written as the raw samples file (DESIGN.md schema). Bring your own raw file instead by
pointing `curate.raw` at it."""

from __future__ import annotations

from iwsft.artifacts import load_model
from iwsft.demo_task import verify
from iwsft.generation import generate_completions
from iwsft.schema import read_jsonl, write_json_atomic, write_jsonl_atomic
from iwsft.stages import DATA
from iwsft.runtime import quiet

OUT = DATA / "sample"


def run(params: dict) -> None:
    config = params["sample"]
    model, tokenizer = load_model(params["model"]["base"], params["model"]["trust_remote_code"])
    problems = read_jsonl(DATA / "prepare" / "train_prompts.jsonl")
    completions = generate_completions(
        model, tokenizer, [p["prompt"] for p in problems], num_samples=config["k"],
        temperature=config["temperature"], max_new_tokens=config["max_new_tokens"], seed=params["seed"],
        batch_size=config["batch_size"], show_progress=not quiet(),
    )
    # An empty completion (EOS first) is a failed sample; the raw schema requires text, so it is
    # counted in the summary instead of written.
    records = [
        {"id": f"{problem['id']}-{j}", "prompt": problem["prompt"], "completion": completion,
         "answer": problem["answer"], "reward": verify(completion, problem["answer"])}
        for problem, samples in zip(problems, completions)
        for j, completion in enumerate(samples)
        if completion.strip()
    ]
    rewards_per_prompt = [sum(verify(c, p["answer"]) for c in samples) for p, samples in zip(problems, completions)]
    k = config["k"]
    write_jsonl_atomic(OUT / "raw.jsonl", records)
    write_json_atomic(OUT / "summary.json", {
        "samples": len(records),
        "empty_completions_dropped": len(problems) * config["k"] - len(records),
        "sample_accuracy": sum(r["reward"] for r in records) / max(len(records), 1),
        "prompts_with_a_success": sum(r > 0 for r in rewards_per_prompt) / max(len(problems), 1),
        "prompts_with_mixed_results": sum(0 < r < k for r in rewards_per_prompt) / max(len(problems), 1),
    })
