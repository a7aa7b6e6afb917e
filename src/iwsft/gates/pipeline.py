"""Where each boundary's data lives in the pipeline: `load(boundary, params, path)` builds the
GateInput from the files at rest (what `iwsft gate` and `iwsft validate` check). The stages build
theirs from what they already hold in memory, each importing only its own boundaries' modules
(iwsft.gates.raw, .eval_prompts, .curated, .quality, .reference, .evaluation), so that a stage's
code deps are the gates it runs; this module, which imports them all, is the command line's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from iwsft.data.records import read_records
from iwsft.errors import UserError
from iwsft.gates.curated import curated_from_files
from iwsft.gates.eval_prompts import eval_input
from iwsft.gates.evaluation import evaluation_input
from iwsft.gates.quality import quality_input
from iwsft.gates.raw import raw_input
from iwsft.gates.reference import reference_input
from iwsft.gates.results import GateInput
from iwsft.gates.settings import raw_settings, settings

if TYPE_CHECKING:
    from iwsft.config.schema import Params

DATA = Path("data")
# the file or folder a boundary checks by default (eval and raw: params curate.eval_prompts / curate.raw)
DEFAULT_PATHS = {"curated": DATA / "curate" / "train.jsonl", "quality": DATA / "quality" / "train.jsonl",
                 "reference": DATA / "reference", "evaluation": DATA / "evaluate"}


def default_path(boundary: str, params: Params) -> Path:
    """Where the pipeline keeps `boundary`'s data: a user's file (params.yaml) or a stage's output."""
    if boundary == "eval":
        return Path(params.curate.eval_prompts)
    if boundary == "raw":
        return Path(params.curate.raw)
    if boundary not in DEFAULT_PATHS:
        raise UserError(f"unknown gate {boundary!r}")
    return DEFAULT_PATHS[boundary]


def load(boundary: str, params: Params | None, path: str | Path | None = None) -> GateInput:
    """The GateInput for `boundary` from files: `path`, or where the pipeline writes that boundary's data.
    Upstream files (curated count for quality, quality records for reference) are used when present.
    Without params (None or empty: `iwsft validate raw|eval FILE` before any params.yaml exists) the
    raw gate uses the schema's default thresholds."""
    default = path is None
    path = Path(path) if path is not None else default_path(boundary, params)
    if boundary == "eval":
        return eval_input(path, settings("eval", params))
    if boundary == "raw":  # schema checks only; curate adds the verifier's agreement (it builds the task)
        from iwsft.config.schema import Gates

        return raw_input(path, raw_settings(params.gates if params else Gates()))
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes it first (dvc repro)")
    if boundary == "curated":
        return curated_from_files(params, path)
    if boundary == "quality":
        return quality_input(params, path, DEFAULT_PATHS["curated"] if default else None)
    if boundary == "reference":
        from iwsft.model.artifacts import load_model
        from iwsft.training.reference import reference_policy_path

        # the model whose log-probs the column holds: model.base, or sample.policy's with reference.policy: sampler
        model, tokenizer = load_model(reference_policy_path(params), params.model.trust_remote_code)
        quality = DEFAULT_PATHS["quality"]
        records = read_records(quality) if default and quality.is_file() else None
        return reference_input(params, path, model, tokenizer, records)
    return evaluation_input(params, path)
