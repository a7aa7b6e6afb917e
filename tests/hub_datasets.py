"""Hub-style datasets for tests, built with `datasets`: a local Hugging Face cache laid out as `hf download`
leaves it (hub/datasets--OWNER--NAME/snapshots/<commit>/data/<split>-*.parquet and refs/<branch>), plus
stand-ins with the columns of the paper's data (s1K-1.1 for training, AIME 2024 held out)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from datasets import Dataset

S1K_ROWS = [  # s1K-1.1's columns (simplescaling/s1K-1.1), arithmetic a tiny model can be scored on
    {"question": f"What is {a} + {b}?", "solution": str(a + b), "cot_type": "math", "source_type": "stand-in",
     "deepseek_thinking_trajectory": f"I add {a} and {b}.", "deepseek_attempt": f"The answer is \\boxed{{{a + b}}}."}
    for a, b in [(1, 2), (3, 4), (5, 1), (2, 2), (7, 1), (4, 4), (6, 3), (2, 5)]
]
AIME_ROWS = [  # HuggingFaceH4/aime_2024's columns
    {"id": 60 + index, "problem": f"Compute {a} + {b}.", "solution": f"{a} + {b} = {a + b}", "answer": str(a + b),
     "url": "https://example.invalid", "year": "2024"}
    for index, (a, b) in enumerate([(10, 20), (11, 12), (30, 5), (9, 9)])
]


def hub_dataset(cache: Path, repo: str, splits: dict[str, list[dict]], branch: str = "main") -> str:
    """Put a dataset into the hub cache under `cache` (HF_HUB_CACHE), as `branch`'s newest commit; returns
    the commit hash (derived from the rows, so a changed dataset is a new revision)."""
    commit = hashlib.sha1(json.dumps(splits, sort_keys=True).encode()).hexdigest()
    repo_dir = cache / f"datasets--{repo.replace('/', '--')}"
    data = repo_dir / "snapshots" / commit / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        Dataset.from_list(rows).to_parquet(str(data / f"{split}-00000-of-00001.parquet"))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / branch).write_text(commit)
    return commit
