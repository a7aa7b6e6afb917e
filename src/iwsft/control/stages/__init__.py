"""The control pipeline's stages, one module per stage of control/dvc.yaml, as the language pipeline's
iwsft.stages: `iwsft control <stage>` runs iwsft.control.stages.<stage>.run(params) (train and
evaluate: run(params, method)), with params the typed control/params.yaml (iwsft.config.control).

Every stage runs in control/ (its working directory) and reads and writes the paths below. Work over
(env, seed) pairs runs in `workers` processes of one torch thread each (iwsft.control.parallel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from iwsft.control import dataset, envs

RAW, CURATED, QUALITY, REFERENCE = Path("data/raw"), Path("data/curated"), Path("data/quality"), Path("data/reference")
MODELS, METRICS, REPORTS = Path("models"), Path("metrics"), Path("reports")


def run_name(env_id: str, seed: int) -> str:
    return f"{env_id}-s{seed}"


def load_run_data(env_id: str, frame: pd.DataFrame) -> tuple[dataset.Episodes, np.ndarray]:
    """An env's episodes (from data/raw) and their multiplicities (from the quality table `frame`)."""
    _, low, high = envs.spaces(env_id)
    episodes = dataset.Episodes.from_arrays(dataset.read(RAW / f"{env_id}.npz"), low, high)
    return episodes, frame[frame["env"] == env_id]["multiplicity"].to_numpy()
