"""One module per DVC stage; each `run(params, ...)` reads its typed params section(s) (iwsft.config.schema)
and writes its outputs.

dvc.yaml calls them through the CLI (`iwsft <stage>`), which is the only place that reads
params.yaml, sets threads and turns user errors into clear messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from iwsft.runtime import progress_only_for_slow_work

if TYPE_CHECKING:
    from iwsft.config.schema import Params

progress_only_for_slow_work()  # before any stage imports tqdm (iwsft.runtime)

DATA = Path("data")
MODELS = Path("models")
REPORTS = Path("reports")


def model_dir(method: str, params: Params) -> Path:
    """Where each method's model lives; `base` is pi_ref itself."""
    return Path(params.model.base) if method == "base" else MODELS / method


def per_prompt_successes(method: str, samples_per_prompt: int) -> list[int]:
    """How many of each eval prompt's samples succeeded, from evaluate's samples.jsonl (n rows per
    prompt, in eval-file order: row i belongs to prompt i // n, as prompts need not be unique keys);
    [] when the file is missing or its rows do not split into groups of n. The paired comparisons of
    report and register stand on it."""
    from iwsft.data.records import read_jsonl

    path = DATA / "evaluate" / method / "samples.jsonl"
    if not path.is_file() or samples_per_prompt < 1:
        return []
    rewards = [int(row["reward"]) for row in read_jsonl(path)]
    if not rewards or len(rewards) % samples_per_prompt:
        return []
    return [sum(rewards[i:i + samples_per_prompt]) for i in range(0, len(rewards), samples_per_prompt)]
