"""The report's three PNGs: accuracy (pass@1 with CI bars, greedy as markers), training loss (the plain-SFT
loss of the same batches dashed), importance weights (first and last step; mean weight and ESS over steps).

Plots use matplotlib's object API (`Figure`), never pyplot, so no global backend or figure state is
touched; each PNG is rendered in memory and written whole (iwsft.io.durable).
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from iwsft.io.durable import write_bytes_atomic
from iwsft.reporting.tables import finite_or_none, label, ordered_methods, training_rows, weight_snapshots

DPI = 100


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
        mean, low, high = (finite_or_none(m.get(k)) for k in ("pass_at_1", "pass_at_1_ci_low", "pass_at_1_ci_high"))
        if mean is not None:
            errors = [[mean - low], [high - mean]] if low is not None and high is not None else None
            axis.bar(x, mean, color=colors[method], alpha=0.8, yerr=errors, capsize=4)
        greedy = finite_or_none(m.get("greedy_accuracy"))
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
