"""Checkpoints of a train@METHOD stage, so that a crash costs at most `train.save_steps` steps.

They live in data/checkpoints/METHOD/, outside the stage's outs: DVC deletes a stage's outs before it
runs the stage again, and this folder must survive exactly that (a `kill -9`, an OOM-killed node, a
Prefect retry). Each `checkpoint-N/` holds what Hugging Face's Trainer saves (weights as safetensors;
optimizer, scheduler and RNG states as its .pt files, which it loads with torch's restricted
`weights_only` unpickler) plus IwSftTrainer's own state (the EMA copy, the weight history and
the logging window; see trainer.IwSftTrainer.save_iw_state). `iwsft_state.json` is written last: a folder without
it was cut off mid-save and is never resumed from.

A checkpoint belongs to one run: `run.json` records what the training depends on (method, seed, the
train settings, the reference column's fingerprint, the base model). Checkpoints of other settings are
removed, with a message, rather than resumed from.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from iwsft.io.durable import write_text_atomic

if TYPE_CHECKING:
    from iwsft.config.schema import Params, Peft, Train

COMPLETE = "iwsft_state.json"  # written last into each checkpoint folder
_STEP = re.compile(r"^checkpoint-(\d+)$")
# settings that change where checkpoints go or how often, not what is trained
NOT_IDENTITY = ("save_steps", "keep_checkpoints", "logging_steps")


class Checkpoints:
    def __init__(self, folder: Path, identity: dict):
        self.folder = Path(folder)
        self.identity = json.loads(json.dumps(identity, sort_keys=True, default=str))

    def prepare(self) -> Path | None:
        """The newest complete checkpoint of this run, or None (then training starts at step 0).
        Checkpoints of another run, and any cut off mid-save, are removed first."""
        recorded = self._recorded()
        if recorded is not None and recorded != self.identity:
            changed = sorted(key for key in set(recorded) | set(self.identity) if recorded.get(key) != self.identity.get(key))
            print(f"checkpoints: {self.folder} holds another run's checkpoints (changed: {', '.join(changed)}); "
                  "removed, training from step 0", file=sys.stderr)
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        # atomic: other training processes read it (resumable)
        write_text_atomic(self.folder / "run.json", json.dumps(self.identity, indent=1, sort_keys=True))
        for folder in self._folders():
            if not (folder / COMPLETE).exists():
                print(f"checkpoints: {folder.name} was cut off mid-save; removed", file=sys.stderr)
                shutil.rmtree(folder)
        complete = self.complete()
        if complete:
            print(f"checkpoints: resuming from {complete[-1]} (step {step_of(complete[-1])})", file=sys.stderr)
        return complete[-1] if complete else None

    def resumable(self) -> Path | None:
        """What prepare() returns, read without changing anything (the other processes of a run)."""
        complete = self.complete()
        return complete[-1] if complete and self._recorded() == self.identity else None

    def complete(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        return [folder for folder in self._folders() if (folder / COMPLETE).exists()]

    def prune(self, keep: int) -> None:
        """Keep the newest `keep` complete checkpoints (all of them gone for keep=0)."""
        complete = self.complete()
        for folder in complete[:max(len(complete) - keep, 0)]:
            shutil.rmtree(folder)

    def finish(self, keep: int) -> None:
        """After the stage succeeded: the last `keep` checkpoints stay (train.keep_checkpoints), else none."""
        self.prune(keep)
        if keep == 0 and self.folder.exists():
            shutil.rmtree(self.folder)

    def _recorded(self) -> dict | None:
        path = self.folder / "run.json"
        try:
            return json.loads(path.read_text()) if path.exists() else None
        except json.JSONDecodeError:
            return {}

    def _folders(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        found = [path for path in self.folder.iterdir() if path.is_dir() and _STEP.match(path.name)]
        return sorted(found, key=step_of)


def step_of(folder: Path) -> int:
    return int(_STEP.match(Path(folder).name).group(1))


def identity_of(method: str, params: Params, train: Train, reference: dict, peft: Peft | None = None) -> dict:
    """What a checkpoint must agree on to be resumed: the run's method, seed, training settings, data
    (the reference column's fingerprint covers data, base weights and tokenizer) and base model."""
    return {"method": method, "seed": params.seed, "base": params.model.base, "reference": reference,
            "train": train.model_dump(exclude=set(NOT_IDENTITY)), "peft": peft.model_dump() if peft else None}
