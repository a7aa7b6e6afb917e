"""Tasks and their verifiers: what a completion is worth, and which answer it gives.

Every stage that scores goes through one `Task` (picked by params.yaml `task.name`, built by
`from_params`): `sample` (the reward of each sample), curate (the reward of a raw record that has an
`answer` but no `reward`, `iwsft.data.curation.fill_missing_rewards`) and `evaluate` (pass@1, greedy,
maj@k). A task provides

  score(completion, answer, metadata=None) -> float in [0, 1]   (partial credit allowed)
  extract(completion) -> str | None                             (the answer maj@k votes on)
  success(completion, answer, metadata=None) -> 0 | 1           (full credit: the pipeline's reward)
  prompts(n, seed) -> [{id, prompt, answer, metadata}]          (only tasks that generate prompts)
  stats() -> dict                                               (counters worth reporting, e.g. timeouts)

Built-ins (iwsft.tasks.builtin, iwsft.tasks.math): chain_sum (the embedded demo, unchanged),
reasoning_gym (any reasoning-gym dataset), math (math-verify, time-boxed), exact (normalised string
match) and custom (your own `task.scorer: mypkg.scoring:score`).

The reward is binary (the raw schema's 0 | 1, the paper's D+): 1 only for a score of 1.0, so a
reasoning-gym partial credit (a substring of the answer) is a failure, as in the demo's verifier.
"""

from __future__ import annotations

from typing import Mapping

from iwsft.errors import UserError

NAMES = ("chain_sum", "reasoning_gym", "math", "exact", "custom")


class Task:
    """The interface; subclasses override `score` (or `score_answer`) and `extract`."""

    name = "task"

    def extract(self, completion: str | None) -> str | None:
        """The answer this completion gives (None: none found); maj@k counts votes for these."""
        return None if completion is None else completion.strip()

    def score(self, completion: str | None, answer, metadata: Mapping | None = None) -> float:
        raise NotImplementedError

    def success(self, completion: str | None, answer, metadata: Mapping | None = None) -> int:
        """The pipeline's binary reward: 1 for full credit only."""
        return int(self.score(completion, answer, metadata) >= 1.0)

    def prompts(self, n: int, seed: int) -> list[dict]:
        raise UserError(f"task {self.name!r} does not generate prompts: bring a prompts file "
                        f"(one JSON record per line with id, prompt, answer, optional metadata)")

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        """Release what the task holds (the math task's worker process)."""


def check_score(value, where: str) -> float:
    """A score as a float in [0, 1]; UserError naming `where` otherwise (a verifier that returns
    None or 2.0 is a bug to show, not a 0 to train on)."""
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise UserError(f"{where} returned {value!r}: a score must be a number in [0, 1]")
    return float(value)


def build(config: Mapping) -> Task:
    """The task a `task:` section (already checked by iwsft.config.schema) describes."""
    name = config.get("name")
    if name == "math":
        from iwsft.tasks.math import MathTask

        return MathTask(timeout_s=float(config.get("timeout_s", 5.0)))
    from iwsft.tasks import builtin

    if name == "chain_sum":
        return builtin.ChainSumTask(config)
    if name == "reasoning_gym":
        if not config.get("dataset"):
            raise UserError("task.dataset: missing (reasoning_gym needs a dataset name, e.g. basic_arithmetic)")
        return builtin.ReasoningGymTask(config["dataset"], config.get("kwargs") or {},
                                        config.get("extract_fallback", "last_line"))
    if name == "exact":
        return builtin.ExactTask()
    if name == "custom":
        if not config.get("scorer"):
            raise UserError("task.scorer: missing (custom needs a scorer, e.g. mypkg.scoring:score)")
        return builtin.CustomTask(config["scorer"], config.get("extractor"))
    raise UserError(f"task.name: unknown task {name!r}; the built-in ones are {list(NAMES)}")


def from_params(params: Mapping) -> Task:
    """The task of a whole params dict (its `task:` section)."""
    return build(params["task"])

