"""Where each boundary's data lives in the pipeline, and the params.yaml knobs its suite uses.

`settings(boundary, params)` reads and checks the thresholds once; `load(boundary, params, path)`
builds the GateInput from the files at rest (what `iwsft gate` and `iwsft validate` check; the
stages pass what they already hold in memory instead, see iwsft.stages.curate and .reference).
"""

from __future__ import annotations

from pathlib import Path

from iwsft.errors import UserError
from iwsft.gates import inputs
from iwsft.gates.results import GateInput
from iwsft.methods import METHODS, evaluated_models, pipeline_methods

DATA = Path("data")
# the file or folder a boundary checks by default: a params.yaml curate key (a user's file), or the pipeline's
PARAM_PATHS = {"eval": "eval_prompts", "raw": "raw"}
DEFAULT_PATHS = {"curated": DATA / "curate" / "train.jsonl", "quality": DATA / "quality" / "train.jsonl",
                 "reference": DATA / "reference", "evaluation": DATA / "evaluate"}


def _number(section: dict, key: str, default, low: float, high: float | None, where: str):
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise UserError(f"params.yaml {where}.{key} must be a number {bounds}, got {value!r}")
    return value


def settings(boundary: str, params: dict) -> dict:
    """The thresholds of one boundary's suite, from `gates:` and the knobs the data must honour."""
    gates = params.get("gates") or {}
    section = gates.get(boundary) or {}
    where = f"gates.{boundary}"
    if boundary == "eval":  # the schema's contract only: no knobs
        return {}
    if boundary == "raw":
        return {"max_invalid_fraction": float(_number(gates, "max_invalid_fraction", 0.0, 0, 1, "gates")),
                "min_records": int(_number(section, "min_records", 1, 0, None, where)),
                "max_reward_disagreement": float(_number(section, "max_reward_disagreement", 0.05, 0, 1, where))}
    if boundary == "curated":
        curate = params["curate"]
        forbid = section.get("forbid_eval_prompts", True)
        if not isinstance(forbid, bool):
            raise UserError(f"params.yaml {where}.forbid_eval_prompts must be true or false, got {forbid!r}")
        return {"min_examples": int(_number(section, "min_examples", 1, 0, None, where)),
                "max_duplicate_fraction": float(_number(section, "max_duplicate_fraction", 1.0, 0, 1, where)),
                "forbid_eval_prompts": forbid, "require_reward": bool(curate.get("require_reward", True)),
                "max_prompt_tokens": curate.get("max_prompt_tokens"), "max_completion_tokens": curate.get("max_completion_tokens")}
    if boundary == "quality":
        # the (Q) methods of `methods:`: with any, coinciding thresholds fail the gate (inputs.quality_input)
        return {"percentiles": list(params["quality"]["percentiles"]), "source": params["quality"].get("source"),
                "quality_methods": [m for m in pipeline_methods(params) if m in METHODS and METHODS[m].uses_quality]}
    if boundary == "reference":
        return {}
    if boundary == "evaluation":
        evaluate = params["evaluate"]
        allow = section.get("allow_degenerate", False)
        if not isinstance(allow, bool):
            raise UserError(f"params.yaml {where}.allow_degenerate must be true or false, got {allow!r}")
        return {"models": list(evaluated_models(params)), "samples_per_prompt": evaluate["samples_per_prompt"],
                "maj_k": evaluate["maj_k"], "allow_degenerate": allow}
    raise UserError(f"unknown gate {boundary!r}")


def _count_lines(path: Path) -> int | None:
    return sum(1 for line in path.read_bytes().split(b"\n") if line.strip()) if path.is_file() else None


def load(boundary: str, params: dict, path: str | Path | None = None) -> GateInput:
    """The GateInput for `boundary` from files: `path`, or where the pipeline writes that boundary's data.
    Upstream files (curated count for quality, quality records for reference) are used when present."""
    limits = settings(boundary, params)
    default = path is None
    path = Path(params["curate"][PARAM_PATHS[boundary]] if boundary in PARAM_PATHS and default
                else path or DEFAULT_PATHS[boundary])
    if boundary == "eval":
        return inputs.eval_input(path, limits)
    if boundary == "raw":  # schema checks only; curate adds the verifier's agreement (it builds the task)
        return inputs.raw_input(path, limits)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes it first (dvc repro)")
    if boundary == "curated":
        from iwsft.encoding.chat import ChatFormat
        from iwsft.data.eval_prompts import read_eval_prompts
        from iwsft.model.tokenizer import load_tokenizer  # no torch: `iwsft gate curated` stays light

        model = params["model"]
        tokenizer = load_tokenizer(model["base"], model.get("trust_remote_code", False))
        eval_prompts = [row["prompt"] for row in read_eval_prompts(params["curate"]["eval_prompts"]).records]
        counter = token_counter(tokenizer, ChatFormat.from_params(params, tokenizer))
        return inputs.curated_input(inputs.read_records(path), str(path), limits, counter, eval_prompts)
    if boundary == "quality":
        return quality_input(params, path, DEFAULT_PATHS["curated"] if default else None)
    if boundary == "reference":
        from iwsft.model.artifacts import load_model

        model, tokenizer = load_model(params["model"]["base"], params["model"].get("trust_remote_code", False))
        quality = DEFAULT_PATHS["quality"]
        records = inputs.read_records(quality) if default and quality.is_file() else None
        return reference_input(params, path, model, tokenizer, records)
    return evaluation_input(params, path)


def token_counter(tokenizer, chat):
    """Tokens as curation counts them (iwsft.data.curation.TokenLengths): a prompt as the model sees it,
    rendered by iwsft.encoding.chat.ChatFormat (a plain string too, when there is a chat template), a completion
    as its text (a conversational one: its assistant message's content), without special tokens."""
    from iwsft.data.conversation import completion_content
    from iwsft.data.curation import TokenLengths

    return TokenLengths(
        prompt=lambda prompt: len(chat.prompt_ids(prompt)),
        completion=lambda completion: len(tokenizer(completion_content(completion), add_special_tokens=False)["input_ids"]),
    )


def quality_input(params: dict, path: Path, curated_path: Path | None) -> GateInput:
    """data/quality/train.jsonl and its summary.json (the thresholds), against the curated count."""
    import json

    limits = settings("quality", params)
    limits["expected_examples"] = _count_lines(curated_path) if curated_path is not None else None
    summary_path = path.parent / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return inputs.quality_input(inputs.read_records(path), summary, str(path), limits)


def reference_input(params: dict, directory: Path, model, tokenizer, quality_records=None, source=None) -> GateInput:
    limits = {**settings("reference", params), "expected_examples": len(quality_records) if quality_records is not None else None}
    from iwsft.encoding.chat import ChatFormat

    return inputs.reference_input(Path(directory), source or str(directory), limits, model, tokenizer, quality_records,
                                  chat=ChatFormat.from_params(params, tokenizer))


def evaluation_input(params: dict, directory: Path) -> GateInput:
    limits = settings("evaluation", params)
    limits["eval_prompts"] = _count_lines(Path(params["curate"]["eval_prompts"]))
    if limits["eval_prompts"] is None:
        raise FileNotFoundError(f"{params['curate']['eval_prompts']} does not exist: the evaluation gate counts its prompts")
    return inputs.evaluation_input(Path(directory), limits["models"], limits)
