"""The control pipeline's data gates, run by iwsft.gates.runner (the language side's GX plumbing,
data docs and messages): importing this module registers each boundary's suite and next stage
(iwsft.gates.register_boundary).

  boundary              checked                                               where
  control-transitions   per episode: finite, actions in bounds, one end flag   end of `data` (and validate)
                        at the last row, length within the env's cap
  control-quality       returns as declared (curated = recomputed), multiplicity in 0..3   start of `reference`
  control-reference     per-step log pi_ref finite, one per transition        end of `reference`
  control-evaluation    every (method, env, seed) evaluated, finite returns    start of `report`
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from iwsft.gates import GATES_DIR, register_boundary
from iwsft.gates.results import Check, GateInput

FINITE = {"min_value": -sys.float_info.max, "max_value": sys.float_info.max}
POSITIONS = ("env", "episode", "run")


def _gxe():
    import great_expectations.expectations as gxe

    return gxe


def _transitions(settings: dict, lookups: dict) -> dict:
    gxe = _gxe()
    return {"episodes": [
        gxe.ExpectTableRowCountToBeBetween(min_value=settings["min_episodes"], description=f"at least {settings['min_episodes']} episodes"),
        gxe.ExpectColumnValuesToBeInSet(column="nonfinite", value_set=[0], description="observations, actions, rewards finite"),
        gxe.ExpectColumnValuesToBeInSet(column="out_of_bounds", value_set=[0], description="actions within the env's bounds"),
        gxe.ExpectColumnValuesToBeInSet(column="ends_at_last", value_set=[True], description="one end flag, on the episode's last row"),
        gxe.ExpectColumnValuesToBeBetween(column="length", min_value=1, max_value=settings["max_length"],
                                          description="length within the env's episode cap"),
        gxe.ExpectColumnValuesToBeBetween(column="return", **FINITE, description="episode return finite"),
    ]}


def _quality(settings: dict, lookups: dict) -> dict:
    gxe = _gxe()
    return {"episodes": [
        gxe.ExpectColumnValuesToBeBetween(column="return_error", min_value=0, max_value=settings["tolerance"],
                                          description="the curated return is the sum of the episode's rewards"),
        gxe.ExpectColumnValuesToBeBetween(column="multiplicity", min_value=0, max_value=settings["bins"],
                                          description=f"multiplicity in 0..{settings['bins']}"),
    ]}


def _reference(settings: dict, lookups: dict) -> dict:
    gxe = _gxe()
    return {"runs": [
        gxe.ExpectColumnValuesToBeInSet(column="nonfinite", value_set=[0], description="log pi_ref finite on every step"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="rows", column_B="transitions", description="one log pi_ref per transition"),
    ]}


def _evaluation(settings: dict, lookups: dict) -> dict:
    gxe = _gxe()
    return {"runs": [
        gxe.ExpectTableRowCountToEqual(value=settings["runs"], description="every method x env x seed evaluated"),
        gxe.ExpectColumnValuesToBeBetween(column="mean_return", **FINITE, description="mean return finite"),
        gxe.ExpectColumnValuesToBeBetween(column="episodes", min_value=settings["episodes"],
                                          description=f"at least {settings['episodes']} evaluation episodes"),
    ]}


# boundary: (suite, the control stage its data goes to next)
BOUNDARIES = {"control-transitions": (_transitions, "curate"), "control-quality": (_quality, "reference"),
              "control-reference": (_reference, "train"), "control-evaluation": (_evaluation, "report")}
for _boundary, (_suite, _next_stage) in BOUNDARIES.items():
    register_boundary(_boundary, _suite, _next_stage)


def run(boundary: str, source: str, frames: dict[str, pd.DataFrame], settings: dict, checks: list[Check] | None = None,
        out_dir: Path | None = GATES_DIR) -> dict:
    """Check the frames (after any Python checks); DataError naming what failed."""
    from iwsft.gates.runner import run_gate

    gate = GateInput(boundary=boundary, source=source, frames=frames, settings=settings, checks=checks or [], positions=POSITIONS)
    return run_gate(gate, out_dir=out_dir)


def episode_frame(env_id: str, arrays: dict[str, np.ndarray], low: np.ndarray, high: np.ndarray) -> pd.DataFrame:
    """One row per episode of (already shape-checked) arrays, with the per-episode facts the suite checks."""
    from iwsft.control.dataset import BOUNDS_TOLERANCE, episode_bounds

    starts, lengths = episode_bounds(arrays)
    n = len(arrays["rewards"])
    finite = np.isfinite(arrays["observations"].reshape(n, -1)).all(1) & np.isfinite(arrays["actions"].reshape(n, -1)).all(1) \
        & np.isfinite(arrays["rewards"])
    inside = ((arrays["actions"] >= low - BOUNDS_TOLERANCE) & (arrays["actions"] <= high + BOUNDS_TOLERANCE)).all(1)
    ends = arrays["terminations"].astype(bool) | arrays["truncations"].astype(bool)
    flags = np.add.reduceat(ends.astype(np.int64), starts)
    return pd.DataFrame({
        "env": env_id, "episode": np.arange(len(starts)), "start": starts, "length": lengths,
        "return": np.add.reduceat(arrays["rewards"].astype(np.float64), starts),
        "nonfinite": np.add.reduceat((~finite).astype(np.int64), starts),
        "out_of_bounds": np.add.reduceat((~inside).astype(np.int64), starts),
        "ends_at_last": (flags == 1) & ends[starts + lengths - 1],
    })
