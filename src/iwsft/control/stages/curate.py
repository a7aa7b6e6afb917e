"""The curate stage: the episode table, percentile thresholds and counts per bin, and the random
policy's return per env (the normalised score's zero)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from iwsft.config.control import ControlParams
from iwsft.control import dataset, envs
from iwsft.control.stages import CURATED, RAW
from iwsft.io.durable import write_json_atomic


def run(params: ControlParams) -> None:
    """Episode table, percentile thresholds, counts per bin, and the random-policy return per env."""
    percentiles = params.curate.percentiles
    rows, summary = [], {}
    for env_id in params.envs:
        _, low, high = envs.spaces(env_id)
        episodes = dataset.Episodes.from_arrays(dataset.read(RAW / f"{env_id}.npz"), low, high)
        thresholds = np.percentile(episodes.returns, percentiles)
        bins = np.searchsorted(thresholds, episodes.returns, side="right")  # 0: below p90, k: >= k-th threshold
        seeds = range(params.evaluate.seed, params.evaluate.seed + params.evaluate.episodes)
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
