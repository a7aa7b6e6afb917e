"""report: the table a user reads first (reports/report.md) and its plots, from every model's
metrics, training log and weight history. The `evaluation` data gate (iwsft.gates) runs first:
no report from metrics that are NaN, out of [0, 1] or counted on the wrong number of samples."""

from __future__ import annotations

import json
import time
from pathlib import Path

from iwsft.config.schema import Params
from iwsft.gates.evaluation import evaluation_input
from iwsft.gates.runner import run_gate
from iwsft.methods import evaluated_models
from iwsft.reporting.report import write_report
from iwsft.reporting.tables import reference_context
from iwsft.runtime import machine_description
from iwsft.stages import DATA, REPORTS, per_prompt_successes
from iwsft.tracking.runs import track_stage
from iwsft.tracking.sample_table import link_file, read_link


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def run(params: Params) -> Path:
    run_gate(evaluation_input(params, DATA / "evaluate"))
    results = {}
    for method in evaluated_models(params):
        metrics = _load(DATA / "evaluate" / method / "metrics.json")
        if metrics is None:
            continue
        results[method] = {
            "metrics": metrics,
            "train_log": _load(DATA / "train" / method / "train_log.json"),
            "weight_history": _load(DATA / "train" / method / "weights.json"),
            # success rate per eval prompt, in file order: the reading pairs methods on them
            "per_prompt": [c / metrics["n_samples"] for c in per_prompt_successes(method, int(metrics.get("n_samples", 0)))],
            "samples": read_link(link_file(method)),  # where evaluate logged its sample table
        }
    context = {
        "seed": params.seed,
        "machine": machine_description(params.threads),
        "date": time.strftime("%Y-%m-%d"),
        "train": params.train.model_dump(include={"steps", "epochs", "batch_size", "lr", "temp", "w_max", "q_mode",
                                                  "weight_normalization"},
                                         exclude_none=True),  # steps or epochs, whichever is set
        # whose log-probs the weights divide by, tokens and log pi_ref per completion (the reference stage's)
        **reference_context(_load(DATA / "reference" / "summary.json")),
    }
    path = write_report(results, REPORTS, context=context)
    track_stage("report", params, sections=["seed"], metrics={m: r["metrics"] for m, r in results.items()},
                artifacts=[REPORTS / "report.md", *sorted(REPORTS.glob("*.png")), DATA / "gates" / "evaluation.json"])
    return path
