"""solutions: a worked solution per train prompt, written by a rule (iwsft.data.worked_solutions),
as the raw samples file of the teacher-data regime (DESIGN.md schema): data/teacher/raw.jsonl.

It stands for a stronger model's solutions (the paper's s1K was written by another model than the one
fine-tuned): a file of text without token ids, as a user brings one, so curate and reference
re-tokenize it with model.base's tokenizer. Every record is checked with the task's own verifier
before it is written (reward 1 by construction: one that is not is a bug here, and stops the stage).
Reached only when curate.raw names data/teacher/raw.jsonl (profiles/smollm2-teacher.yaml).
"""

from __future__ import annotations

from iwsft.config.schema import Params
from iwsft.data.conversation import is_message_list
from iwsft.data.eval_prompts import read_eval_prompts
from iwsft.data.worked_solutions import expression_of, solve
from iwsft.errors import UserError
from iwsft.io.durable import write_json_atomic, write_jsonl_atomic
from iwsft.stages import DATA
from iwsft.tasks import from_params

OUT = DATA / "teacher"


def _text(prompt) -> str:
    """The question's text: a plain prompt, or the last user message of a conversational one."""
    if is_message_list(prompt):
        return next(m["content"] for m in reversed(prompt) if m.get("role") == "user")
    return prompt


def solutions(problems: list[dict], task, source: str) -> list[dict]:
    """One raw record per problem: its worked solution, rewarded by `task` (UserError naming the
    record when a prompt holds no expression the rule can write out)."""
    records = []
    for number, problem in enumerate(problems, start=1):
        try:
            text, _ = solve(expression_of(_text(problem["prompt"]), problem.get("metadata")))
        except ValueError as error:
            raise UserError(f"{source}: record {number} (id {problem['id']}): {error}") from None
        reward = task.success(text, problem["answer"], problem.get("metadata"), problem["prompt"])
        if reward != 1:
            raise AssertionError(f"the worked solution {text!r} to {problem['id']} scores {reward}, not 1 "
                                 f"(answer {problem['answer']!r}): a bug in iwsft.data.worked_solutions")
        records.append({
            "id": f"{problem['id']}-teacher", "prompt": problem["prompt"],
            # TRL's conversational form when the prompt is a message list, as the sample stage writes it
            "completion": [{"role": "assistant", "content": text}] if is_message_list(problem["prompt"]) else text,
            "answer": problem["answer"], "reward": reward,
            **({"metadata": problem["metadata"]} if problem.get("metadata") else {}),
        })
    return records


def run(params: Params) -> None:
    source = params.sample.prompts  # the prompts pi_ref would sample on: the same pool, another writer
    task = from_params(params)
    try:
        records = solutions(read_eval_prompts(source).records, task, source)
    finally:
        task.close()
    write_jsonl_atomic(OUT / "raw.jsonl", records)
    write_json_atomic(OUT / "summary.json", {"solutions": len(records), "prompts": source})
