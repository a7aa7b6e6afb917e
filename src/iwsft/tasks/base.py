"""The Task interface every verifier implements, and the one check every score goes through.

A task provides

  score(completion, answer, metadata=None) -> float in [0, 1]   (partial credit allowed)
  extract(completion) -> str | None                             (the answer maj@k votes on)
  success(completion, answer, metadata=None) -> 0 | 1           (full credit: the pipeline's reward)
  prompts(n, seed) -> [{id, prompt, answer, metadata}]          (only tasks that generate prompts)
  stats() -> dict                                               (counters worth reporting, e.g. timeouts)
  close()                                                       (release a worker process, if any)

and a classmethod `from_config(config)` that builds it from params.yaml's typed `task:` section
(iwsft.config.schema.Task; iwsft.tasks.build picks the class by `task.name`).

The reward is binary (the raw schema's 0 | 1, the paper's D+): 1 only for a score of 1.0, so a
reasoning-gym partial credit (a substring of the answer) is a failure, as in the demo's verifier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from iwsft.errors import UserError

if TYPE_CHECKING:
    from iwsft.config.schema import Task as TaskConfig


class Task:
    """The interface; subclasses override `score` and, where the answer is not the whole
    completion, `extract`."""

    name = "task"

    @classmethod
    def from_config(cls, config: TaskConfig) -> "Task":
        return cls()

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
