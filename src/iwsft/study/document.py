"""reports/study.md and reports/study/*.png from the study's summary (iwsft.study.report).

The report opens with the decision table: per regime, each method's pass@1, its paired difference
from SFT with the 95 % Student-t interval, and what that interval shows ("no difference shown" where it
contains 0), beside the iw methods' mean training weight and ESS when the experiments logged them.
"""

from __future__ import annotations

from pathlib import Path

from iwsft.methods import BASE, label
from iwsft.study.plan import StudyConfig
from iwsft.study.report import BASELINE, Estimate


def value_text(value) -> str:
    """1e+09, not 1000000000.0: a knob's value as a person writes it."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _estimate(data: dict | None, signed: bool = True) -> str:
    return "—" if data is None else Estimate(**data).text(signed)


def _stat(data: dict | None) -> str:
    if not data or not data["n"]:
        return "—"
    return f"{data['mean']:.2f}"


def _pair_text(pair: dict) -> str:
    d = Estimate(**pair["difference"])
    return f"{label(pair['method'])} − {label(pair['against'])} {d.text(True)}: {d.verdict()}"


def reading(regime: dict) -> list[str]:
    """One sentence per iw method − its SFT variant, saying what the interval does and does not show."""
    lines = []
    for pair in regime["pairs"]:
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


def decision_table(summary: dict) -> list[str]:
    regimes = summary["regimes"]
    weighted = any(r["weights"] and any(s["n"] for s in r["weights"].values()) for g in regimes for r in g["rows"])
    out = ["## Decision: which method, per regime", "",
           f"pass@1 on the held-out prompts. − {label(BASELINE)}: the difference paired by seed (the same π_ref, data "
           "and evaluation draws), 95 % Student-t interval over the seeds; \"no difference shown\" where it contains 0. "
           "The same budget (steps, batch, lr, seed) for every method." +
           (" Mean weight and ESS: the iw methods' training weights, averaged over the seeds." if weighted else ""), "",
           "| regime | seeds | method | pass@1 | − " + label(BASELINE) + " (paired) | reading |"
           + (" mean weight | ESS |" if weighted else ""),
           "|---|---|---|---|---|---|" + ("---|---|" if weighted else "")]
    notes = []
    for regime in regimes:
        best = regime["decision"]["best"]
        against = {p["method"]: p for p in regime["decision"]["pairs"] if p["against"] == BASELINE}
        for row in regime["rows"]:
            if row["model"] == BASE:
                continue
            pair = against.get(row["model"])
            d = Estimate(**pair["difference"]) if pair else None
            name = f"**{row['label']}** (best)" if row["model"] == best else row["label"]
            line = (f"| {regime['label']} | {len(regime['seeds'])} | {name} | {_estimate(row['pass_at_1'], False)} | "
                    f"{d.text(True) if d else '—'} | {d.verdict() if d else '—'} |")
            if weighted:
                line += f" {_stat((row['weights'] or {}).get('weight_mean'))} | {_stat((row['weights'] or {}).get('ess'))} |"
            out.append(line)
        others = [p for p in regime["decision"]["pairs"] if p["against"] != BASELINE]
        lead = f"highest mean pass@1: {label(best)}" if best else "no finished seed run"
        notes.append(f"- **{regime['label']}**: {lead}" + ("; " + "; ".join(map(_pair_text, others)) if others else "")
                     + ".")
    return out + [""] + notes


def markdown(summary: dict, config: StudyConfig, wall_s: float, commit: str) -> str:
    regimes = summary["regimes"]
    seeds = sorted({s for r in regimes for s in r["seeds"]})
    settings = sum(len(r["ablations"]) for r in regimes)
    methods = len(summary["methods"])
    title = (f"# Study: {len(seeds)} seeds, {methods} methods, {settings} ablation settings" if len(regimes) == 1 and
             not regimes[0]["name"] else
             f"# Study: {len(regimes)} regimes × {methods} methods × {len(seeds)} seeds, {settings} ablation settings")
    out = [title, "", f"Commit {commit[:12]}, seeds {seeds} ({config.source}); wall time of `iwsft study` "
           f"{wall_s / 60:.1f} min over all its invocations. Intervals: 95% Student t over the per-seed values "
           "(differences paired by seed). Plots: reports/study/.", ""]
    if summary["failed"]:
        out += [f"**Failed experiments** (see `dvc queue logs NAME`; re-running `iwsft study` retries them): "
                f"{', '.join(summary['failed'])}", ""]
    out += decision_table(summary)
    for regime in regimes:
        suffix = f": {regime['label']}" if regime["name"] else ""
        if regime["name"]:
            keys = ", ".join(f"{k}={value_text(v)}" for k, v in regime["overrides"].items()) or "params.yaml as it is"
            source = f"profile {regime['profile']}: " if regime["profile"] else ""
            out += ["", f"## Regime {regime['label']}", "", f"{source}{keys}; seeds {regime['seeds']}."]
        out += ["", f"### Methods across seeds{suffix}", "",
                "| model | seeds | pass@1 | − base (paired) | J ≥ iw bound ≥ SFT bound | q of the iw bound | per seed |",
                "|---|---|---|---|---|---|---|"]
        for row in regime["rows"]:
            per_seed = ", ".join("—" if v is None else f"{v:.3f}" for v in row["per_seed"].values())
            held = f"{row['bounds_held']}/{row['bounds_checked']} seeds" if row["bounds_checked"] else "—"
            q = ", ".join(row["bound_q"]) or ("none (SFT bound only)" if row["model"] != BASE else "—")
            out.append(f"| {row['label']} | {row['seeds']} | {_estimate(row['pass_at_1'], False)} | "
                       f"{_estimate(row['minus_base'])} | {held} | {q} | {per_seed} |")
        out += ["", "q = theta (q_mode current): the iw bound equals J by construction; the check then is J ≥ SFT bound."]
        if regime["pairs"]:
            out += ["", f"### Paired differences{suffix}", ""] + reading(regime)
        if regime["ablations"]:
            out += ["", f"### Ablations{suffix} (one knob changed, same seeds; effect = ablated − the regime's "
                    "setting, paired)", "",
                    "| knob | value (default) | seeds | method | effect on pass@1 | iw − SFT at this setting |",
                    "|---|---|---|---|---|---|"]
            for entry in regime["ablations"]:
                within = {p["method"]: _estimate(p["difference"]) for p in entry["pairs"]}
                for effect in entry["effects"]:
                    out.append(f"| {entry['param']} | {value_text(entry['value'])} ({value_text(entry['default'])}) | "
                               f"{entry['seeds']} | {label(effect['method'])} | {_estimate(effect['effect'])} | "
                               f"{within.get(effect['method'], '—')} |")
    if summary["regime_effects"]:
        out += ["", "## Regimes compared (paired by seed: a seed's runs share π_ref)", "",
                "| model | regime − regime | difference in pass@1 | reading |", "|---|---|---|---|"]
        for effect in summary["regime_effects"]:
            d = Estimate(**effect["difference"])
            out.append(f"| {label(effect['model'])} | {effect['regime']} − {effect['against']} | {d.text(True)} | "
                       f"{d.verdict()} |")
    return "\n".join(out) + "\n"


def _forest(ax, rows, color):
    for y, (_, est) in enumerate(rows):
        if est.n:
            ax.errorbar(est.mean, y, xerr=None if est.n < 2 else [[est.mean - est.low], [est.high - est.mean]],
                        fmt="o", color=color, capsize=4, zorder=3)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows])
    ax.invert_yaxis()


def plots(summary: dict, folder: Path) -> list[Path]:
    """methods.png: each seed's pass@1 per regime and model, and the mean with its CI; ablations.png:
    each ablation's paired effect with its CI (a forest plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    rows = [(f"{g['label']}: {r['label']}" if g["name"] else r["label"], r) for g in summary["regimes"] for r in g["rows"]]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.2))
    for y, (_, row) in enumerate(rows):
        values = [v for v in row["per_seed"].values() if v is not None]
        ax.scatter(values, [y] * len(values), color="0.6", s=18, zorder=2)
    _forest(ax, [(name, Estimate(**row["pass_at_1"])) for name, row in rows], "C0")
    ax.set_xlabel("pass@1 (grey: one seed; dot and bar: mean and 95% CI)")
    fig.tight_layout()
    written.append(folder / "methods.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    effects = [(f"{g['name'] + ' ' if g['name'] else ''}{e['param'].split('.')[-1]}={value_text(e['value'])} "
                f"{label(x['method'])}", Estimate(**x["effect"]))
               for g in summary["regimes"] for e in g["ablations"] for x in e["effects"]]
    if effects:
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(effects) + 1.2))
        _forest(ax, effects, "C1")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("effect on pass@1 vs the regime's value (paired by seed, 95% CI)", fontsize=9)
        fig.tight_layout()
        written.append(folder / "ablations.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written
