"""The data stage: each env's dataset generated (scripted controllers: seconds; SAC: minutes) or
read from your file, then checked (Python checks naming file, array and index, then the GX suite).
Its own module, so that control/dvc.yaml's data stage (the slow one) depends only on what makes data.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from iwsft.control import dataset, envs, gates
from iwsft.errors import UserError

RAW = Path("data/raw")


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def parallel(function, jobs: list[tuple], workers: int) -> list:
    """function(*job) for every job, in `workers` spawned processes (inline when one suffices)."""
    if workers <= 1 or len(jobs) <= 1:
        _one_thread()
        return [function(*job) for job in jobs]
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn"), initializer=_one_thread) as pool:
        return list(pool.map(function, *zip(*jobs)))


def _generate(env_id: str, spec: dict) -> tuple[str, float]:
    started = time.perf_counter()
    if spec["source"] == "scripted":
        from iwsft.control.scripted import generate

        arrays = generate(env_id, spec["noise"], spec["episodes_per_level"], spec["seed"])
    elif spec["source"] == "sac":
        from iwsft.control.sac import replay_dataset

        _one_thread()
        arrays = replay_dataset(env_id, spec)
    elif spec["source"] == "file":  # checked where it lies, so that messages name the user's file
        arrays = dataset.read(spec["path"])
        dataset.check(spec["path"], arrays, *envs.spaces(env_id))
    else:
        raise UserError(f"params envs.{env_id}.source: {spec['source']!r} is not scripted, sac or file")
    dataset.write(RAW / f"{env_id}.npz", arrays)
    return env_id, time.perf_counter() - started


def check_file(path, env_id: str, params: dict, out_dir=gates.GATES_DIR, boundary="control-transitions") -> pd.DataFrame:
    """The transitions gate on one file: Python checks (file, array, index), then the GX suite."""
    obs_dim, low, high = envs.spaces(env_id)
    arrays = dataset.read(path)
    dataset.check(path, arrays, obs_dim, low, high)
    frame = gates.episode_frame(env_id, arrays, low, high)
    settings = {"min_episodes": params.get("gates", {}).get("min_episodes", 10), "max_length": envs.MAX_STEPS.get(env_id, 10**9)}
    gates.run(boundary, str(path), {"episodes": frame}, settings, out_dir=out_dir)
    return frame


def data(params: dict) -> None:
    jobs = [(env_id, spec) for env_id, spec in params["envs"].items()]
    for env_id, seconds in parallel(_generate, jobs, params["workers"]):
        print(f"control data: {env_id} in {seconds:.1f} s")
    frames = [check_file(RAW / f"{env_id}.npz", env_id, params, out_dir=None) for env_id in params["envs"]]
    # one summary for the whole boundary, written where curate depends on it
    settings = {"min_episodes": params.get("gates", {}).get("min_episodes", 10),
                "max_length": max(envs.MAX_STEPS.get(e, 10**9) for e in params["envs"])}
    gates.run("control-transitions", str(RAW), {"episodes": pd.concat(frames, ignore_index=True)}, settings)
