"""The data stage: each env's dataset generated (scripted controllers: seconds; SAC: minutes) or
read from your file, then checked (Python checks naming file, array and index, then the GX suite).
control/dvc.yaml's data stage (the slow one) depends only on what makes data: this module's imports.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from iwsft.config.control import ControlParams, EnvSource, Gates
from iwsft.control import dataset, envs, gates
from iwsft.control.parallel import one_torch_thread, parallel
from iwsft.control.stages import RAW


def _generate(env_id: str, spec: EnvSource) -> tuple[str, float]:
    started = time.perf_counter()
    if spec.source == "scripted":
        from iwsft.control.scripted import generate

        arrays = generate(env_id, spec.noise, spec.episodes_per_level, spec.seed)
    elif spec.source == "sac":
        from iwsft.control.sac import replay_dataset

        one_torch_thread()
        arrays = replay_dataset(env_id, spec)
    else:  # a file: checked where it lies, so that messages name the user's file
        arrays = dataset.read(spec.path)
        dataset.check(spec.path, arrays, *envs.spaces(env_id))
    dataset.write(RAW / f"{env_id}.npz", arrays)
    return env_id, time.perf_counter() - started


def check_file(path, env_id: str, settings: Gates = Gates(), out_dir: Path | None = gates.GATES_DIR,
               boundary: str = "control-transitions") -> pd.DataFrame:
    """The transitions gate on one file: Python checks (file, array, index), then the GX suite."""
    obs_dim, low, high = envs.spaces(env_id)
    arrays = dataset.read(path)
    dataset.check(path, arrays, obs_dim, low, high)
    frame = gates.episode_frame(env_id, arrays, low, high)
    limits = {"min_episodes": settings.min_episodes, "max_length": envs.MAX_STEPS.get(env_id, 10**9)}
    gates.run(boundary, str(path), {"episodes": frame}, limits, out_dir=out_dir)
    return frame


def run(params: ControlParams) -> None:
    jobs = [(env_id, spec) for env_id, spec in params.envs.items()]
    for env_id, seconds in parallel(_generate, jobs, params.workers):
        print(f"control data: {env_id} in {seconds:.1f} s")
    frames = [check_file(RAW / f"{env_id}.npz", env_id, params.gates, out_dir=None) for env_id in params.envs]
    # one summary for the whole boundary, written where curate depends on it
    limits = {"min_episodes": params.gates.min_episodes, "max_length": max(envs.MAX_STEPS.get(e, 10**9) for e in params.envs)}
    gates.run("control-transitions", str(RAW), {"episodes": pd.concat(frames, ignore_index=True)}, limits)
