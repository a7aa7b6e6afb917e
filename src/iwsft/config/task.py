"""params.yaml's `task:` section: which task scores the completions, and the knobs each task owns."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from iwsft.config.base import Positive, PositiveFloat, Section


class Task(Section):
    """The task and its verifier (iwsft.tasks). The seven demo knobs generate chain_sum's prompts
    (the prepare stage); the other keys belong to one task each, and setting one for another task
    is an error rather than a silently ignored line."""

    CALLABLE_PATH: ClassVar[str] = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"  # module.path:function
    DEMO_KNOBS: ClassVar[tuple] = ("min_terms", "max_terms", "min_digits", "max_digits", "pretrain_examples",
                                   "train_prompts", "eval_prompts")
    OWNERS: ClassVar[dict] = {"dataset": "reasoning_gym", "kwargs": "reasoning_gym", "extract_fallback": "reasoning_gym",
                              "timeout_s": "math", "scorer": "custom", "extractor": "custom"}  # key -> its one task

    name: Literal["chain_sum", "reasoning_gym", "math", "exact", "custom"]
    min_terms: Positive | None = None
    max_terms: Positive | None = None
    min_digits: Positive | None = None
    max_digits: Positive | None = None
    pretrain_examples: Positive | None = None
    train_prompts: Positive | None = None
    eval_prompts: Positive | None = None
    dataset: Annotated[str, Field(min_length=1)] | None = None              # reasoning_gym
    kwargs: dict[str, object] | None = None                                  # reasoning_gym
    extract_fallback: Literal["last_line", "last_number"] = "last_line"     # reasoning_gym
    timeout_s: PositiveFloat = 5.0                                           # math
    scorer: str | None = None                                                # custom
    extractor: str | None = None                                             # custom

    @field_validator("scorer", "extractor")
    @classmethod
    def _callable_path(cls, value):
        if value is not None and not re.fullmatch(cls.CALLABLE_PATH, value):
            raise ValueError("must be module.path:function, e.g. mypkg.scoring:score")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        problems = []
        if self.name == "chain_sum":
            missing = [key for key in self.DEMO_KNOBS if getattr(self, key) is None]
            if missing:
                problems.append(f"chain_sum needs {', '.join(missing)} (the demo's prompt generator)")
        for low, high in (("min_terms", "max_terms"), ("min_digits", "max_digits")):
            if None not in (getattr(self, low), getattr(self, high)) and getattr(self, low) > getattr(self, high):
                problems.append(f"{low} ({getattr(self, low)}) is larger than {high} ({getattr(self, high)})")
        if self.name == "reasoning_gym" and self.dataset is None:
            problems.append("reasoning_gym needs dataset (a reasoning-gym dataset name, e.g. basic_arithmetic)")
        if self.name == "custom" and self.scorer is None:
            problems.append("custom needs scorer (module.path:function, e.g. mypkg.scoring:score)")
        for key, owner in self.OWNERS.items():
            if key in self.model_fields_set and self.name != owner:
                problems.append(f"{key} is only used by name: {owner} (this task is {self.name})")
        if problems:
            raise ValueError("; ".join(problems))
        return self
