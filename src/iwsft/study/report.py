"""reports/study.md, reports/study.json and reports/study/*.png from the study's finished experiments.

Every comparison is paired by seed: a seed fixes pi_ref, its samples and the evaluation draws, so
iw-SFT − SFT on the same seed removes pi_ref's spread (sd ≈ 0.06 pass@1 on the demo), which is
larger than the effect in question. The CI is Student's t over the per-seed differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iwsft.config.schema import Params
from iwsft.evaluation.stats import t_interval
from iwsft.methods import BASE, comparisons, label, pipeline_methods
from iwsft.study.plan import Experiment, StudyConfig, lookup
from iwsft.study.queue import DONE, Found

REPORTS = Path("reports")
TOLERANCE = 1e-9  # a bound "holds" up to float rounding


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float  # 95% t-interval; nan with fewer than 2 seeds
    high: float
    n: int
    positive: int  # seeds where the value (or difference) is > 0

    @classmethod
    def of(cls, values, confidence: float = 0.95) -> "Estimate":
        values = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
        if values.size == 0:
            return cls(math.nan, math.nan, math.nan, 0, 0)
        mean, low, high = t_interval(values, confidence)  # low = high = nan for one seed
        return cls(mean, low, high, int(values.size), int((values > 0).sum()))

    def text(self, signed: bool = False) -> str:
        if self.n == 0:
            return "n/a"
        fmt = "{:+.3f}" if signed else "{:.3f}"
        if self.n < 2:
            return f"{fmt.format(self.mean)} (1 seed)"
        return f"{fmt.format(self.mean)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"


def metrics_of(found: Found, model: str) -> dict | None:
    return found.metrics.get(f"data/evaluate/{model}/metrics.json")


def pass_at_1(found: Found | None, model: str) -> float | None:
    metrics = metrics_of(found, model) if found and found.state == DONE else None
    return None if metrics is None else metrics.get("pass_at_1")


def bounds_hold(metrics: dict) -> bool | None:
    """J ≥ iw bound ≥ SFT bound (J ≥ SFT bound where the method trained with no q)."""
    j, sft, iw = metrics.get("j_importance"), metrics.get("sft_bound"), metrics.get("iw_bound")
    if j is None or sft is None:
        return None
    if iw is None:
        return j >= sft - TOLERANCE
    return j >= iw - TOLERANCE and iw >= sft - TOLERANCE


def summarize(config: StudyConfig, plan: list[Experiment], found: dict[str, Found], params: Params) -> dict:
    """Everything the report shows, as plain data (reports/study.json)."""
    methods = pipeline_methods(params)
    seed_runs = {e.seed: found.get(e.name) for e in plan if e.ablation is None}
    seeds = [s for s, f in seed_runs.items() if f is not None and f.state == DONE]
    score = {m: {s: pass_at_1(seed_runs[s], m) for s in seeds} for m in (BASE, *methods)}

    def paired(a: str, b: str, runs_a=None, runs_b=None) -> Estimate:
        runs_a = score[a] if runs_a is None else runs_a
        runs_b = score[b] if runs_b is None else runs_b
        return Estimate.of([runs_a[s] - runs_b[s] for s in runs_a
                            if runs_a.get(s) is not None and runs_b.get(s) is not None])

    rows = []
    for model in (BASE, *methods):
        bounds = [bounds_hold(metrics_of(seed_runs[s], model) or {}) for s in seeds]
        checked = [b for b in bounds if b is not None]
        bound_q = {(metrics_of(seed_runs[s], model) or {}).get("bound_q") for s in seeds} - {None}
        rows.append({
            "model": model, "label": label(model), "seeds": len([v for v in score[model].values() if v is not None]),
            "pass_at_1": Estimate.of(score[model].values()).__dict__, "per_seed": score[model],
            "minus_base": None if model == BASE else paired(model, BASE).__dict__,
            "bounds_held": sum(checked), "bounds_checked": len(checked), "bound_q": sorted(map(str, bound_q)),
        })
    pairs = [{"method": iw, "against": sft, "difference": paired(iw, sft).__dict__} for iw, sft in comparisons(methods)]
    ablations = []
    for ablation in config.ablations:
        default = lookup(params, ablation.param)
        for value in ablation.values:
            runs = {e.seed: found.get(e.name) for e in plan if e.ablation == ablation and e.value == value}
            done = {s: f for s, f in runs.items() if f is not None and f.state == DONE}
            ablated = {m: {s: pass_at_1(f, m) for s, f in done.items()} for m in ablation.methods}
            effects = [{"method": m, "effect": paired(m, m, ablated[m], score[m]).__dict__} for m in ablation.methods]
            within = [{"method": iw, "against": sft, "difference": paired(iw, sft, ablated[iw], ablated[sft]).__dict__}
                      for iw, sft in comparisons(ablation.methods)]
            ablations.append({"param": ablation.param, "default": default, "value": value, "seeds": len(done),
                              "effects": effects, "pairs": within})
    failed = sorted(name for name, f in found.items() if f.state == "failed" and name in {e.name for e in plan})
    return {"seeds": seeds, "planned_seeds": list(config.seeds), "rows": rows, "pairs": pairs, "ablations": ablations,
            "failed": failed, "experiments": {e.name: (found[e.name].state if e.name in found else "missing") for e in plan}}


def value_text(value) -> str:
    """1e+09, not 1000000000.0: a knob's value as a person writes it."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _estimate(data: dict | None, signed: bool = True) -> str:
    return "—" if data is None else Estimate(**data).text(signed)


def reading(summary: dict) -> list[str]:
    """One sentence per paired comparison, saying what the interval does and does not show."""
    lines = []
    for pair in summary["pairs"]:
        d = Estimate(**pair["difference"])
        name = f"{label(pair['method'])} − {label(pair['against'])}"
        if d.n < 2:
            lines.append(f"- {name}: {d.text(True)}; one seed cannot tell a difference from pi_ref's spread.")
        elif d.low > 0:
            lines.append(f"- {name}: {d.text(True)} over {d.n} seeds; {label(pair['method'])} is better "
                         f"(higher on {d.positive} of {d.n} seeds).")
        elif d.high < 0:
            lines.append(f"- {name}: {d.text(True)} over {d.n} seeds; {label(pair['method'])} is worse "
                         f"(higher on only {d.positive} of {d.n} seeds).")
        else:
            lines.append(f"- {name}: {d.text(True)} over {d.n} seeds; the interval contains 0: no difference "
                         f"shown (higher on {d.positive} of {d.n} seeds).")
    return lines


def markdown(summary: dict, config: StudyConfig, wall_s: float, commit: str) -> str:
    seeds = summary["seeds"]
    out = [f"# Study: {len(seeds)} seeds, {len(summary['rows']) - 1} methods, {len(summary['ablations'])} ablation settings",
           "", f"Commit {commit[:12]}, seeds {seeds} ({config.source}); wall time of `iwsft study` "
           f"{wall_s / 60:.1f} min over all its invocations. Intervals: 95% Student t over the per-seed values "
           "(differences paired by seed). Plots: reports/study/.", ""]
    if summary["failed"]:
        out += [f"**Failed experiments** (see `dvc queue logs NAME`; re-running `iwsft study` retries them): "
                f"{', '.join(summary['failed'])}", ""]
    out += ["## Methods across seeds", "",
            "| model | seeds | pass@1 | − base (paired) | J ≥ iw bound ≥ SFT bound | q of the iw bound | per seed |",
            "|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        per_seed = ", ".join("—" if v is None else f"{v:.3f}" for v in row["per_seed"].values())
        held = f"{row['bounds_held']}/{row['bounds_checked']} seeds" if row["bounds_checked"] else "—"
        q = ", ".join(row["bound_q"]) or ("none (SFT bound only)" if row["model"] != BASE else "—")
        out.append(f"| {row['label']} | {row['seeds']} | {_estimate(row['pass_at_1'], False)} | "
                   f"{_estimate(row['minus_base'])} | {held} | {q} | {per_seed} |")
    out += ["", "q = theta (q_mode current): the iw bound equals J by construction; the check then is J ≥ SFT bound.",
            "", "## Paired differences", ""] + reading(summary)
    if summary["ablations"]:
        out += ["", "## Ablations (one knob changed, same seeds; effect = ablated − params.yaml's setting, paired)", "",
                "| knob | value (default) | seeds | method | effect on pass@1 | iw − SFT at this setting |",
                "|---|---|---|---|---|---|"]
        for entry in summary["ablations"]:
            within = {p["method"]: _estimate(p["difference"]) for p in entry["pairs"]}
            for effect in entry["effects"]:
                out.append(f"| {entry['param']} | {value_text(entry['value'])} ({value_text(entry['default'])}) | {entry['seeds']} | "
                           f"{label(effect['method'])} | {_estimate(effect['effect'])} | {within.get(effect['method'], '—')} |")
    return "\n".join(out) + "\n"


def plots(summary: dict, folder: Path) -> list[Path]:
    """methods.png: each seed's pass@1 per model and the mean with its CI; ablations.png: each
    ablation's paired effect with its CI (a forest plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(summary["rows"]) + 1.2))
    for y, row in enumerate(summary["rows"]):
        values = [v for v in row["per_seed"].values() if v is not None]
        ax.scatter(values, [y] * len(values), color="0.6", s=18, zorder=2)
        est = Estimate(**row["pass_at_1"])
        if est.n:
            ax.errorbar(est.mean, y, xerr=None if est.n < 2 else [[est.mean - est.low], [est.high - est.mean]],
                        fmt="o", color="C0" if row["model"] != BASE else "k", capsize=4, zorder=3)
    ax.set_yticks(range(len(summary["rows"])), [r["label"] for r in summary["rows"]])
    ax.set_xlabel("pass@1 (grey: one seed; dot and bar: mean and 95% CI)")
    ax.invert_yaxis()
    fig.tight_layout()
    written.append(folder / "methods.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    effects = [(f"{e['param'].split('.')[-1]}={value_text(e['value'])} {label(x['method'])}", Estimate(**x["effect"]))
               for e in summary["ablations"] for x in e["effects"]]
    if effects:
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(effects) + 1.2))
        for y, (_, est) in enumerate(effects):
            if est.n:
                ax.errorbar(est.mean, y, xerr=None if est.n < 2 else [[est.mean - est.low], [est.high - est.mean]],
                            fmt="o", color="C1", capsize=4)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(effects)), [name for name, _ in effects])
        ax.set_xlabel("effect on pass@1 vs params.yaml's value (paired by seed, 95% CI)", fontsize=9)
        ax.invert_yaxis()
        fig.tight_layout()
        written.append(folder / "ablations.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written
