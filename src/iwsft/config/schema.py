"""params.yaml's schema: every key, its type and its range, checked once before a stage runs.

`check(params, source)` returns params unchanged (no defaults are filled in here: what a stage reads
is what the file says) or raises UserError listing *every* bad value at once, each with its dotted
key: a wrong type, an unknown key (a typo would otherwise be ignored silently), a method name that
iwsft.methods does not define, a negative step count, or settings that contradict each other.

Strict types: `steps: "300"` or `steps: true` is an error, not a coercion. A float may be written as
an int (`lr: 1`). YAML 1.1 reads `1e-3` as a string; the message says to write `1.0e-3`.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from iwsft.errors import UserError
from iwsft.methods import METHODS

Positive = Annotated[int, Field(gt=0)]
Count = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # TRANSITIONAL (removed once every consumer reads typed fields): dict-style reads of a section.
    def __getitem__(self, key: str):
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        value = getattr(self, key, None) if key in type(self).model_fields else None
        return default if value is None else value

    def __contains__(self, key: str) -> bool:
        return key in type(self).model_fields and (getattr(self, key) is not None or key in self.model_fields_set)


class Runtime(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"


class Model(Section):
    base: str
    trust_remote_code: bool = False
    chat_template: str = "auto"  # auto | none | a path to a Jinja file (iwsft.encoding.chat)


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


class Prepare(Section):
    hidden_size: Positive
    intermediate_size: Positive
    num_layers: Positive
    num_heads: Positive
    max_positions: Positive
    steps: Positive
    batch_size: Positive
    lr: PositiveFloat
    warmup_steps: Count


class Prompts(Section):
    """The `prompts` stage (generate/dvc.yaml): train/eval prompt files from the task's own generator."""
    instruction: str = ""   # appended to every question, e.g. " Reply with just the number."


class Sample(Section):
    prompts: str = "data/prepare/train_prompts.jsonl"   # the prompts pi_ref samples on (id, prompt, answer)
    k: Positive
    temperature: PositiveFloat
    max_new_tokens: Positive
    batch_size: Positive


class Curate(Section):
    raw: str
    eval_prompts: str
    max_prompt_tokens: Positive
    max_completion_tokens: Positive
    require_reward: bool = True
    exact_duplicates: bool = False
    near_duplicates: bool = False
    near_duplicate_threshold: Fraction = 0.9
    decontaminate: bool = True
    decontaminate_ngram: Positive = 13
    decontaminate_unit: Literal["word", "char"] = "word"   # n-grams of words (chat prompts) or characters
    keep_unfinished: bool = False   # true: keep completions cut off at max_new_tokens (finished: false)


class Quality(Section):
    source: Literal["graded_difficulty", "difficulty", "score"]
    percentiles: list[Annotated[float, Field(gt=0, lt=100)]] = Field(min_length=1)
    min_multiplicity_examples: Count = 1

    @field_validator("percentiles")
    @classmethod
    def _increasing(cls, values):
        if any(b <= a for a, b in zip(values, values[1:])):
            raise ValueError(f"must be strictly increasing, got {values}")
        return values


class Reference(Section):
    batch_size: Positive
    chunk_size: Positive


class Train(Section):
    steps: Positive | None = None  # optimizer steps; or `epochs` (exactly one of the two)
    epochs: PositiveFloat | None = None
    batch_size: Positive
    gradient_accumulation: Positive = 1
    lr: PositiveFloat
    warmup_steps: Count = 0
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    temp: Annotated[float, Field(ge=0)] = 1.0
    w_max: PositiveFloat = 16.0
    q_mode: Literal["current", "ema", "reference"] = "current"
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.9
    per_token: bool = False
    token_clip: Annotated[list[float], Field(min_length=2, max_length=2)] = [0.2, 1.8]
    reduction: Literal["token", "sequence"] = "token"
    reference_source: Literal["column", "online"] = "column"
    quality_mode: Literal["sample", "weight"] = "sample"
    logging_steps: Positive = 10
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # autocast over fp32 master weights
    gradient_checkpointing: bool = False
    lr_scheduler: Literal["constant_with_warmup", "cosine", "linear"] = "constant_with_warmup"
    optimizer: str = "adamw_torch_fused"  # transformers 5's default; any OptimizerNames value
    save_steps: Positive | None = None  # a checkpoint every so many steps (iwsft.training.checkpoints); null: none
    keep_checkpoints: Count = 0  # checkpoints left after the stage succeeded (0: all removed)

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        if name != "adamw_torch_fused":  # the default needs no transformers import (~2 s) to check
            from transformers.training_args import OptimizerNames

            known = [option.value for option in OptimizerNames]
            if name not in known:
                raise ValueError(f"unknown optimizer {name!r}; transformers knows: {', '.join(known)}")
        return name

    @model_validator(mode="after")
    def _consistent(self):
        low, high = self.token_clip
        if not 0 <= low < high:
            raise ValueError(f"token_clip must be [low, high] with 0 <= low < high, got {self.token_clip}")
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(f"set exactly one of steps and epochs, the other null (got steps={self.steps}, "
                             f"epochs={self.epochs})")
        if self.steps is not None and self.logging_steps > self.steps:
            raise ValueError(f"logging_steps ({self.logging_steps}) > steps ({self.steps}): nothing would be logged")
        return self


class Peft(Section):
    """LoRA adapters (iwsft.model.adapters); off unless enabled."""
    enabled: bool = False
    r: Positive = 16
    alpha: PositiveFloat = 32.0
    dropout: Fraction = 0.0
    target_modules: list[str] | Literal["all-linear"] | None = None  # None: peft's default for the architecture
    merge: bool = True  # save and register the merged model; false: the adapter alone, naming its base


class Launch(Section):
    """Training processes (iwsft.training.launch): N > 1 starts `iwsft train` under accelerate's launcher."""
    num_processes: Positive = 1
    config_file: str | None = None  # an accelerate config (configs/accelerate/); none: DDP on the GPUs or CPU


class Evaluate(Section):
    samples_per_prompt: Positive
    temperature: PositiveFloat
    max_new_tokens: Positive
    maj_k: Positive
    batch_size: Positive

    @model_validator(mode="after")
    def _majority(self):
        if self.maj_k > self.samples_per_prompt:
            raise ValueError(f"maj_k ({self.maj_k}) > samples_per_prompt ({self.samples_per_prompt}): "
                             f"the vote needs that many samples")
        return self


class RawGate(Section):
    min_records: Count = 1
    max_reward_disagreement: Fraction = 0.05   # file's reward vs the task's verifier, records with an answer


class EvaluationGate(Section):
    allow_degenerate: bool = False   # accept a pass@1 table that is all 0 or all 1 (usually a wrong verifier)


class CuratedGate(Section):
    min_examples: Count = 16
    max_duplicate_fraction: Fraction = 1.0
    forbid_eval_prompts: bool = True


class Gates(Section):
    max_invalid_fraction: Fraction = 0.0
    raw: RawGate = RawGate()
    curated: CuratedGate = CuratedGate()
    evaluation: EvaluationGate = EvaluationGate()


class Registry(Section):
    model_name: str = "iwsft"
    metric: Literal["pass_at_1"] = "pass_at_1"
    margin: Annotated[float, Field(ge=0)] = 0.0
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    baseline: str = "base"


class Tracking(Section):
    fallback: Literal["none", "local"] = "none"


class Params(Section):
    methods: list[str] = Field(min_length=1)
    seed: Count
    threads: Positive = 1
    runtime: Runtime = Runtime()
    model: Model
    task: Task
    prepare: Prepare
    prompts: Prompts = Prompts()
    sample: Sample
    curate: Curate
    quality: Quality
    reference: Reference
    train: Train
    peft: Peft = Peft()
    launch: Launch = Launch()
    evaluate: Evaluate
    gates: Gates = Gates()
    registry: Registry = Registry()
    tracking: Tracking = Tracking()

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, names):
        unknown = [name for name in names if name not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}: iwsft.methods defines {sorted(METHODS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"a method is listed twice: {names}")
        return names


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"])
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (a typo? see params.yaml's comments for the known ones)"
    if error["type"] == "missing":
        return f"{key}: missing"
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(value, str) and error["type"] in {"float_type", "int_type"}:
        try:
            float(value)
            message += f" (YAML read {value!r} as text: write it as a plain number, e.g. 1.0e-3 for 1e-3)"
        except ValueError:
            pass
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{key or 'params'}: {message}{shown}"


def check(params: dict, source: str = "params.yaml") -> Params:
    """The typed, frozen Params (every default filled in from this schema) if every value is valid;
    else UserError naming every bad one."""
    if not isinstance(params, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(params).__name__}")
    try:
        return Params.model_validate(params)
    except ValidationError as error:
        problems = [_describe(e) for e in error.errors()]
        raise UserError(f"{source}: {len(problems)} invalid setting{'s' * (len(problems) > 1)}:\n  "
                        + "\n  ".join(problems)) from None
