"""The embedded demo task: reasoning-gym `chain_sum` with 2-3 terms of 1-2 digits, and its verifier.

A prompt is the bare expression (`38-57-10=`), a completion the answer (`-29`). The four strata
(2 or 3 terms x 1 or 2 digits) keep a tiny model's accuracy moderate (DEMO_FEASIBILITY.md):
curation then has something to keep and something to drop. The sizes and ranges are params.yaml's
`task:` knobs (min/max_terms, min/max_digits, pretrain_examples, train_prompts, eval_prompts).

reasoning-gym builds item i from Random(seed + i), so datasets with nearby seeds overlap; the
pools below use seeds far apart and every held-out expression is removed from the other pools,
so "held-out" means unseen.

Extraction (what maj@k votes on): the stripped completion, exactly what `verify` compares, so the
demo's votes and numbers are those of before the task layer existed. Both read the completion with
Unicode minus signs and full-width digits as ASCII (`−29` is `-29`; the demo's character model
writes neither, so its numbers stay). A restated question (`38-57-10=`) is not a number: it scores 0.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import reasoning_gym
from reasoning_gym.utils import compute_decimal_reward

from iwsft.tasks.base import Task
from iwsft.tasks.text import ascii_numbers

if TYPE_CHECKING:
    from iwsft.config.schema import Task as TaskConfig

DATASET = "chain_sum"  # reasoning-gym's dataset of the same name
PRETRAIN_SEED_OFFSET = 0
TRAIN_SEED_OFFSET = 20_000_000
EVAL_SEED_OFFSET = 10_000_000


def _problems(count: int, seed: int, task: TaskConfig) -> list[dict]:
    dataset = reasoning_gym.create_dataset(
        DATASET,
        size=count,
        seed=seed,
        min_terms=task.min_terms,
        max_terms=task.max_terms,
        min_digits=task.min_digits,
        max_digits=task.max_digits,
    )
    problems = []
    for item in dataset:
        meta = item["metadata"]
        problems.append(
            {
                "prompt": meta["expression"].replace(" ", "") + "=",
                "answer": str(item["answer"]),
                "stratum": f"{meta['num_terms']}t{meta['num_digits']}d",
            }
        )
    return problems


def build_splits(task: TaskConfig, seed: int) -> dict[str, list[dict]]:
    """Disjoint pools: `pretrain` (worked examples for pi_ref), `train` (prompts pi_ref samples
    on), `eval` (held-out prompts). Pools are over-generated, then the eval prompts are removed
    from the others and each is truncated to its configured size."""
    eval_pool = _problems(task.eval_prompts, seed + EVAL_SEED_OFFSET, task)
    held_out = {p["prompt"] for p in eval_pool}
    splits = {"eval": eval_pool}
    for name, size, offset in (
        ("pretrain", task.pretrain_examples, PRETRAIN_SEED_OFFSET),
        ("train", task.train_prompts, TRAIN_SEED_OFFSET),
    ):
        pool = [p for p in _problems(int(size * 1.5) + 10, seed + offset, task) if p["prompt"] not in held_out]
        splits[name] = pool[:size]
    for name, rows in splits.items():
        prefix = name[:2]
        for index, row in enumerate(rows):
            row["id"] = f"{prefix}{index:06d}"
    return splits


@lru_cache(maxsize=65536)
def verify(completion: str | None, answer: str) -> int:
    """Reward 1 only for an exactly right number (reasoning-gym's decimal comparison, which allows
    `+7`, `07`, `7.0`). Its partial credit for substrings (`15` for `5` scores 0.5) counts as wrong."""
    if completion is None:
        return 0
    return int(compute_decimal_reward(ascii_numbers(completion).strip(), ascii_numbers(str(answer))) == 1.0)


class ChainSumTask(Task):
    """The embedded demo: the completion is the bare number (`-29`); `verify` scores it."""

    name = "chain_sum"

    def __init__(self, config: TaskConfig):
        self.config = config

    @classmethod
    def from_config(cls, config: TaskConfig) -> "ChainSumTask":
        return cls(config)

    def extract(self, completion, prompt=None):
        # exactly what verify compares (and what maj@k voted on before tasks existed)
        return None if completion is None else ascii_numbers(completion).strip()

    def score(self, completion, answer, metadata=None, prompt=None):
        return float(verify(completion, answer))

    def prompts(self, n, seed):
        return [{"id": f"cs{seed}-{i:06d}", "prompt": p["prompt"], "answer": p["answer"],
                 "metadata": {"stratum": p["stratum"]}}
                for i, p in enumerate(_problems(n, seed, self.config))]
