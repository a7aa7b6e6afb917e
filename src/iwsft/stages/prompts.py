"""prompts: the train and held-out prompt files from the task's own generator (iwsft.tasks), for a
pretrained pi_ref that needs no `prepare` (the smollm2 profile; yours, when your task has a
generator). Writes data/prompts/train.jsonl (for `sample.prompts`) and data/prompts/eval.jsonl
(for `curate.eval_prompts`), both in the eval prompts schema (id, prompt, answer, metadata).

The two files share no prompt text: generators such as reasoning-gym's repeat questions (two
one-digit terms give only a few hundred), and a train prompt that is also an eval prompt would be
removed by decontamination anyway, after pi_ref spent minutes sampling it. Each pool is drawn
with its own seed, deduplicated by text, and the eval pool wins ties.
"""

from __future__ import annotations

from iwsft.config.schema import Params
from iwsft.errors import UserError
from iwsft.io.durable import write_jsonl_atomic
from iwsft.stages import DATA
from iwsft.tasks import from_params

OUT = DATA / "prompts"
OVERDRAW = 4  # draws per prompt wanted, so that duplicates still leave enough distinct ones


def distinct(problems: list[dict], count: int, taken: set[str]) -> list[dict]:
    """The first `count` problems whose prompt text is new (not in `taken`, not seen before)."""
    kept, seen = [], set(taken)
    for problem in problems:
        if problem["prompt"] not in seen:
            seen.add(problem["prompt"])
            kept.append(problem)
            if len(kept) == count:
                break
    return kept


def draw(task, count: int, seed: int, taken: set[str], pool: str, instruction: str) -> list[dict]:
    problems = [{**p, "prompt": p["prompt"] + instruction} for p in task.prompts(count * OVERDRAW, seed)]
    kept = distinct(problems, count, taken)
    if len(kept) < count:
        raise UserError(f"params.yaml task.{pool}_prompts: {count} distinct {pool} prompts wanted, the task's "
                        f"generator gave {len(kept)} in {count * OVERDRAW} draws (widen task.kwargs or ask for fewer)")
    return kept


def run(params: Params) -> None:
    config = params.task
    missing = [key for key in ("train_prompts", "eval_prompts") if getattr(config, key) is None]
    if missing:
        raise UserError(f"params.yaml task: the prompts stage needs {' and '.join(missing)} (how many to generate)")
    task = from_params(params)
    instruction = params.prompts.instruction
    try:  # a task without a generator (exact, custom) says so, naming the files to bring instead
        held_out = draw(task, config.eval_prompts, params.seed + 1, set(), "eval", instruction)
        train = draw(task, config.train_prompts, params.seed, {p["prompt"] for p in held_out}, "train", instruction)
    finally:
        task.close()
    write_jsonl_atomic(OUT / "eval.jsonl", held_out)
    write_jsonl_atomic(OUT / "train.jsonl", train)
