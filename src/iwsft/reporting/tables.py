"""The report's numbers as text: the markdown tables and the machine-readable copies (metrics.json's
content, plots/*.csv for `dvc plots`), pure functions of `results` (see iwsft.reporting.report)."""

from __future__ import annotations

import csv
import io
import math

from iwsft.methods import BASE, NAMES
from iwsft.methods import label as method_label
from iwsft.training.summary import weight_summary

METHOD_ORDER = (BASE, *NAMES)
MISSING = "–"
TRAIN_COLUMNS = ("loss", "sft_equivalent_loss", "weight_mean", "weight_max")
ACCURACY_COLUMNS = ("method", "pass_at_1", "ci_low", "ci_high", "greedy_accuracy", "maj_at_k", "coverage")
# evaluate's `bound_q` (the q the iw bound was computed with: the one the method trained with) as shown
BOUND_Q = {"theta": "θ (bound = J)", "ema": "EMA of θ", "pi_ref": "θ = π_ref"}


def ordered_methods(results: dict) -> list[str]:
    """The paper's order first; any other method after, as given."""
    return [m for m in METHOD_ORDER if m in results] + [m for m in results if m not in METHOD_ORDER]


def label(method: str) -> str:
    return method_label(method)


def finite_or_none(value) -> float | None:
    """A finite float, or None for absent / None / NaN (all shown as a dash)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt(value, digits: int = 3) -> str:
    number = finite_or_none(value)
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


def weights_table(results: dict) -> list[str]:
    """Each importance-weighted method's result beside its training weights (weight_summary): weights that
    grow together act as a larger step unless self-normalised; a low ESS means few examples carry the batch."""
    rows = [(method, weight_summary(results[method].get("train_log"))) for method in ordered_methods(results)]
    rows = [(method, summary) for method, summary in rows if summary]
    if not rows:
        return []
    lines = ["| method | pass@1 | mean w (first → last) | w std | w max | ESS / batch: mean (lowest) | divided by |",
             "|---|---|---|---|---|---|---|"]
    for method, w in rows:
        divided = "none" if w["weight_normalizer"] is None else f"step mean ({fmt(w['weight_normalizer'], 2)} on average)"
        lines.append(f"| {label(method)} | {fmt(results[method]['metrics'].get('pass_at_1'))} | {fmt(w['weight_mean'], 2)} "
                     f"({fmt(w['weight_mean_first'], 2)} → {fmt(w['weight_mean_last'], 2)}) | {fmt(w['weight_std'], 2)} | "
                     f"{fmt(w['weight_max'], 2)} | {fmt(w['ess'])} ({fmt(w['ess_min'])}) | {divided} |")
    return lines


def reference_context(summary: dict | None) -> dict:
    """The run's reference figures (the reference stage's data/reference/summary.json) as report context:
    whose log-probs the weights divide by, tokens per completion and how likely a completion is under that
    model. Teacher data can be far less likely under pi_ref than its own samples; the weights' spread and
    ESS follow. Absent figures are left out (an older reference stage wrote none)."""
    if not summary:
        return {}
    context = {}
    if summary.get("policy"):
        model = f" ({summary['policy_model']})" if summary.get("policy_model") else ""
        context["reference policy (π_ref in the weights)"] = f"{summary['policy']}{model}"
    tokens = finite_or_none(summary.get("mean_completion_tokens"))
    if tokens is not None:
        context["mean tokens per completion"] = f"{tokens:.1f} (model.base's tokenizer)"
    per_completion = finite_or_none(summary.get("mean_logprob_per_completion"))
    if per_completion is not None:
        per_token = finite_or_none(summary.get("mean_logprob_per_token"))
        context["mean log π_ref per completion"] = f"{per_completion:.2f} nats" + (
            "" if per_token is None else f" ({per_token:.3f} per token)")
    return context


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
