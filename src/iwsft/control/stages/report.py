"""The report stage: the evaluation gate, a table per env (mean over seeds +- 95% t-CI across seeds,
of each seed's mean return over its evaluation episodes, and of the normalised score), plots of
returns and of iw-SFT(Q)'s weight ESS, and a reading generated from the numbers (never hand-written)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from iwsft.config.control import ControlParams
from iwsft.control import gates
from iwsft.control.stages import CURATED, METRICS, REPORTS
from iwsft.io.durable import write_json_atomic
from iwsft.evaluation.stats import t_half_width
from iwsft.io.durable import write_text_atomic
from iwsft.methods import CONTROL_BASELINE, CONTROL_CANDIDATES, CONTROL_METHODS, comparisons

LABELS = {name: method.label for name, method in CONTROL_METHODS.items()}
# the weights plotted and summarised: those of the (one) importance-weighted method
WEIGHTED = next(name for name, method in CONTROL_METHODS.items() if method.importance_weighted)


def _runs() -> pd.DataFrame:
    rows = []
    for method in CONTROL_METHODS:
        path = METRICS / "eval" / f"{method}.json"
        for result in (json.loads(path.read_text()) if path.exists() else {}).values():
            rows.append({k: result[k] for k in ("run", "env", "seed", "method", "mean_return", "ci95", "episodes", "normalised")})
    return pd.DataFrame(rows, columns=["run", "env", "seed", "method", "mean_return", "ci95", "episodes", "normalised"])


def table(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (env, method), group in runs.groupby(["env", "method"], sort=False):
        rows.append({"env": env, "method": method, "seeds": len(group),
                     "return": group["mean_return"].mean(), "return_ci": t_half_width(group["mean_return"]),
                     "score": group["normalised"].mean(), "score_ci": t_half_width(group["normalised"])})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    envs = list(dict.fromkeys(runs["env"]))  # params order; methods in CONTROL_METHODS order within each env
    return frame.sort_values(["env", "method"], key=lambda c: c.map({**{e: i for i, e in enumerate(envs)},
                                                                      **{m: i for i, m in enumerate(CONTROL_METHODS)}})).reset_index(drop=True)


def ess_by_run() -> dict:
    path = METRICS / "train" / f"{WEIGHTED}.json"
    if not path.exists():
        return {}
    return {run: [(h["step"], h["ess"]) for h in result["history"] if "ess" in h] for run, result in json.loads(path.read_text()).items()}


def reading(runs: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    lines = []
    for env, group in summary.groupby("env", sort=False):
        means = dict(zip(group["method"], group["return"]))
        order = " < ".join(LABELS[m] for m in sorted(means, key=means.get))
        lines.append(f"- {env}: mean-return order {order}.")
        per_seed = runs[runs["env"] == env].pivot(index="seed", columns="method", values="mean_return")
        base = CONTROL_BASELINE
        for method in CONTROL_CANDIDATES:
            if {base, method} <= set(per_seed.columns):
                wins = int((per_seed[method] > per_seed[base]).sum())
                lines.append(f"  - {LABELS[method]} above {LABELS[base]} in {wins} of {len(per_seed)} seeds.")
        for iw, sft in comparisons([m for m in CONTROL_METHODS if m in per_seed.columns], CONTROL_METHODS):
            wins = int((per_seed[iw] > per_seed[sft]).sum())
            row = group.set_index("method")
            gap = row.loc[iw, "return"] - row.loc[sft, "return"]
            overlap = abs(gap) <= row.loc[iw, "return_ci"] + row.loc[sft, "return_ci"]
            lines.append(f"  - {LABELS[iw]} minus {LABELS[sft]}: {gap:+.1f} on average, {LABELS[iw]} higher in {wins} of "
                         f"{len(per_seed)} seeds" + ("; the confidence intervals overlap, so no ordering is claimed." if overlap else "."))
    return lines


def _plots(summary: pd.DataFrame, ess: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(summary["env"]))
    figure, axes = plt.subplots(1, len(envs), figsize=(4 * len(envs), 3.2), squeeze=False)
    for axis, env in zip(axes[0], envs):
        group = summary[summary["env"] == env]
        axis.bar([LABELS[m] for m in group["method"]], group["return"], yerr=group["return_ci"], capsize=4, color="#4c72b0")
        axis.set_title(env, fontsize=9)
        axis.set_ylabel("mean return (95% CI over seeds)", fontsize=8)
        axis.tick_params(labelsize=7)
    figure.tight_layout()
    figure.savefig(REPORTS / "control_returns.png", dpi=110)
    plt.close(figure)
    figure, axis = plt.subplots(figsize=(5, 3.2))
    for run, points in ess.items():
        if points:
            axis.plot(*zip(*points), label=run, linewidth=1)
    axis.set_xlabel(f"{LABELS[WEIGHTED]} step", fontsize=8)
    axis.set_ylabel("weight ESS (fraction of batch)", fontsize=8)
    axis.set_ylim(0, 1.05)
    axis.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(REPORTS / "control_ess.png", dpi=110)
    plt.close(figure)
    return ["control_returns.png", "control_ess.png"]


def run(params: ControlParams) -> None:
    runs = _runs()
    expected = len(CONTROL_METHODS) * len(params.envs) * len(params.seeds)
    gates.run("control-evaluation", str(METRICS / "eval"), {"runs": runs},
              {"runs": expected, "episodes": params.evaluate.episodes})
    summary = table(runs)
    data = json.loads((CURATED / "summary.json").read_text())
    ess = ess_by_run()
    REPORTS.mkdir(parents=True, exist_ok=True)
    plots = _plots(summary, ess)
    mean_ess = {run: float(np.mean([e for _, e in points])) for run, points in ess.items() if points}
    lines = ["# Control: " + ", ".join(LABELS.values()), "",
             f"Seeds {list(params.seeds)}; {params.evaluate.episodes} deterministic evaluation episodes per run "
             f"(env seeds {params.evaluate.seed}..); mean over seeds of each seed's mean return, +- 95% t-CI across seeds. "
             "Score: 100 (R - R_random) / (R_best_in_data - R_random).", "",
             "| env | method | return | score | seeds |", "|---|---|---|---|---|"]
    for row in summary.to_dict("records"):
        lines.append(f"| {row['env']} | {LABELS[row['method']]} | {row['return']:.1f} +- {row['return_ci']:.1f} | "
                     f"{row['score']:.1f} +- {row['score_ci']:.1f} | {row['seeds']} |")
    lines += ["", "Data: " + "; ".join(f"{env}: {d['episodes']} episodes, returns {d['return_min']:.0f}..{d['return_best']:.0f}, "
                                       f"random policy {d['return_random']:.0f}, bins {d['counts_per_bin']}" for env, d in data.items()),
              "", f"{LABELS[WEIGHTED]} weight ESS (mean over logged steps): " + ", ".join(f"{k} {v:.2f}" for k, v in mean_ess.items()),
              "", "## Reading (generated from the numbers)", "", *reading(runs, summary), "",
              *[f"![{p}]({p})" for p in plots], ""]
    write_text_atomic(REPORTS / "control.md", "\n".join(lines))
    write_json_atomic(METRICS / "report.json", {"table": summary.to_dict("records"), "mean_ess": mean_ess})
