"""The quality stage: each episode's multiplicity #{k: R >= p_k} (iwsft.data.quality.quality_multiplicity,
the language pipeline's rule), per env: how often SFT(Q) samples it; 0 leaves it out of BC 10%."""

from __future__ import annotations

import pandas as pd

from iwsft.config.control import ControlParams
from iwsft.control.stages import CURATED, QUALITY


def run(params: ControlParams) -> None:
    """Multiplicity #{k: R >= p_k} per episode (iwsft.data.quality.quality_multiplicity)."""
    from iwsft.data.quality import quality_multiplicity

    frame = pd.read_csv(CURATED / "episodes.csv")
    frame["multiplicity"] = 0
    for env_id, group in frame.groupby("env", sort=False):
        frame.loc[group.index, "multiplicity"] = quality_multiplicity(group["return"].to_numpy(), params.curate.percentiles)
    QUALITY.mkdir(parents=True, exist_ok=True)
    frame.to_csv(QUALITY / "episodes.csv", index=False)
