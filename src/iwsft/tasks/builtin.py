"""The built-in tasks other than math: chain_sum (the demo), reasoning_gym, exact, custom.

Extraction (what maj@k votes on and what reasoning-gym scores):
- chain_sum: the stripped completion, exactly what `demo_task.verify` compares, so the demo's
  votes and numbers are those of before this layer existed.
- reasoning_gym: the last `<answer>...</answer>` if the completion has one (reasoning-gym's own
  `extract_answer` and its prompt convention); otherwise `task.extract_fallback`:
  `last_line` (default): the last non-empty line, without an "Answer:" / "The answer is" label or
  a final period; it suits datasets whose answers are words or lists as well as numbers.
  `last_number`: the last number in the completion (`-1,024`, `3.5`, `2/3`); it suits arithmetic
  with a chatty model ("12 + 7 = 19" -> "19"), but cuts a list answer to its last item.
- exact: the completion itself, normalised (strip, casefold, whitespace collapsed).
- custom: your `task.extractor` if given, else the stripped completion.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Callable, Mapping

from iwsft.errors import UserError
from iwsft.tasks import Task, check_score

ANSWER_LABEL = re.compile(r"^(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*[:=]?\s*", re.IGNORECASE)
NUMBER = re.compile(r"[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")


def last_line(text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    line = ANSWER_LABEL.sub("", lines[-1]).strip()
    line = line[:-1].rstrip() if line.endswith(".") and len(line) > 1 else line
    return line or None


def last_number(text: str) -> str | None:
    numbers = NUMBER.findall(text)
    return numbers[-1] if numbers else None


def normalise(text: str) -> str:
    """strip, casefold and collapse whitespace: `  Paris\n` == `paris`."""
    return " ".join(text.split()).casefold()


class ChainSumTask(Task):
    """The embedded demo: the completion is the bare number (`-29`); demo_task.verify scores it."""

    name = "chain_sum"

    def __init__(self, config: Mapping | None = None):
        self.config = dict(config or {})

    def extract(self, completion):
        # exactly what verify compares (and what maj@k voted on before tasks existed)
        return None if completion is None else completion.strip()

    def score(self, completion, answer, metadata=None):
        from iwsft.tasks.chain_sum import verify

        return float(verify(completion, answer))

    def prompts(self, n, seed):
        from iwsft.tasks.chain_sum import _problems

        return [{"id": f"cs{seed}-{i:06d}", "prompt": p["prompt"], "answer": p["answer"],
                 "metadata": {"stratum": p["stratum"]}}
                for i, p in enumerate(_problems(n, seed, {"name": "chain_sum", **self.config}))]


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
        if extract_fallback not in ("last_line", "last_number"):
            raise UserError(f"task.extract_fallback: {extract_fallback!r} is not last_line or last_number")
        self._fallback = last_line if extract_fallback == "last_line" else last_number
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

    def extract(self, completion):
        if completion is None:
            return None
        tagged = self._tagged(completion)
        return tagged if tagged is not None else self._fallback(completion)

    def score(self, completion, answer, metadata=None):
        entry = {"question": "", "answer": str(answer), "metadata": dict(metadata or {})}
        extracted = self.extract(completion)
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


class ExactTask(Task):
    """Normalised string match of the whole completion against the answer."""

    name = "exact"

    def extract(self, completion):
        key = None if completion is None else normalise(completion)
        return key or None

    def score(self, completion, answer, metadata=None):
        key = self.extract(completion)
        return float(key is not None and key == normalise(str(answer)))


def load_callable(path: str, key: str) -> Callable:
    """`module.path:function` -> the function; UserError naming `task.<key>` and the path otherwise.

    The working directory (the project root, where dvc runs the stages) is searched last, so a
    `scoring.py` next to params.yaml imports without installing it and shadows nothing installed."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"task.{key}: {path!r} is not of the form module.path:function")
    if str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001  (any import failure is the user's to fix)
        raise UserError(f"task.{key}: cannot import {module_name!r} for {path!r} ({type(error).__name__}: {error}); "
                        f"install it or put its folder on PYTHONPATH") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise UserError(f"task.{key}: {module_name!r} has no function {attr!r} ({path!r})")
    return function


class CustomTask(Task):
    """Your own verifier: `task.scorer: mypkg.scoring:score`, a function score(completion, answer)
    -> float in [0, 1]; optionally `task.extractor: mypkg.scoring:extract`, extract(completion) -> str | None."""

    name = "custom"

    def __init__(self, scorer: str, extractor: str | None = None):
        self.scorer_path, self.extractor_path = scorer, extractor
        self._score = load_callable(scorer, "scorer")
        self._extract = load_callable(extractor, "extractor") if extractor else None

    def extract(self, completion):
        if self._extract is None:
            return super().extract(completion)
        value = self._extract(completion)
        if value is not None and not isinstance(value, str):
            raise UserError(f"task.extractor {self.extractor_path} returned {value!r}: expected a string or None")
        return value

    def score(self, completion, answer, metadata=None):
        return check_score(self._score(completion, answer), f"task.scorer {self.scorer_path}")
