"""The report a user reads first: one markdown table, a short reading of it, three plots, and
machine-readable copies of the same numbers for `dvc metrics` / `dvc plots`.

`write_report(results, out_dir, context)` writes, under out_dir:
- report.md          the table (pass@1 +- 95 % CI, greedy, maj@k, coverage, J and both bounds, the q
                     of the iw bound),
                     the importance-weighted methods' training weights beside their pass@1 (mean,
                     spread, ESS: tables.weights_table), a "reading the table" paragraph generated from
                     the numbers, the plots embedded
- accuracy.png       pass@1 per method with CI error bars, greedy accuracy as markers
- loss.png           training loss per method vs step; the plain-SFT loss of the same batches dashed
- weights.png        importance weights at the first and last recorded step; ESS and mean weight over steps
- metrics.json       method -> flat metrics (for `dvc metrics show`)
- plots/accuracy.csv method,pass_at_1,ci_low,ci_high,greedy_accuracy,maj_at_k,coverage
- plots/loss.csv     method,step,loss,sft_equivalent_loss  (long format, every method in one file)
- plots/train/<method>.csv  step plus whichever of loss,sft_equivalent_loss,weight_mean,weight_max
                     that method logged: one file per method, because DVC draws one line per file
                     (it cannot split one file's rows by a `method` column); dvc.yaml plots the folder
- plots/ess/<method>.csv    step,ess for the methods that logged importance weights

`results[method]` holds "metrics" (evaluate's metrics.json), optionally "train_log", "weight_history" and
"per_prompt" (each eval prompt's success rate, in eval-file order): with per_prompt, the reading compares two
methods by the paired per-prompt difference (as register's promotion test does), else by CI overlap.

Everything except the file writes is a pure function of `results`: the tables and CSVs in
iwsft.reporting.tables, the reading in iwsft.reporting.reading, the PNGs in iwsft.reporting.plots; this
module puts them together.
"""

from __future__ import annotations

from pathlib import Path

from iwsft.io.durable import write_json_atomic
from iwsft.io.durable import atomic_directory, write_text_atomic
from iwsft.reporting.plots import plot_accuracy, plot_loss, plot_weights
from iwsft.reporting.reading import reading
from iwsft.reporting.tables import context_lines, ess_table, flat_metrics, plot_tables, results_table, weights_table
from iwsft.tracking.sample_table import link_lines


def report_markdown(results: dict, context: dict | None, images: dict[str, str]) -> str:
    parts = ["# iw-SFT: results", ""]
    if context:
        parts += ["## Run", "", *context_lines(context), ""]
    parts += ["## Results (held-out prompts)", "", *results_table(results), ""]
    parts += ["pass@1: n samples per prompt at T=1, 95% CI clustered by prompt. greedy: one greedy completion per "
              "prompt. coverage: a prompt has at least one correct sample. J (IS est.): importance-sampling estimate "
              "of the success rate from π_ref's samples (Eq. 3); iw bound (Eq. 19, with the q the method trained with) and "
              "SFT bound (Eq. 4) are the lower bounds the methods optimise. – means not available.", ""]
    weights = weights_table(results)
    if weights:
        parts += ["### Importance weights in training", "", *weights,
                  "", "Per optimizer step, averaged over the logged windows, before any normalisation "
                  "(train.weight_normalization). Weights that grow together act as a larger learning rate unless "
                  "divided by their step mean; ESS / batch = (Σw)² / (n Σw²): 1 when all weigh the same.", ""]
    parts += ["### Reading the table", "", *reading(results),
              "", "Each comparison is at 95%, not adjusted for the several made; register's promotion test corrects "
              "for its several candidates (Holm) and may therefore be stricter.", ""]
    diagnostics = ess_table(results)
    if diagnostics:
        parts += ["### How reliable is J", "", *diagnostics, ""]
    samples = link_lines({m: r.get("samples") for m, r in results.items()})  # evaluate's MLflow tables
    if samples:
        parts += ["## Samples (what each model wrote, in MLflow)", "", *samples, ""]
    parts += ["## Plots", ""] + [f"![{title}]({name})\n" for title, name in images.items()]
    return "\n".join(parts)


def write_report(results: dict, out_dir, context: dict | None = None) -> Path:
    """Write report.md, the three PNGs, metrics.json and plots/*.csv under out_dir; return report.md's path.

    results: method -> {"metrics": dict, "train_log": HF log_history or None,
                        "weight_history": [{"step": int, "weights": [float]}] or None}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = {
        "accuracy": plot_accuracy(results, out_dir / "accuracy.png").name,
        "training loss": plot_loss(results, out_dir / "loss.png").name,
        "importance weights": plot_weights(results, out_dir / "weights.png").name,
    }
    write_json_atomic(out_dir / "metrics.json", flat_metrics(results))
    with atomic_directory(out_dir / "plots") as plots:  # swapped whole: no stale CSV of a dropped method
        for name, text in plot_tables(results).items():
            (plots / name).parent.mkdir(parents=True, exist_ok=True)
            (plots / name).write_text(text)
    report = out_dir / "report.md"
    write_text_atomic(report, report_markdown(results, context, images))
    return report
