"""params.yaml's schema: every key, its type and its range, checked once before a stage runs.

`check(params, source)` returns the typed, frozen Params (every default filled in here: this file is
the one place a default lives; stages, gates and flows read fields, `params.train.steps`) or raises
UserError listing *every* bad value at once, each with its dotted key: a wrong type, an unknown key (a typo would otherwise be ignored silently), a method name that
iwsft.methods does not define, a negative step count, or settings that contradict each other.

Strict types: `steps: "300"` or `steps: true` is an error, not a coercion. A float may be written as
an int (`lr: 1`). YAML 1.1 reads `1e-3` as a string; the message says to write `1.0e-3`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from iwsft.config.base import Count, Fraction, Percentiles, Positive, PositiveFloat, Section, validated
from iwsft.config.task import Task
from iwsft.methods import METHODS


class Runtime(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"


class Model(Section):
    base: str
    trust_remote_code: bool = False
    chat_template: str = "auto"  # auto | none | a path to a Jinja file (iwsft.encoding.chat)


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


class Teacher(Section):
    """The demo's teacher (generate/dvc.yaml's prepare_teacher): pretrained by the prepare code with
    these sizes and steps (the rest is prepare's), reached only when sample.policy names its output."""
    hidden_size: Positive = 128
    intermediate_size: Positive = 512
    num_layers: Positive = 4
    num_heads: Positive = 4
    steps: Positive = 600


class Sample(Section):
    prompts: str = "data/prepare/train_prompts.jsonl"   # the prompts pi_ref samples on (id, prompt, answer)
    # the model that writes the completions: model.base when not given (Params fills it in), or a
    # teacher sharing its tokenizer (ref_logprob stays pi_ref's, policy_logprob is the teacher's)
    policy: str
    k: Positive
    temperature: PositiveFloat
    max_new_tokens: Positive
    batch_size: Positive
    max_batch_tokens: Positive | None = None   # also cap rows x (prompt + max_new_tokens) per batch


class Curate(Section):
    raw: str
    eval_prompts: str
    max_prompt_tokens: Positive
    max_completion_tokens: Positive
    require_reward: bool = True
    exact_duplicates: bool = False
    near_duplicates: bool = False
    near_duplicate_threshold: Fraction = 0.9
    near_duplicate_ngram: Positive = 3   # character n-grams compared by near_duplicate_threshold's Jaccard
    decontaminate: bool = True
    decontaminate_ngram: Positive = 13
    decontaminate_unit: Literal["word", "char"] = "word"   # n-grams of words (chat prompts) or characters
    keep_unfinished: bool = False   # true: keep completions cut off at max_new_tokens (finished: false)


class Source(Section):
    """A dataset (iwsft.data.sources), written by the `sources` stage to data/sources/NAME.jsonl in iwsft's
    fields: point curate.raw, curate.eval_prompts or sample.prompts at that file."""
    path: str   # a file, a glob of .jsonl/.parquet shards, a save_to_disk folder, hf://datasets/OWNER/NAME[@REV]
    config: str | None = None
    split: str | None = None
    columns: dict[str, str] = {}   # iwsft field -> the source's column, e.g. {completion: deepseek_attempt}
    template: str | None = None    # the prompt from columns: "{question}\n\nPut your final answer in \\boxed{}."
    completion_template: str | None = None   # the completion from columns: "{trajectory}\n\n{attempt}"

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, columns):
        from iwsft.data.records import SCHEMA_FIELDS

        unknown = sorted(set(columns) - set(SCHEMA_FIELDS))
        if unknown:
            raise ValueError(f"maps unknown field(s) {unknown}: iwsft's fields are {', '.join(SCHEMA_FIELDS)}")
        return columns

    @model_validator(mode="after")
    def _one_prompt(self):
        for name, template in (("prompt", "template"), ("completion", "completion_template")):
            if getattr(self, template) is not None and name in self.columns:
                raise ValueError(f"set columns.{name} or {template}, not both (a template names its columns: {{question}})")
        return self


class Quality(Section):
    source: Literal["graded_difficulty", "difficulty", "likelihood", "score"]
    percentiles: Percentiles
    min_multiplicity_examples: Count = 1


class Reference(Section):
    batch_size: Positive
    chunk_size: Positive
    # whose log-probs are the weight's denominator: model.base (the paper's LLM practice) or
    # sample.policy, the model that wrote the data (the theory's pi_ref)
    policy: Literal["base", "sampler"] = "base"


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
    weight_normalization: Literal["none", "self"] = "none"  # self: iw weights scaled to mean 1 per optimizer step
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
    max_batch_tokens: Positive | None = None   # also cap rows x (prompt + max_new_tokens) per batch
    score_unfinished: bool = False   # true: score completions cut off at max_new_tokens as written (false: not answered)
    log_samples: Count = 50   # the first N prompts' samples -> a table in the stage's MLflow run (0: none)

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
    teacher: Teacher = Teacher()
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
    # datasets read by the `sources` stage: NAME -> a Source or its path alone (iwsft.data.sources)
    sources: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")], Source | str] = {}

    @model_validator(mode="after")
    def _inputs_are_files(self):
        from iwsft.data.source_paths import input_problems

        problems = input_problems({"curate.raw": self.curate.raw, "curate.eval_prompts": self.curate.eval_prompts,
                                   "sample.prompts": self.sample.prompts}, self.sources)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="before")
    @classmethod
    def _policy_defaults_to_base(cls, data):
        """sample.policy not given: model.base samples (the on-policy regime)."""
        if isinstance(data, dict) and isinstance(data.get("sample"), dict) and "policy" not in data["sample"]:
            base = data["model"].get("base") if isinstance(data.get("model"), dict) else None
            if isinstance(base, str):
                data = {**data, "sample": {**data["sample"], "policy": base}}
        return data

    @model_validator(mode="after")
    def _sampler_reference_is_a_column(self):
        if self.reference.policy == "sampler" and self.train.reference_source == "online":
            raise ValueError("reference.policy: sampler needs train.reference_source: column (the online "
                             "reference is a frozen copy of model.base, not of sample.policy)")
        return self

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, names):
        unknown = [name for name in names if name not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}: iwsft.methods defines {sorted(METHODS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"a method is listed twice: {names}")
        return names


def check(params: dict, source: str = "params.yaml") -> Params:
    """The typed, frozen Params (every default filled in from this schema) if every value is valid;
    else UserError naming every bad one."""
    return validated(Params, params, source)
