"""The `quality` boundary's input: scores, multiplicities and percentile thresholds, checked at the
start of `reference` (data/quality/train.jsonl and its summary.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from iwsft.data.quality import coinciding_groups
from iwsft.data.records import count_lines, read_records
from iwsft.gates.results import Check, GateInput
from iwsft.gates.settings import settings

if TYPE_CHECKING:
    from iwsft.config.schema import Params


def quality_frames(records: Sequence[dict], summary: dict, source: str, settings: dict) -> GateInput:
    """Scores and multiplicities per example; the percentile thresholds as their own small table."""
    frame = pd.DataFrame(
        [{"line": line, "id": r.get("id"), "quality": r.get("quality"), "multiplicity": r.get("multiplicity")}
         for line, r in enumerate(records, start=1)],
        columns=["line", "id", "quality", "multiplicity"],
    )
    percentiles, thresholds = summary.get("percentiles") or [], summary.get("thresholds") or []
    checks = []
    if len(percentiles) != len(thresholds):
        checks.append(Check("thresholds recorded", False, description=f"summary has {len(percentiles)} percentiles "
                            f"but {len(thresholds)} thresholds"))
    table = pd.DataFrame({"percentile": percentiles[: len(thresholds)], "threshold": thresholds[: len(percentiles)]})
    checks += distinct_bins(percentiles, thresholds, settings)
    return GateInput("quality", source, {"examples": frame, "thresholds": table}, settings, checks,
                     ("line", "id", "percentile"))


def _percentile_name(value) -> str:
    return f"p{int(value) if float(value).is_integer() else value}"


def distinct_bins(percentiles: Sequence, thresholds: Sequence, settings: dict) -> list[Check]:
    """With a (Q) method in params.yaml's `methods:`, equal thresholds fail: the (Q) methods' bins
    (PAPER.md section 4: D_{>=p90} + D_{>=p95} + D_{>=p98}, three overlapping bins) coincide, so
    multiplicity skips levels (only 0 or 3 when all three are equal). Without one: no check."""
    methods = settings.get("quality_methods") or []
    if not methods or not thresholds or len(percentiles) != len(thresholds):
        return []
    equal = coinciding_groups(thresholds)
    name = "distinct quality bins"
    if not equal:
        return [Check(name, True, description=f"{len(thresholds)} distinct thresholds for {', '.join(methods)}",
                      rows=len(thresholds))]
    same = "; ".join(" = ".join([_percentile_name(percentiles[i]) for i in group] + [f"{thresholds[group[0]]:.6g}"])
                     for group in equal)
    levels = len(thresholds) - sum(len(g) - 1 for g in equal)
    source = settings.get("source")
    advice = ("use a graded score: quality.source: graded_difficulty (-log of pi_ref's probability of the successes, "
              "written by `iwsft sample`), likelihood (pi_ref's log-probability per token of each solution: data that "
              "is all successes, e.g. a teacher's) or score (your raw file's `score` field)" if source == "difficulty" else
              "the score takes too few distinct values at the top: use a finer one (quality.source), more samples per "
              "prompt (sample.k) or other quality.percentiles")
    return [Check(name, False, rows=len(thresholds), unexpected=sum(len(g) - 1 for g in equal), description=(
        f"{same}: the (Q) methods' bins coincide ({', '.join(methods)} in params.yaml methods), so an example reaching "
        f"one of these thresholds reaches the others too and the multiplicity takes {levels + 1} values, not "
        f"{len(thresholds) + 1} (quality.source={source}). To fix: {advice}; or remove {', '.join(methods)} from methods."))]


def quality_input(params: Params, path: Path, curated_path: Path | None) -> GateInput:
    """data/quality/train.jsonl and its summary.json (the thresholds), against the curated count."""
    limits = settings("quality", params)
    limits["expected_examples"] = count_lines(curated_path) if curated_path is not None else None
    summary_path = path.parent / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return quality_frames(read_records(path), summary, str(path), limits)
