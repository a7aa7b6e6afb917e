"""The `custom` task: your own verifier, `task.scorer: mypkg.scoring:score`, a function
score(completion, answer) -> float in [0, 1]; optionally `task.extractor: mypkg.scoring:extract`,
extract(completion) -> str | None (what maj@k votes on; without it, the stripped completion).

Your functions get the completion as the model wrote it (no Unicode normalisation, no prompt). An
exception inside them is a UserError naming `task.scorer` (or `task.extractor`), the exception, the
line of your code, the completion (shortened) and the answer, in `iwsft score` and in every stage;
sample and evaluate try the scorer once before they sample (iwsft.tasks.base.try_scorer)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from iwsft.errors import UserError
from iwsft.tasks.base import Task, check_score, raised

if TYPE_CHECKING:
    from iwsft.config.schema import Task as TaskConfig


def load_callable(path: str, key: str) -> Callable:
    """`module.path:function` -> the function; UserError naming `task.<key>` and the path otherwise.

    The working directory (the project root, where dvc runs the stages) is searched last, so a
    `scoring.py` next to params.yaml imports without installing it and shadows nothing installed."""
    module_name, _, attr = path.partition(":")  # the form module.path:function is the schema's check
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
    """Your own scorer (and extractor), imported by their `module.path:function` names."""

    name = "custom"

    def __init__(self, scorer: str, extractor: str | None = None):
        self.scorer_path, self.extractor_path = scorer, extractor
        self._score = load_callable(scorer, "scorer")
        self._extract = load_callable(extractor, "extractor") if extractor else None

    @classmethod
    def from_config(cls, config: TaskConfig) -> "CustomTask":
        return cls(config.scorer, config.extractor)

    def extract(self, completion, prompt=None):
        if self._extract is None:
            return super().extract(completion)
        try:
            value = self._extract(completion)
        except Exception as error:  # noqa: BLE001  (any failure of the user's code is theirs to see)
            raise raised(f"task.extractor {self.extractor_path}", error, completion) from None
        if value is not None and not isinstance(value, str):
            raise UserError(f"task.extractor {self.extractor_path} returned {value!r}: expected a string or None")
        return value

    def score(self, completion, answer, metadata=None, prompt=None):
        try:
            value = self._score(completion, answer)
        except Exception as error:  # noqa: BLE001  (as in extract)
            raise raised(f"task.scorer {self.scorer_path}", error, completion, answer) from None
        return check_score(value, f"task.scorer {self.scorer_path}")
