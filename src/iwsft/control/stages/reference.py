"""The reference stage: the quality gate first, then pi_ref = BC on all data per (env, seed), saved
with its per-step log-likelihoods (what iw-SFT(Q)'s weights divide by), then the reference gate."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from iwsft.config.control import BehaviourCloning, ControlParams
from iwsft.control import dataset, gates
from iwsft.control.parallel import parallel
from iwsft.control.stages import METRICS, MODELS, QUALITY, RAW, REFERENCE, load_run_data, run_name
from iwsft.io.durable import write_json_atomic


def _quality_gate(params: ControlParams) -> pd.DataFrame:
    frame = pd.read_csv(QUALITY / "episodes.csv")
    frame["return_error"] = 0.0
    for env_id, group in frame.groupby("env", sort=False):
        arrays = dataset.read(RAW / f"{env_id}.npz")
        starts, _ = dataset.episode_bounds(arrays)
        recomputed = np.add.reduceat(arrays["rewards"].astype(np.float64), starts)
        declared = group["return"].to_numpy()
        error = np.abs(recomputed - declared) if len(recomputed) == len(declared) else np.full(len(declared), np.inf)
        frame.loc[group.index, "return_error"] = error
    settings = {"tolerance": 1e-3 * max(1.0, float(frame["return"].abs().max())), "bins": len(params.curate.percentiles)}
    gates.run("control-quality", str(QUALITY / "episodes.csv"), {"episodes": frame}, settings)
    return frame


def _reference_job(env_id: str, seed: int, settings: BehaviourCloning, frame: pd.DataFrame) -> dict:
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


def run(params: ControlParams) -> None:
    """pi_ref = BC on all data, per (env, seed), and its per-step log-likelihoods."""
    frame = _quality_gate(params)
    jobs = [(env_id, seed, params.bc, frame) for env_id in params.envs for seed in params.seeds]
    results = parallel(_reference_job, jobs, params.workers)
    runs = pd.DataFrame([{k: r[k] for k in ("run", "rows", "transitions", "nonfinite")} for r in results])
    gates.run("control-reference", str(REFERENCE), {"runs": runs}, {})
    METRICS.joinpath("train").mkdir(parents=True, exist_ok=True)
    write_json_atomic(METRICS / "train" / "reference.json", {r["run"]: r for r in results})
