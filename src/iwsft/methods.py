"""The training methods: what each name means, declared once (no heavy imports).

Two lists, two owners:
- what a method *is* lives here (its label, whether it importance-weights, whether it uses the
  quality multiplicity, the SFT variant it is compared with): code, since code implements it;
- which methods a pipeline *runs* is params.yaml's top-level `methods:` list. dvc.yaml expands
  `train@` and `evaluate@` over it (`foreach: ${methods}`), the register stage takes it as its
  candidates, and the report and the evaluation gate read it. `iwsft.config.schema` checks that every
  name in it is defined here.

Two domains, one declaration: METHODS are the language pipeline's (dvc.yaml), CONTROL_METHODS the
continuous-control pipeline's (control/dvc.yaml, iwsft.control; PAPER.md §5), which runs all four
of its methods, in the order declared here (its dvc.yaml's `foreach` lists them in this order, and
tests/unit/control/test_control_dvc.py checks that it does).
"""

from __future__ import annotations

from dataclasses import dataclass

BASE = "base"  # pi_ref itself: evaluated (stage `baseline`), never trained
BASE_LABEL = "base (π_ref)"


@dataclass(frozen=True)
class Method:
    label: str
    importance_weighted: bool  # w = q / pi_ref per sequence (iw-SFT)
    uses_quality: bool  # trains on the quality multiplicity (the (Q) variants)
    compared_with: str | None = None  # the plain-SFT variant on the same data (the paper's comparison)
    probability_weighted: bool = False  # w_bt = sg(p_theta(y_t)) per token (DFT, arXiv 2508.05629): no q, no pi_ref


METHODS: dict[str, Method] = {
    "sft": Method("SFT", importance_weighted=False, uses_quality=False),
    "iwsft": Method("iw-SFT", importance_weighted=True, uses_quality=False, compared_with="sft"),
    "sftq": Method("SFT(Q)", importance_weighted=False, uses_quality=True),
    "iwsftq": Method("iw-SFT(Q)", importance_weighted=True, uses_quality=True, compared_with="sftq"),
    # not in params.yaml's demo `methods:`; a language-model baseline only (its weight is a token probability)
    "dft": Method("DFT", importance_weighted=False, uses_quality=False, compared_with="sft", probability_weighted=True),
}
NAMES = tuple(METHODS)

CONTROL_BASELINE = "bc"  # pi_ref itself (BC on all data): the incumbent every other control method is compared with
CONTROL_METHODS: dict[str, Method] = {
    "bc": Method("BC", importance_weighted=False, uses_quality=False),
    "bc10": Method("BC 10%", importance_weighted=False, uses_quality=True),  # BC from scratch on returns >= p90
    "sftq": Method("SFT(Q)", importance_weighted=False, uses_quality=True),
    "iwsftq": Method("iw-SFT(Q)", importance_weighted=True, uses_quality=True, compared_with="sftq"),
}
CONTROL_CANDIDATES = tuple(name for name in CONTROL_METHODS if name != CONTROL_BASELINE)


def pipeline_methods(params) -> tuple[str, ...]:
    """params.yaml's `methods:`, from the typed Params (iwsft.config.schema requires and checks it; this
    module imports nothing, the schema imports it)."""
    return tuple(params.methods)


def evaluated_models(params) -> tuple[str, ...]:
    """Every model the evaluate stages score: pi_ref first, then the trained methods."""
    return (BASE, *pipeline_methods(params))


def evaluate_stage(name: str) -> str:
    """The dvc.yaml stage that evaluates `name`: `baseline` for pi_ref, `evaluate@NAME` otherwise."""
    return "baseline" if name == BASE else f"evaluate@{name}"


def label(name: str) -> str:
    if name == BASE:
        return BASE_LABEL
    method = METHODS.get(name)
    return method.label if method else name


def comparisons(names, methods: dict[str, Method] = METHODS) -> tuple[tuple[str, str], ...]:
    """(iw method, its SFT variant) for each pair present in `names` (of the domain `methods`)."""
    present = set(names)
    return tuple((name, methods[name].compared_with) for name in names
                 if name in methods and methods[name].compared_with in present)


def trained_q(name: str, q_mode: str) -> str | None:
    """The q that `name` trained with, which the evaluation's iw bound (Eq. 19) must use:
    "theta" (q_mode current: q is the policy itself, so the bound equals J by construction),
    "ema" (q_mode ema: the EMA copy train saved), or None (an SFT method, or q_mode reference:
    w = 1, no q, only the SFT bound applies)."""
    method = METHODS.get(name)
    if method is None or not method.importance_weighted or q_mode == "reference":
        return None
    return {"current": "theta", "ema": "ema"}[q_mode]
