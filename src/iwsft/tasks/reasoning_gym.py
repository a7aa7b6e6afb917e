"""The `reasoning_gym` task: any reasoning-gym dataset (`task.dataset`, `task.kwargs`), scored by
that dataset's own `score_answer` on the extracted answer.

Extraction (what maj@k votes on and what reasoning-gym scores): the last `<answer>...</answer>` if
the completion has one (reasoning-gym's own `extract_answer` and its prompt convention); otherwise
`task.extract_fallback`:
  `last_line` (default): the last non-empty line, without an "Answer:" / "The answer is" label or
  a final period; it suits datasets whose answers are words or lists as well as numbers.
  `last_number`: the last number in the completion (`-1,024`, `3.5`, `2/3`); it suits arithmetic
  with a chatty model ("12 + 7 = 19" -> "19"), but cuts a list answer to its last item.
The completion is read with Unicode minus signs and full-width digits as ASCII (`The answer is −5`).

A restated question is no answer: when the prompt is given, an answer whose source (the tag's
content, the last line, or for `last_number` the arithmetic run that ends with the number:
`0 + 3` in `Calculate 0 + 3.`) is an expression copied from the prompt scores 0 and casts no vote.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Mapping

from iwsft.errors import UserError
from iwsft.tasks.base import Task, check_score
from iwsft.tasks.text import ascii_numbers, copies_prompt, expression_ending_at

if TYPE_CHECKING:
    from iwsft.config.schema import Task as TaskConfig

ANSWER_LABEL = re.compile(r"^(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*[:=]?\s*", re.IGNORECASE)
NUMBER = re.compile(r"[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")


def last_line(text: str) -> str | None:
    return _last_line(text)[0]


def _last_line(text: str) -> tuple[str | None, str | None]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None, None
    line = ANSWER_LABEL.sub("", lines[-1]).strip()
    line = line[:-1].rstrip() if line.endswith(".") and len(line) > 1 else line
    return line or None, line or None


def last_number(text: str) -> str | None:
    return _last_number(text)[0]


def _last_number(text: str) -> tuple[str | None, str | None]:
    numbers = list(NUMBER.finditer(text))
    if not numbers:
        return None, None
    last = numbers[-1]
    return last.group(), expression_ending_at(text, last.start(), last.end())


# task.extract_fallback: each gives (answer, source), the source being the text the answer was read from
FALLBACKS = {"last_line": _last_line, "last_number": _last_number}


class ReasoningGymTask(Task):
    """Any reasoning-gym dataset, scored by that dataset's own `score_answer` on the extracted answer.

    Some datasets' scorers read the entry's `metadata` (as `prompts()` writes it, and as a prompts
    file may carry it); one that needs it and gets none is an error, not a silent 0."""

    name = "reasoning_gym"

    def __init__(self, dataset: str, kwargs: Mapping | None = None, extract_fallback: str = "last_line"):
        import reasoning_gym
        from reasoning_gym.factory import DATASETS
        from reasoning_gym.utils import extract_answer

        self.dataset, self.kwargs = dataset, dict(kwargs or {})
        self._fallback = FALLBACKS[extract_fallback]
        self._tagged = extract_answer
        self.errors = 0
        try:  # the scorer needs an instance; its size is irrelevant to scoring
            self._data = reasoning_gym.create_dataset(dataset, **{"size": 1, "seed": 0, **self.kwargs})
        except ValueError as error:
            if dataset not in DATASETS:
                raise UserError(f"task.dataset: reasoning-gym has no dataset {dataset!r} (e.g. basic_arithmetic, "
                                f"chain_sum, gsm_symbolic; all: reasoning_gym.factory.DATASETS)") from None
            raise UserError(f"task.kwargs: reasoning-gym {dataset} rejects {self.kwargs}: {error}") from None
        except (TypeError, AssertionError) as error:
            raise UserError(f"task.kwargs: reasoning-gym {dataset} rejects {self.kwargs}: {error}") from None

    @classmethod
    def from_config(cls, config: TaskConfig) -> "ReasoningGymTask":
        return cls(config.dataset, config.kwargs, config.extract_fallback)

    def extract(self, completion, prompt=None):
        if completion is None:
            return None
        completion = ascii_numbers(completion)
        tagged = self._tagged(completion)
        answer, source = (tagged, tagged) if tagged is not None else self._fallback(completion)
        return None if copies_prompt(source, prompt) else answer

    def score(self, completion, answer, metadata=None, prompt=None):
        entry = {"question": "", "answer": ascii_numbers(str(answer)), "metadata": dict(metadata or {})}
        extracted = self.extract(completion, prompt)
        try:
            value = self._data.score_answer(extracted, entry)
        except KeyError as error:
            if not metadata:
                raise UserError(f"reasoning-gym {self.dataset}'s score_answer needs the entry's metadata "
                                f"(missing {error}): give each prompt its `metadata`, as `iwsft` generates it") from None
            self.errors += 1  # a completion the scorer chokes on is a wrong answer, counted
            return 0.0
        except Exception:  # noqa: BLE001  (same: the model's text broke the dataset's parser)
            self.errors += 1
            return 0.0
        return check_score(value, f"reasoning-gym {self.dataset}.score_answer")

    def prompts(self, n, seed):
        import reasoning_gym

        data = reasoning_gym.create_dataset(self.dataset, **{**self.kwargs, "size": n, "seed": seed})
        return [{"id": f"{self.dataset}-{seed}-{i:06d}", "prompt": item["question"], "answer": str(item["answer"]),
                 "metadata": item.get("metadata", {})} for i, item in enumerate(data)]

    def stats(self):
        return {"score_errors": self.errors}
