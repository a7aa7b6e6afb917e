"""The evaluate stage, one per method: each (env, seed) policy's deterministic (mean-action) returns
on `evaluate.episodes` fixed env seeds, their mean, its 95 % t half-width over the episodes, and the
normalised score (iwsft.control.scores)."""

from __future__ import annotations

import json

import numpy as np

from iwsft.config.control import ControlParams, Evaluate
from iwsft.control import envs
from iwsft.control.parallel import parallel
from iwsft.control.scores import normalised_score
from iwsft.control.stages import CURATED, METRICS, MODELS, run_name
from iwsft.io.durable import write_json_atomic
from iwsft.evaluation.stats import t_half_width


def _evaluate_job(method: str, env_id: str, seed: int, settings: Evaluate) -> dict:
    from iwsft.control import policy as policies

    name = run_name(env_id, seed)
    model = policies.load(MODELS / method / f"{name}.safetensors")
    seeds = range(settings.seed, settings.seed + settings.episodes)
    returns = envs.rollout_returns(env_id, model.act, seeds)
    return {"run": name, "env": env_id, "seed": seed, "method": method, "returns": returns}


def run(params: ControlParams, method: str) -> None:
    summary = json.loads((CURATED / "summary.json").read_text())
    jobs = [(method, env_id, seed, params.evaluate) for env_id in params.envs for seed in params.seeds]
    results = {}
    for result in parallel(_evaluate_job, jobs, params.workers):
        env = summary[result["env"]]
        mean = float(np.mean(result["returns"]))
        result.update(mean_return=mean, ci95=t_half_width(result["returns"]), episodes=len(result["returns"]),
                      normalised=normalised_score(mean, env["return_random"], env["return_best"]))
        results[result["run"]] = result
    METRICS.joinpath("eval").mkdir(parents=True, exist_ok=True)
    write_json_atomic(METRICS / "eval" / f"{method}.json", results)
