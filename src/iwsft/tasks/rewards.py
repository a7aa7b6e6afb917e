"""A task's verdict on records of the raw schema: rewarding the records that have an `answer` but
no `reward` (the curate stage, before its rules), and re-scoring those that carry both so that a
wrong verifier is caught at the raw gate (iwsft.gates.raw).

The task is passed in, not built here: the caller owns it (and closes it).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from iwsft.data.conversation import completion_content

MAX_AGREEMENT_EXAMPLES = 5


def _reward(record: dict, task) -> int:
    # the prompt too: an answer copied from the question is no success (iwsft.tasks.text.copies_prompt)
    return task.success(completion_content(record["completion"]), record["answer"], record.get("metadata"),
                        record.get("prompt"))


def fill_missing_rewards(records: Iterable[dict], task) -> int:
    """Reward, in place, each record that has an `answer` but no `reward` with `task.success`
    (an iwsft.tasks.Task); returns how many were rewarded."""
    rewarded = 0
    for record in records:
        if record.get("reward") is None and record.get("answer") is not None:
            record["reward"] = _reward(record, task)
            rewarded += 1
    return rewarded


def verifier_rewards(records: Sequence[dict], task) -> list[int | None]:
    """Per record, the task's reward for a record that carries both `answer` and `reward` (None
    for the others): what the raw gate compares the file's own reward with."""
    return [_reward(r, task) if r.get("answer") is not None and r.get("reward") is not None else None for r in records]


def reward_agreement(records: Sequence[dict], rescored: Sequence[int | None]) -> dict:
    """{checked, disagreeing, fraction, examples (up to 5 ids)}: how often the file's reward and
    the verifier's (`verifier_rewards`) differ; fraction is None when nothing could be checked."""
    checked = [(r, v) for r, v in zip(records, rescored) if v is not None]
    disagreeing = [r for r, v in checked if int(r["reward"]) != int(v)]
    return {"checked": len(checked), "disagreeing": len(disagreeing),
            "fraction": len(disagreeing) / len(checked) if checked else None,
            "examples": [r.get("id") for r in disagreeing[:MAX_AGREEMENT_EXAMPLES]]}
