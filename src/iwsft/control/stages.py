"""The control pipeline's stages after `data` (that one is iwsft.control.generate): each reads
control/params.yaml's sections and writes under control/ (the stage's working directory). Work over (env, seed) pairs runs in
`workers` processes of one torch thread each (threads oversubscribe 2 cores; processes do not)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from iwsft.control import dataset, envs, gates
from iwsft.control.generate import RAW, parallel
from iwsft.data.records import write_json_atomic

CURATED, QUALITY, REFERENCE = Path("data/curated"), Path("data/quality"), Path("data/reference")
MODELS, METRICS = Path("models"), Path("metrics")


def run_name(env_id: str, seed: int) -> str:
    return f"{env_id}-s{seed}"


def curate(params: dict) -> None:
    """Episode table, percentile thresholds, counts per bin, and the random-policy return per env."""
    percentiles = params["curate"]["percentiles"]
    rows, summary = [], {}
    for env_id in params["envs"]:
        _, low, high = envs.spaces(env_id)
        episodes = dataset.Episodes.from_arrays(dataset.read(RAW / f"{env_id}.npz"), low, high)
        thresholds = np.percentile(episodes.returns, percentiles)
        bins = np.searchsorted(thresholds, episodes.returns, side="right")  # 0: below p90, k: >= k-th threshold
        seeds = range(params["evaluate"]["seed"], params["evaluate"]["seed"] + params["evaluate"]["episodes"])
        random_returns = envs.rollout_returns(env_id, None, seeds)
        summary[env_id] = {
            "episodes": len(episodes.returns), "transitions": int(episodes.lengths.sum()),
            "percentiles": percentiles, "thresholds": thresholds.tolist(),
            "counts_per_bin": {("below" if k == 0 else f">=p{percentiles[k - 1]}"): int((bins == k).sum()) for k in range(len(percentiles) + 1)},
            "return_min": float(episodes.returns.min()), "return_best": float(episodes.returns.max()),
            "return_random": float(np.mean(random_returns)),
        }
        rows.append(pd.DataFrame({"env": env_id, "episode": np.arange(len(episodes.returns)), "start": episodes.starts,
                                  "length": episodes.lengths, "return": episodes.returns}))
    CURATED.mkdir(parents=True, exist_ok=True)
    pd.concat(rows, ignore_index=True).to_csv(CURATED / "episodes.csv", index=False)
    write_json_atomic(CURATED / "summary.json", summary)


def quality(params: dict) -> None:
    """Multiplicity #{k: R >= p_k} per episode (iwsft.data.quality.quality_multiplicity)."""
    from iwsft.data.quality import quality_multiplicity

    frame = pd.read_csv(CURATED / "episodes.csv")
    frame["multiplicity"] = 0
    for env_id, group in frame.groupby("env", sort=False):
        frame.loc[group.index, "multiplicity"] = quality_multiplicity(group["return"].to_numpy(), params["curate"]["percentiles"])
    QUALITY.mkdir(parents=True, exist_ok=True)
    frame.to_csv(QUALITY / "episodes.csv", index=False)


def _quality_gate(params: dict) -> pd.DataFrame:
    frame = pd.read_csv(QUALITY / "episodes.csv")
    frame["return_error"] = 0.0
    for env_id, group in frame.groupby("env", sort=False):
        arrays = dataset.read(RAW / f"{env_id}.npz")
        starts, _ = dataset.episode_bounds(arrays)
        recomputed = np.add.reduceat(arrays["rewards"].astype(np.float64), starts)
        declared = group["return"].to_numpy()
        error = np.abs(recomputed - declared) if len(recomputed) == len(declared) else np.full(len(declared), np.inf)
        frame.loc[group.index, "return_error"] = error
    settings = {"tolerance": 1e-3 * max(1.0, float(frame["return"].abs().max())), "bins": len(params["curate"]["percentiles"])}
    gates.run("control-quality", str(QUALITY / "episodes.csv"), {"episodes": frame}, settings)
    return frame


def load_run_data(env_id: str, frame: pd.DataFrame):
    _, low, high = envs.spaces(env_id)
    episodes = dataset.Episodes.from_arrays(dataset.read(RAW / f"{env_id}.npz"), low, high)
    return episodes, frame[frame["env"] == env_id]["multiplicity"].to_numpy()


def _reference_job(env_id: str, seed: int, settings: dict, frame: pd.DataFrame) -> dict:
    from iwsft.control import policy as policies
    from iwsft.control.training import behaviour_cloning, per_step_logp

    started = time.perf_counter()
    episodes, _ = load_run_data(env_id, frame)
    model, history = behaviour_cloning(episodes, np.arange(len(episodes.lengths)), settings, seed)
    name = run_name(env_id, seed)
    policies.save(model, MODELS / "reference" / f"{name}.safetensors")
    logp = per_step_logp(model, episodes)
    REFERENCE.mkdir(parents=True, exist_ok=True)
    np.savez(REFERENCE / f"{name}.npz", logp=logp)
    return {"run": name, "env": env_id, "seed": seed, "seconds": time.perf_counter() - started, "history": history,
            "rows": len(logp), "transitions": int(episodes.lengths.sum()), "nonfinite": int((~np.isfinite(logp)).sum())}


def reference(params: dict) -> None:
    """pi_ref = BC on all data, per (env, seed), and its per-step log-likelihoods."""
    frame = _quality_gate(params)
    jobs = [(env_id, seed, params["bc"], frame) for env_id in params["envs"] for seed in params["seeds"]]
    results = parallel(_reference_job, jobs, params["workers"])
    runs = pd.DataFrame([{k: r[k] for k in ("run", "rows", "transitions", "nonfinite")} for r in results])
    gates.run("control-reference", str(REFERENCE), {"runs": runs}, {})
    METRICS.joinpath("train").mkdir(parents=True, exist_ok=True)
    write_json_atomic(METRICS / "train" / "reference.json", {r["run"]: r for r in results})


def _train_job(method: str, env_id: str, seed: int, params: dict, frame: pd.DataFrame) -> dict:
    from iwsft.control import policy as policies
    from iwsft.control.training import behaviour_cloning, fine_tune

    started = time.perf_counter()
    name = run_name(env_id, seed)
    episodes, multiplicity = load_run_data(env_id, frame)
    if method == "bc10":
        model, history = behaviour_cloning(episodes, np.flatnonzero(multiplicity > 0), params["bc"], seed)
    else:
        ref = policies.load(MODELS / "reference" / f"{name}.safetensors")
        with np.load(REFERENCE / f"{name}.npz") as stored:
            ref_logp = stored["logp"]
        model, history = fine_tune(ref, episodes, multiplicity, ref_logp, params["finetune"], seed, weighted=method == "iwsftq")
    policies.save(model, MODELS / method / f"{name}.safetensors")
    return {"run": name, "env": env_id, "seed": seed, "seconds": time.perf_counter() - started, "history": history}


def train(params: dict, method: str) -> None:
    """bc is pi_ref itself (the reference stage trained it): copied, not trained twice."""
    import shutil

    out = MODELS / method
    out.mkdir(parents=True, exist_ok=True)
    if method == "bc":
        for path in sorted((MODELS / "reference").glob("*")):
            shutil.copy2(path, out / path.name)
        stored = json.loads((METRICS / "train" / "reference.json").read_text())
        results = list(stored.values())
    else:
        frame = pd.read_csv(QUALITY / "episodes.csv")
        jobs = [(method, env_id, seed, params, frame) for env_id in params["envs"] for seed in params["seeds"]]
        results = parallel(_train_job, jobs, params["workers"])
    write_json_atomic(METRICS / "train" / f"{method}.json", {r["run"]: r for r in results})


def _evaluate_job(method: str, env_id: str, seed: int, settings: dict) -> dict:
    from iwsft.control import policy as policies

    name = run_name(env_id, seed)
    model = policies.load(MODELS / method / f"{name}.safetensors")
    seeds = range(settings["seed"], settings["seed"] + settings["episodes"])
    returns = envs.rollout_returns(env_id, model.act, seeds)
    return {"run": name, "env": env_id, "seed": seed, "method": method, "returns": returns}


def confidence_interval(values, level: float = 0.95) -> float:
    """Half-width of the t interval of the mean (0 for fewer than two values)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return 0.0
    return float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def normalised_score(value: float, random: float, best: float) -> float:
    """100 (R - R_random) / (R_best_in_data - R_random)."""
    return 100.0 * (value - random) / (best - random)


def evaluate(params: dict, method: str) -> None:
    summary = json.loads((CURATED / "summary.json").read_text())
    jobs = [(method, env_id, seed, params["evaluate"]) for env_id in params["envs"] for seed in params["seeds"]]
    results = {}
    for result in parallel(_evaluate_job, jobs, params["workers"]):
        env = summary[result["env"]]
        mean = float(np.mean(result["returns"]))
        result.update(mean_return=mean, ci95=confidence_interval(result["returns"]), episodes=len(result["returns"]),
                      normalised=normalised_score(mean, env["return_random"], env["return_best"]))
        results[result["run"]] = result
    METRICS.joinpath("eval").mkdir(parents=True, exist_ok=True)
    write_json_atomic(METRICS / "eval" / f"{method}.json", results)
