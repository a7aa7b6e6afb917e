"""The Task interface every verifier implements, and the one check every score goes through.

A task provides

  score(completion, answer, metadata=None, prompt=None) -> float in [0, 1]   (partial credit allowed)
  extract(completion, prompt=None) -> str | None                             (the answer maj@k votes on)
  success(completion, answer, metadata=None, prompt=None) -> 0 | 1           (full credit: the reward)
  prompts(n, seed) -> [{id, prompt, answer, metadata}]          (only tasks that generate prompts)
  stats() -> dict                                               (counters worth reporting, e.g. timeouts)
  close()                                                       (release a worker process, if any)

and a classmethod `from_config(config)` that builds it from params.yaml's typed `task:` section
(iwsft.config.schema.Task; iwsft.tasks.build picks the class by `task.name`).

The reward is binary (the raw schema's 0 | 1, the paper's D+): 1 only for a score of 1.0, so a
reasoning-gym partial credit (a substring of the answer) is a failure, as in the demo's verifier.

`prompt` (a string or a message list), where the caller has it: an answer whose source is an
expression copied from the prompt is no answer (iwsft.tasks.text.copies_prompt; math and
reasoning_gym, whose extraction could otherwise read a restated question as an answer).
Every built-in reads the completion through iwsft.tasks.text.ascii_numbers first (`−5` is `-5`).
`try_scorer` calls a task once before a stage's sampling, so that a scorer that raises fails then.
"""

from __future__ import annotations

import numbers
import traceback
from pathlib import Path
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

    def extract(self, completion: str | None, prompt=None) -> str | None:
        """The answer this completion gives (None: none found); maj@k counts votes for these."""
        return None if completion is None else completion.strip()

    def score(self, completion: str | None, answer, metadata: Mapping | None = None, prompt=None) -> float:
        raise NotImplementedError

    def success(self, completion: str | None, answer, metadata: Mapping | None = None, prompt=None) -> int:
        """The pipeline's binary reward: 1 for full credit only."""
        return int(self.score(completion, answer, metadata, prompt) >= 1.0)

    def prompts(self, n: int, seed: int) -> list[dict]:
        raise UserError(f"task {self.name!r} does not generate prompts: bring a prompts file "
                        f"(one JSON record per line with id, prompt, answer, optional metadata)")

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        """Release what the task holds (the math task's worker process)."""


PREVIEW_CHARS = 60  # a completion quoted in a message or by `iwsft score`
PACKAGE = str(Path(__file__).resolve().parents[1])  # src/iwsft: frames there are not the user's code


def shorten(text, limit: int = PREVIEW_CHARS) -> str:
    """`text` (any value, as str) cut to `limit` characters, "..." marking the cut."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def raised(what: str, error: Exception, completion, answer=None) -> UserError:
    """The UserError for a user's function (`task.scorer ...`, `task.extractor ...`) that raised on a
    completion: the exception, where in the user's code, the completion (shortened) and the answer."""
    # the user's line, not ours: a call with the wrong arguments fails in iwsft's own frame
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(PACKAGE)]
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    against = "" if answer is None else f" with the answer {shorten(answer)!r}"
    return UserError(f"{what} raised {type(error).__name__}: {shorten(error, 200)}{where}, "
                     f"on the completion {shorten(completion)!r}{against}")


def try_scorer(task: Task, record: Mapping, source: str) -> None:
    """Score the first prompt of `source` once, with its own answer as the completion, before a stage
    samples: a scorer (or extractor) that raises then stops the stage in seconds, not after the
    sampling. The score itself is not checked (a scorer may want more than the bare answer)."""
    completion = str(record["answer"])
    try:
        task.extract(completion, record["prompt"])
        task.score(completion, record["answer"], record.get("metadata"), record["prompt"])
    except UserError as error:
        raise UserError(f"{error} (a trial call before sampling, on the first prompt of {source}, "
                        f"id {record.get('id')!r}, its answer as the completion)") from None


def check_score(value, where: str) -> float:
    """A score as a float in [0, 1]; UserError naming `where` otherwise (a verifier that returns
    None or 2.0 is a bug to show, not a 0 to train on)."""
    if isinstance(value, bool):
        return float(value)
    # compared as it is, not as a float: float() of a 400-digit int raises; NaN fails the comparison.
    # numbers.Real: numpy's float32 and int64 are numbers too
    if not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise UserError(f"{where} returned {shorten(repr(value))}: a score must be a number in [0, 1]")
    return float(value)
