"""The train stage, one per method (CONTROL_METHODS in iwsft.methods; what each does:
iwsft.control.training): BC 10% from scratch on the episodes with multiplicity > 0; SFT(Q) and
iw-SFT(Q) fine-tuned from pi_ref; BC is pi_ref itself, copied from the reference stage."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

from iwsft.config.control import ControlParams
from iwsft.control.parallel import parallel
from iwsft.control.stages import METRICS, MODELS, QUALITY, REFERENCE, load_run_data, run_name
from iwsft.io.durable import write_json_atomic
from iwsft.methods import CONTROL_BASELINE, CONTROL_METHODS


def _train_job(method: str, env_id: str, seed: int, params: ControlParams, frame: pd.DataFrame) -> dict:
    from iwsft.control import policy as policies
    from iwsft.control.training import behaviour_cloning, fine_tune

    started = time.perf_counter()
    name = run_name(env_id, seed)
    episodes, multiplicity = load_run_data(env_id, frame)
    if method == "bc10":
        model, history = behaviour_cloning(episodes, np.flatnonzero(multiplicity > 0), params.bc, seed)
    else:
        ref = policies.load(MODELS / "reference" / f"{name}.safetensors")
        with np.load(REFERENCE / f"{name}.npz") as stored:
            ref_logp = stored["logp"]
        model, history = fine_tune(ref, episodes, multiplicity, ref_logp, params.finetune, seed,
                                   weighted=CONTROL_METHODS[method].importance_weighted)
    policies.save(model, MODELS / method / f"{name}.safetensors")
    return {"run": name, "env": env_id, "seed": seed, "seconds": time.perf_counter() - started, "history": history}


def run(params: ControlParams, method: str) -> None:
    """bc is pi_ref itself (the reference stage trained it): copied, not trained twice."""
    import shutil

    out = MODELS / method
    out.mkdir(parents=True, exist_ok=True)
    if method == CONTROL_BASELINE:
        for path in sorted((MODELS / "reference").glob("*")):
            shutil.copy2(path, out / path.name)
        stored = json.loads((METRICS / "train" / "reference.json").read_text())
        results = list(stored.values())
    else:
        frame = pd.read_csv(QUALITY / "episodes.csv")
        jobs = [(method, env_id, seed, params, frame) for env_id in params.envs for seed in params.seeds]
        results = parallel(_train_job, jobs, params.workers)
    write_json_atomic(METRICS / "train" / f"{method}.json", {r["run"]: r for r in results})
