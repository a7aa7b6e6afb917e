"""The report a user reads first: one markdown table, a short reading of it, three plots, and
machine-readable copies of the same numbers for `dvc metrics` / `dvc plots`.

`write_report(results, out_dir, context)` writes, under out_dir:
- report.md          the table (pass@1 +- 95 % CI, greedy, maj@k, coverage, J and both bounds, the q
                     of the iw bound),
                     a "reading the table" paragraph generated from the numbers, the plots embedded
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

Everything except the file writes is a pure function of `results`. Plots use matplotlib's
object API (`Figure`), never pyplot, so no global backend or figure state is touched.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from matplotlib.figure import Figure

from iwsft.methods import BASE, NAMES, comparisons
from iwsft.methods import label as method_label
from iwsft.io.durable import atomic_directory, write_bytes_atomic, write_text_atomic
from iwsft.tracking.promotion import paired_mean_se
from iwsft.data.records import write_json_atomic

METHOD_ORDER = (BASE, *NAMES)
# Each iw method against the SFT variant trained on the same data: the comparison the paper makes.
PAIRS = comparisons(NAMES)
MISSING = "–"
TRAIN_COLUMNS = ("loss", "sft_equivalent_loss", "weight_mean", "weight_max")
ACCURACY_COLUMNS = ("method", "pass_at_1", "ci_low", "ci_high", "greedy_accuracy", "maj_at_k", "coverage")
DPI = 100
TOLERANCE = 1e-9  # float noise when checking J >= iw >= SFT (they are equal at theta = pi_ref)
# evaluate's `bound_q` (the q the iw bound was computed with: the one the method trained with) as shown
BOUND_Q = {"theta": "θ (bound = J)", "ema": "EMA of θ", "pi_ref": "θ = π_ref"}


# -- small pure helpers ------------------------------------------------------------------------
def ordered_methods(results: dict) -> list[str]:
    """The paper's order first; any other method after, as given."""
    return [m for m in METHOD_ORDER if m in results] + [m for m in results if m not in METHOD_ORDER]


def label(method: str) -> str:
    return method_label(method)


def _number(value) -> float | None:
    """A finite float, or None for absent / None / NaN (all shown as a dash)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt(value, digits: int = 3) -> str:
    number = _number(value)
    return MISSING if number is None else f"{number:.{digits}f}"


def training_rows(train_log) -> list[dict]:
    """The logging steps of an HF log_history: entries with a `loss` (the final summary has none)."""
    return [row for row in (train_log or []) if "loss" in row and "step" in row]


def weight_snapshots(weight_history) -> tuple[tuple[int, list[float]], tuple[int, list[float]]] | None:
    """(first step, its weights), (last step, its weights); a step may hold several micro-batches."""
    entries = [e for e in (weight_history or []) if e.get("weights")]
    if not entries:
        return None
    first, last = min(e["step"] for e in entries), max(e["step"] for e in entries)
    gather = lambda step: [w for e in entries if e["step"] == step for w in e["weights"]]  # noqa: E731
    return (first, gather(first)), (last, gather(last))


def intervals_overlap(a: dict, b: dict) -> bool | None:
    bounds = [_number(m.get(key)) for m in (a, b) for key in ("pass_at_1_ci_low", "pass_at_1_ci_high")]
    if None in bounds:
        return None
    low_a, high_a, low_b, high_b = bounds
    return low_a <= high_b and low_b <= high_a


def paired_difference(challenger, baseline, z: float = 1.959963984540054) -> tuple[float, float, float] | None:
    """(mean, low, high) of the per-prompt differences challenger - baseline (success rates on the same
    prompts, in the same order), low/high a normal 95% interval; None when they cannot be paired (missing,
    unequal lengths, fewer than 2 prompts). Pairing removes the prompts' shared difficulty from the
    spread: the CIs of the two means overlap far more often than the difference's CI contains 0."""
    if not challenger or not baseline or len(challenger) != len(baseline) or len(challenger) < 2:
        return None
    mean, se = paired_mean_se(challenger, baseline)
    return mean, mean - z * se, mean + z * se


def _verdict(challenger: dict, baseline: dict) -> str | None:
    paired = paired_difference(challenger.get("per_prompt"), baseline.get("per_prompt"))
    if paired is not None:
        mean, low, high = paired
        told_apart = low > 0 or high < 0
        how = (f"difference {mean:+.3f}, paired 95% CI [{low:+.3f}, {high:+.3f}] over {len(challenger['per_prompt'])} "
               f"prompts{'' if told_apart else ', which includes 0'}")
        return f"is {'better' if mean > 0 else 'worse'} ({how})" if told_apart else f"cannot be told apart ({how})"
    overlap = intervals_overlap(challenger["metrics"], baseline["metrics"])
    if overlap is None:
        return None
    if overlap:
        return "cannot be told apart (their 95% CIs overlap)"
    better = challenger["metrics"]["pass_at_1"] > baseline["metrics"]["pass_at_1"]
    return f"is {'better' if better else 'worse'} (95% CIs do not overlap)"


def bound_order(metrics: dict) -> tuple[bool, bool, bool] | None:
    """(J >= iw, J >= SFT, iw >= SFT). The first two hold mathematically; the third is the
    tightening iw-SFT hopes for. None when a number is missing."""
    j, iw, sft = (_number(metrics.get(k)) for k in ("j_importance", "iw_bound", "sft_bound"))
    if None in (j, iw, sft):
        return None
    return j >= iw - TOLERANCE, j >= sft - TOLERANCE, iw >= sft - TOLERANCE


# -- markdown ----------------------------------------------------------------------------------
def context_lines(context: dict | None) -> list[str]:
    """`key: value` bullets; a nested dict (e.g. the train params) becomes `k=v, k=v`."""
    lines = []
    for key, value in (context or {}).items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        lines.append(f"- **{key}**: {value}")
    return lines


def results_table(results: dict) -> list[str]:
    ks = {results[m]["metrics"].get("k") for m in results}
    maj = f"maj@{ks.pop()}" if len(ks) == 1 and None not in ks else "maj@k"
    lines = [
        f"| method | pass@1 ± 95% CI | greedy | {maj} | coverage | J (IS est.) | iw bound | q of the iw bound | SFT bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in ordered_methods(results):
        m = results[method]["metrics"]
        ci = f"[{fmt(m.get('pass_at_1_ci_low'))}, {fmt(m.get('pass_at_1_ci_high'))}]"
        cells = [label(method), f"{fmt(m.get('pass_at_1'))} {ci}", fmt(m.get("greedy_accuracy")), fmt(m.get("maj_at_k")),
                 fmt(m.get("coverage")), fmt(m.get("j_importance")), fmt(m.get("iw_bound")),
                 BOUND_Q.get(m.get("bound_q"), MISSING), fmt(m.get("sft_bound"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def reading(results: dict) -> list[str]:
    """Sentences generated from the numbers: what differs, what cannot be told apart, which
    bounds held, and where J rests on too few effective samples to trust."""
    metrics = {m: results[m]["metrics"] for m in ordered_methods(results)}
    sentences = []
    for challenger, baseline in PAIRS + tuple((m, "base") for m in metrics if m != "base"):
        if challenger not in metrics or baseline not in metrics:
            continue
        verdict = _verdict(results[challenger], results[baseline])
        if verdict is None:
            continue
        a, b = metrics[challenger]["pass_at_1"], metrics[baseline]["pass_at_1"]
        sentences.append(f"- {label(challenger)} vs {label(baseline)}: pass@1 {fmt(a)} vs {fmt(b)}, {verdict}.")

    held, failed, sft_only = [], [], []
    for method, m in metrics.items():
        order = bound_order(m)
        if order is not None:
            (held if all(order) else failed).append(f"{label(method)}{'' if all(order) else _which_failed(order)}")
        elif _number(m.get("iw_bound")) is None and None not in (_number(m.get("j_importance")), _number(m.get("sft_bound"))):
            ok = m["j_importance"] >= m["sft_bound"] - TOLERANCE
            (sft_only if ok else failed).append(label(method) + ("" if ok else " (not J ≥ SFT)"))
    if held:
        sentences.append(f"- J ≥ iw bound ≥ SFT bound held for: {', '.join(held)}.")
    if sft_only:
        sentences.append(f"- J ≥ SFT bound held for: {', '.join(sft_only)} (no iw bound: these methods train with w = 1, "
                         "no q).")
    by_construction = [label(method) for method, m in metrics.items() if m.get("bound_q") == "theta"]
    if by_construction:
        sentences.append(f"- {', '.join(by_construction)} trained with q = θ (train.q_mode: current), so their iw bound "
                         "equals J by construction; only q = EMA (q_mode: ema) gives an iw bound of its own.")
    if failed:
        sentences.append(f"- It did not hold for: {'; '.join(failed)}. Only J ≥ each bound is guaranteed "
                         "(x ≥ 1 + log x); iw ≥ SFT is the tightening iw-SFT aims for, not a theorem.")

    for method, m in metrics.items():
        ess, successes = _number(m.get("j_importance_ess")), _number(m.get("n_successes"))
        if ess is not None and successes and ess < max(10.0, 0.1 * successes):
            sentences.append(f"- J for {label(method)} rests on an effective sample size of {ess:.1f} out of "
                             f"{successes:.0f} successes: treat it as rough.")
        j, low, high = (_number(m.get(k)) for k in ("j_importance", "pass_at_1_ci_low", "pass_at_1_ci_high"))
        if None not in (j, low, high) and not low <= j <= high:
            sentences.append(f"- {label(method)}: J = {j:.3f} lies outside its pass@1 CI although both estimate the "
                             "same success rate: the importance weights may be too uneven to trust J (see its ESS).")
        if low is not None and low == high:
            sentences.append(f"- {label(method)}'s CI has zero width (every prompt scored the same): "
                             "that is the normal approximation failing, not certainty.")
    sentences.append("- \"Cannot be told apart\" does not prove two methods equal, only that this evaluation "
                     "cannot separate them. J is estimated on π_ref's held-out samples and targets the same "
                     "quantity as pass@1.")
    return sentences


def _which_failed(order: tuple[bool, bool, bool]) -> str:
    names = ("J ≥ iw", "J ≥ SFT", "iw ≥ SFT")
    return " (" + ", ".join(f"not {n}" for n, ok in zip(names, order) if not ok) + ")"


def ess_table(results: dict) -> list[str]:
    rows = [(m, results[m]["metrics"]) for m in ordered_methods(results)]
    rows = [(method, m) for method, m in rows if "j_importance_ess" in m]
    if not rows:
        return []
    lines = ["| method | c_ref | ESS of J's weights | successes | n prompts × samples |", "|---|---|---|---|---|"]
    for method, m in rows:
        successes = m.get("n_successes")
        size = f"{m.get('n_prompts', MISSING)} × {m.get('n_samples', MISSING)}"
        lines.append(f"| {label(method)} | {fmt(m.get('c_ref'))} | {fmt(m.get('j_importance_ess'), 1)} | "
                     f"{MISSING if successes is None else successes} | {size} |")
    return lines


def report_markdown(results: dict, context: dict | None, images: dict[str, str]) -> str:
    parts = ["# iw-SFT: results", ""]
    if context:
        parts += ["## Run", "", *context_lines(context), ""]
    parts += ["## Results (held-out prompts)", "", *results_table(results), ""]
    parts += ["pass@1: n samples per prompt at T=1, 95% CI clustered by prompt. greedy: one greedy completion per "
              "prompt. coverage: a prompt has at least one correct sample. J (IS est.): importance-sampling estimate "
              "of the success rate from π_ref's samples (Eq. 3); iw bound (Eq. 19, with the q the method trained with) and "
              "SFT bound (Eq. 4) are the lower bounds the methods optimise. – means not available.", ""]
    parts += ["### Reading the table", "", *reading(results),
              "", "Each comparison is at 95%, not adjusted for the several made; register's promotion test corrects "
              "for its several candidates (Holm) and may therefore be stricter.", ""]
    diagnostics = ess_table(results)
    if diagnostics:
        parts += ["### How reliable is J", "", *diagnostics, ""]
    parts += ["## Plots", ""] + [f"![{title}]({name})\n" for title, name in images.items()]
    return "\n".join(parts)


# -- plots -------------------------------------------------------------------------------------
def _colors(methods: list[str]) -> dict[str, str]:
    cycle = ["#555555", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    return {m: cycle[i % len(cycle)] for i, m in enumerate(methods)}


def _note(axis, text: str) -> None:
    axis.text(0.5, 0.5, text, ha="center", va="center", transform=axis.transAxes, color="grey")


def _save(figure: Figure, path: Path) -> None:
    """A PNG written whole or not at all (rendered in memory, then renamed into place)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    write_bytes_atomic(path, buffer.getvalue())


def plot_accuracy(results: dict, path: Path) -> Path:
    methods = ordered_methods(results)
    figure = Figure(figsize=(6, 3.5))
    axis = figure.subplots()
    colors = _colors(methods)
    for x, method in enumerate(methods):
        m = results[method]["metrics"]
        mean, low, high = (_number(m.get(k)) for k in ("pass_at_1", "pass_at_1_ci_low", "pass_at_1_ci_high"))
        if mean is not None:
            errors = [[mean - low], [high - mean]] if low is not None and high is not None else None
            axis.bar(x, mean, color=colors[method], alpha=0.8, yerr=errors, capsize=4)
        greedy = _number(m.get("greedy_accuracy"))
        if greedy is not None:
            # beside the bar, not on it, so the marker never hides the CI whisker
            axis.plot(x + 0.3, greedy, "D", color="black", markersize=5)
    axis.set_xticks(range(len(methods)), [label(m) for m in methods])
    axis.set_ylabel("accuracy on held-out prompts")
    axis.set_title("pass@1 (bars, 95% CI) and greedy (◆)")
    axis.set_ylim(0, 1.05)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    _save(figure, path)
    return path


def plot_loss(results: dict, path: Path) -> Path:
    methods = [m for m in ordered_methods(results) if training_rows(results[m].get("train_log"))]
    colors = _colors(ordered_methods(results))
    figure = Figure(figsize=(6, 3.5))
    axis = figure.subplots()
    for method in methods:
        rows = training_rows(results[method]["train_log"])
        axis.plot([r["step"] for r in rows], [r["loss"] for r in rows], color=colors[method], label=label(method))
        plain = [r for r in rows if "sft_equivalent_loss" in r]
        if plain:
            axis.plot([r["step"] for r in plain], [r["sft_equivalent_loss"] for r in plain], "--",
                      color=colors[method], alpha=0.7)
    if methods:
        axis.legend(title="solid: loss, dashed: plain SFT loss", fontsize=8, title_fontsize=8)
    else:
        _note(axis, "no training logs")
    axis.set_xlabel("step")
    axis.set_ylabel("loss (nats)")
    axis.set_title("training loss")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    _save(figure, path)
    return path


def plot_weights(results: dict, path: Path) -> Path:
    methods = ordered_methods(results)
    colors = _colors(methods)
    figure = Figure(figsize=(9, 3.5))
    histogram, trend = figure.subplots(1, 2)
    drawn = False
    for method in methods:
        snapshots = weight_snapshots(results[method].get("weight_history"))
        if snapshots is None:
            continue
        for (step, weights), style in zip(snapshots, (":", "-")):
            histogram.hist(weights, bins=30, histtype="step", linestyle=style, color=colors[method],
                           label=f"{label(method)}, step {step}")
        drawn = True
    histogram.set_title("weights: first (dotted), last (solid) step", fontsize=10)
    histogram.set_xlabel("weight w = q/π_ref")
    histogram.set_ylabel("sequences")
    if drawn:
        histogram.legend(fontsize=7)
    else:
        _note(histogram, "no weight history")

    logged = False
    for method in methods:
        rows = [r for r in training_rows(results[method].get("train_log")) if "ess" in r or "weight_mean" in r]
        for key, style in (("weight_mean", "-"), ("ess", "--")):
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                trend.plot(*zip(*points), style, color=colors[method], label=f"{label(method)} {key}")
                logged = True
    trend.set_title("mean weight (solid), ESS fraction (dashed)", fontsize=10)
    trend.set_xlabel("step")
    if logged:
        trend.legend(fontsize=7)
    else:
        _note(trend, "no weight diagnostics logged")
    for axis in (histogram, trend):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    _save(figure, path)
    return path


# -- machine-readable copies -------------------------------------------------------------------
def flat_metrics(results: dict) -> dict:
    """method -> metrics with NaN/inf as null: `dvc metrics show` and strict JSON readers choke on NaN."""
    return {m: {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in results[m]["metrics"].items()} for m in ordered_methods(results)}


def csv_text(columns, rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def plot_tables(results: dict) -> dict[str, str]:
    """file name under plots/ -> CSV text (see the module docstring for the columns)."""
    methods = ordered_methods(results)
    accuracy = []
    for method in methods:
        m = results[method]["metrics"]
        accuracy.append({"method": method, "pass_at_1": m.get("pass_at_1"), "ci_low": m.get("pass_at_1_ci_low"),
                         "ci_high": m.get("pass_at_1_ci_high"), "greedy_accuracy": m.get("greedy_accuracy"),
                         "maj_at_k": m.get("maj_at_k"), "coverage": m.get("coverage")})
    tables = {"accuracy.csv": csv_text(ACCURACY_COLUMNS, accuracy)}
    long_rows = []
    for method in methods:
        rows = training_rows(results[method].get("train_log"))
        long_rows += [{"method": method, **r} for r in rows]
        if rows:
            columns = ["step"] + [c for c in TRAIN_COLUMNS if any(c in r for r in rows)]
            tables[f"train/{method}.csv"] = csv_text(columns, rows)
            if any("ess" in r for r in rows):
                tables[f"ess/{method}.csv"] = csv_text(("step", "ess"), [r for r in rows if "ess" in r])
    tables["loss.csv"] = csv_text(("method", "step", "loss", "sft_equivalent_loss"), long_rows)
    return tables


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
