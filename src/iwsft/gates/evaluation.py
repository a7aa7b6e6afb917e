"""The `evaluation` boundary's input: every model's metrics.json and sample count under
data/evaluate, checked at the start of `report`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from iwsft.data.records import count_lines
from iwsft.gates.results import Check, GateInput
from iwsft.gates.settings import settings

if TYPE_CHECKING:
    from iwsft.config.schema import Params

RATE_METRICS = ("pass_at_1", "pass_at_1_ci_low", "pass_at_1_ci_high", "greedy_accuracy", "maj_at_k", "coverage", "c_ref")
FINITE_METRICS = ("j_importance", "sft_bound", "iw_bound")
# present for every model; iw_bound only where the method trained with a q (metrics' bound_q)
REQUIRED_METRICS = tuple(m for m in RATE_METRICS + FINITE_METRICS if m != "iw_bound")
COUNT_METRICS = ("n_prompts", "n_samples", "k", "n_trajectories")


def evaluation_frames(directory: Path, models: Sequence[str], settings: dict) -> GateInput:
    """One row per evaluated model: its metrics and the number of samples it wrote."""
    rows, checks = [], []
    for model in models:
        metrics_path, samples_path = directory / model / "metrics.json", directory / model / "samples.jsonl"
        try:
            metrics = json.loads(metrics_path.read_text())
            samples = sum(1 for line in samples_path.read_bytes().split(b"\n") if line.strip())
        except (OSError, ValueError) as error:
            checks.append(Check("readable", False, description=f"{model}: {error}"))
            continue
        if not isinstance(metrics, dict):
            checks.append(Check("readable", False, description=f"{metrics_path}: expected a JSON object"))
            continue
        if (metrics.get("iw_bound") is None) != (metrics.get("bound_q") is None):
            checks.append(Check("iw bound with its q", False, description=(
                f"{metrics_path}: iw_bound is {metrics.get('iw_bound')!r} but bound_q is {metrics.get('bound_q')!r}: "
                "an iw bound needs the q it was computed with, and a method that trained with a q needs its bound")))
        rows.append({"model": model, **{key: metrics.get(key) for key in RATE_METRICS + FINITE_METRICS + COUNT_METRICS},
                     "sample_rows": samples})
    frame = pd.DataFrame(rows, columns=["model", *RATE_METRICS, *FINITE_METRICS, *COUNT_METRICS, "sample_rows"])
    # JSON null and NaN must both read as missing: object columns would keep None apart from NaN.
    for column in RATE_METRICS + FINITE_METRICS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    checks += degenerate_check(frame, settings.get("allow_degenerate", False))
    return GateInput("evaluation", str(directory), {"models": frame}, settings, checks, ("model",))


def degenerate_check(frame: pd.DataFrame, allow: bool) -> list[Check]:
    """Every model at pass@1 exactly 0 (or exactly 1) is what a verifier that never (or always)
    matches gives, not a result: the issue-11 trial scored 0.000 everywhere while hand-scoring
    found 0.06 and 0.12. Failed unless gates.evaluation.allow_degenerate; no check without rows."""
    values = frame["pass_at_1"].dropna().tolist()
    if not values or len(values) != len(frame) or len({float(v) for v in values}) != 1 or values[0] not in (0.0, 1.0):
        return []
    models = ", ".join(map(str, frame["model"]))
    what = f"every model's pass_at_1 is exactly {values[0]:g} ({models})"
    if allow:
        return [Check("pass@1 not degenerate", True, description=f"{what}: accepted (gates.evaluation.allow_degenerate)")]
    return [Check("pass@1 not degenerate", False, description=(
        f"{what}: the verifier is probably wrong for this task (check it by hand with iwsft score --task NAME "
        f"--answer A COMPLETION, on a few of data/evaluate/*/samples.jsonl); set gates.evaluation.allow_degenerate: "
        f"true to accept this table"))]


def evaluation_input(params: Params, directory: Path) -> GateInput:
    """data/evaluate/<model>/ for every evaluated model, against params' sample counts and the
    number of eval prompts (params curate.eval_prompts)."""
    limits = settings("evaluation", params)
    limits["eval_prompts"] = count_lines(Path(params.curate.eval_prompts))
    if limits["eval_prompts"] is None:
        raise FileNotFoundError(f"{params.curate.eval_prompts} does not exist: the evaluation gate counts its prompts")
    return evaluation_frames(Path(directory), limits["models"], limits)
