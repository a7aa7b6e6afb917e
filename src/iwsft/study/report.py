"""The study's numbers from its finished experiments, as plain data (reports/study.json); the markdown
and the plots are iwsft.study.document's.

Every comparison is paired by seed: a seed fixes pi_ref, its samples and the evaluation draws, so
iw-SFT − SFT on the same seed removes pi_ref's spread (sd ≈ 0.06 pass@1 on the demo), which is
larger than the effect in question. The CI is Student's t over the per-seed differences. Regimes are
compared the same way: a seed's teacher run and its on-policy run share pi_ref.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from iwsft.config.schema import Params
from iwsft.evaluation.stats import t_interval
from iwsft.methods import BASE, METHODS, comparisons, label
from iwsft.study.plan import Experiment, StudyConfig, default, regime_seeds, study_methods
from iwsft.study.queue import DONE, Found

TOLERANCE = 1e-9  # a bound "holds" up to float rounding
BASELINE = "sft"  # the method every other is compared with first: what a user would train anyway
# Training's weight summary, where the experiments' metrics carry it: the train stage's
# data/train_metrics/METHOD.json (weight_mean and ess averaged over the run, before any normalisation);
# runs of older commits have none, and the report then leaves the columns out
WEIGHT_STATS = {"weight_mean": ("weight_mean", "mean_weight"), "ess": ("ess", "weight_ess", "ess_mean")}


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

    def verdict(self) -> str:
        """What a paired difference shows: better, worse, or no difference shown (the CI holds 0)."""
        if self.n == 0:
            return "n/a"
        if self.n < 2:
            return "one seed: no interval"
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "no difference shown"


def metrics_of(found: Found | None, model: str) -> dict | None:
    return found.metrics.get(f"data/evaluate/{model}/metrics.json") if found else None


def pass_at_1(found: Found | None, model: str) -> float | None:
    metrics = metrics_of(found, model) if found and found.state == DONE else None
    return None if metrics is None else metrics.get("pass_at_1")


def _train_metrics_of(path: str, model: str) -> bool:
    """A metrics file of `model`'s training: data/train/MODEL/x.json, data/train_metrics/MODEL.json, ..."""
    parts = PurePosixPath(path).parts
    return any(part.startswith("train") for part in parts[:-1]) and \
        (model in parts[:-1] or PurePosixPath(path).stem == model)


def train_stat(found: Found | None, model: str, stat: str) -> float | None:
    """A training weight statistic (WEIGHT_STATS) of `model` in a finished experiment: from a metrics
    file of its training, else from reports/metrics.json's entry for it; None when absent."""
    if not found or found.state != DONE:
        return None
    candidates = [data for path, data in sorted(found.metrics.items()) if _train_metrics_of(path, model)]
    candidates.append((found.metrics.get("reports/metrics.json") or {}).get(model))
    for data in candidates:
        for key in WEIGHT_STATS[stat] if isinstance(data, dict) else ():
            value = data.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return float(value)
    return None


def bounds_hold(metrics: dict) -> bool | None:
    """J ≥ iw bound ≥ SFT bound (J ≥ SFT bound where the method trained with no q)."""
    j, sft, iw = metrics.get("j_importance"), metrics.get("sft_bound"), metrics.get("iw_bound")
    if j is None or sft is None:
        return None
    if iw is None:
        return j >= sft - TOLERANCE
    return j >= iw - TOLERANCE and iw >= sft - TOLERANCE


def paired(runs_a: dict, runs_b: dict) -> Estimate:
    """a − b over the seeds both have."""
    return Estimate.of([runs_a[s] - runs_b[s] for s in runs_a if runs_a.get(s) is not None and runs_b.get(s) is not None])


def decision(methods: tuple[str, ...], score: dict) -> dict:
    """The decision for one regime: the method with the highest mean pass@1, each method − SFT, and
    the comparisons that matter beside them (each iw method − its SFT variant, iw-SFT − DFT, the best
    − the runner-up), all paired by seed."""
    means = {m: Estimate.of(score[m].values()).mean for m in methods}
    ranked = sorted((m for m in methods if not math.isnan(means[m])), key=lambda m: -means[m])
    wanted = [(m, BASELINE) for m in methods if m != BASELINE and BASELINE in methods]
    wanted += [pair for pair in comparisons(methods) if pair not in wanted]
    if "iwsft" in methods and "dft" in methods:
        wanted.append(("iwsft", "dft"))
    if len(ranked) > 1 and (ranked[0], ranked[1]) not in wanted and (ranked[1], ranked[0]) not in wanted:
        wanted.append((ranked[0], ranked[1]))
    pairs = [{"method": a, "against": b, "difference": paired(score[a], score[b]).__dict__} for a, b in wanted]
    return {"best": ranked[0] if ranked else None, "runner_up": ranked[1] if len(ranked) > 1 else None,
            "pairs": pairs}


def _regime_summary(config: StudyConfig, regime, plan: list[Experiment], found: dict[str, Found], params: Params,
                    methods: tuple[str, ...]) -> dict:
    runs = {e.seed: found.get(e.name) for e in plan if e.ablation is None and e.regime == regime.name}
    seeds = [s for s, f in runs.items() if f is not None and f.state == DONE]
    score = {m: {s: pass_at_1(runs[s], m) for s in seeds} for m in (BASE, *methods)}
    rows = []
    for model in (BASE, *methods):
        bounds = [bounds_hold(metrics_of(runs[s], model) or {}) for s in seeds]
        checked = [b for b in bounds if b is not None]
        bound_q = {(metrics_of(runs[s], model) or {}).get("bound_q") for s in seeds} - {None}
        weights = {stat: Estimate.of([train_stat(runs[s], model, stat) for s in seeds]).__dict__ for stat in WEIGHT_STATS}
        rows.append({
            "model": model, "label": label(model), "seeds": len([v for v in score[model].values() if v is not None]),
            "pass_at_1": Estimate.of(score[model].values()).__dict__, "per_seed": score[model],
            "minus_base": None if model == BASE else paired(score[model], score[BASE]).__dict__,
            "bounds_held": sum(checked), "bounds_checked": len(checked), "bound_q": sorted(map(str, bound_q)),
            "weights": weights if model in METHODS and METHODS[model].importance_weighted else None,
        })
    ablations = []
    for ablation in (a for a in config.ablations if regime.name in a.regimes):
        for value in ablation.values:
            runs_at = {e.seed: found.get(e.name) for e in plan
                       if e.ablation == ablation and e.value == value and e.regime == regime.name}
            done = {s: f for s, f in runs_at.items() if f is not None and f.state == DONE}
            ablated = {m: {s: pass_at_1(f, m) for s, f in done.items()} for m in ablation.methods}
            effects = [{"method": m, "effect": paired(ablated[m], score[m]).__dict__} for m in ablation.methods]
            within = [{"method": iw, "against": sft, "difference": paired(ablated[iw], ablated[sft]).__dict__}
                      for iw, sft in comparisons(ablation.methods)]
            ablations.append({"param": ablation.param, "default": default(regime, params, ablation.param),
                              "value": value, "seeds": len(done), "effects": effects, "pairs": within})
    return {"name": regime.name, "label": regime.label(), "profile": regime.profile, "overrides": regime.overrides,
            "planned_seeds": list(regime_seeds(config, regime)), "seeds": seeds, "rows": rows,
            "pairs": [{"method": a, "against": b, "difference": paired(score[a], score[b]).__dict__}
                      for a, b in comparisons(methods)],
            "decision": decision(methods, score), "ablations": ablations, "score": score}


def summarize(config: StudyConfig, plan: list[Experiment], found: dict[str, Found], params: Params) -> dict:
    """Everything the report shows, as plain data (reports/study.json)."""
    methods = study_methods(config, params)
    regimes = [_regime_summary(config, r, plan, found, params, methods) for r in config.regimes]
    effects = []  # each regime − the first, per model, over the seeds both ran (the same pi_ref per seed)
    for other in regimes[1:]:
        for model in methods:  # pi_ref is the same model in every regime of a seed
            effects.append({"regime": other["name"], "against": regimes[0]["name"], "model": model,
                            "difference": paired(other["score"][model], regimes[0]["score"][model]).__dict__})
    planned = {e.name for e in plan}
    failed = sorted(name for name, f in found.items() if f.state == "failed" and name in planned)
    return {"planned_seeds": list(config.seeds), "methods": list(methods), "regimes": regimes,
            "regime_effects": effects, "failed": failed,
            "experiments": {e.name: (found[e.name].state if e.name in found else "missing") for e in plan}}
