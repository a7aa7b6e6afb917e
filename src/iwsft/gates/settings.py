"""The params.yaml knobs each boundary's suite uses: `settings(boundary, params)`.

The values come typed and checked from iwsft.config.schema (the one place a default lives); this
module only picks them. The dict a gate gets is written whole into data/gates/<boundary>.json, so
its keys and values are part of the gate's output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iwsft.errors import UserError
from iwsft.methods import METHODS, evaluated_models, pipeline_methods

if TYPE_CHECKING:
    from iwsft.config.schema import Gates, Params


def raw_settings(gates: Gates) -> dict:
    """The raw boundary's thresholds: from `gates:` alone, so that `iwsft validate raw FILE` works
    without a params.yaml (the schema's defaults)."""
    return {"max_invalid_fraction": gates.max_invalid_fraction, "min_records": gates.raw.min_records,
            "max_reward_disagreement": gates.raw.max_reward_disagreement}


def settings(boundary: str, params: Params) -> dict:
    """The thresholds of one boundary's suite, from `gates:` and the knobs the data must honour."""
    if boundary in ("eval", "reference"):  # the schema's contract only: no knobs
        return {}
    if boundary == "raw":
        return raw_settings(params.gates)
    if boundary == "curated":
        gate, curate = params.gates.curated, params.curate
        return {"min_examples": gate.min_examples, "max_duplicate_fraction": gate.max_duplicate_fraction,
                "forbid_eval_prompts": gate.forbid_eval_prompts, "require_reward": curate.require_reward,
                "max_prompt_tokens": curate.max_prompt_tokens, "max_completion_tokens": curate.max_completion_tokens}
    if boundary == "quality":
        # the (Q) methods of `methods:`: with any, coinciding thresholds fail the gate (iwsft.gates.quality)
        return {"percentiles": list(params.quality.percentiles), "source": params.quality.source,
                "quality_methods": [m for m in pipeline_methods(params) if m in METHODS and METHODS[m].uses_quality]}
    if boundary == "evaluation":
        evaluate = params.evaluate
        return {"models": list(evaluated_models(params)), "samples_per_prompt": evaluate.samples_per_prompt,
                "maj_k": evaluate.maj_k, "allow_degenerate": params.gates.evaluation.allow_degenerate}
    raise UserError(f"unknown gate {boundary!r}")
