"""LoRA adapters (params.yaml `peft:`), through the peft library.

The policy trains low-rank adapters on frozen base weights; with `train.reference_source: online` its
reference is the same model with the adapters switched off (IwSftTrainer), so no second copy of the
model is held. What the stage saves and the registry logs is, by default, the merged model (base + B·A
folded into each weight): a plain Hugging Face model. With `peft.merge: false` it is the adapter alone
(peft's adapter_model.safetensors + adapter_config.json, a few MB) and BASE_RECORD, which names the base
model directory and the sha256 of its files: `load_adapted` refuses a base that is not the one trained on.
Evaluation, `iwsft generate` and the registry load either (iwsft.model.artifacts.load_model).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING

from iwsft.errors import UserError

if TYPE_CHECKING:
    from iwsft.config.schema import Peft

BASE_RECORD = "iwsft_base_model.json"  # in an adapter directory: {"path": the base, "sha256": its files}


def with_lora(model, lora: Peft):
    """`model` wrapped with fresh LoRA adapters (B = 0, so it starts equal to the base model), as
    params.yaml's `peft:` section says."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(task_type="CAUSAL_LM", r=lora.r, lora_alpha=lora.alpha,
                        lora_dropout=lora.dropout, target_modules=lora.target_modules)
    return get_peft_model(model, config)


def merged(model):
    """A plain model with the adapters folded in, leaving `model` (still training-ready) as it is.
    The copy costs one model's memory for the moment of saving."""
    return copy.deepcopy(model).merge_and_unload()


def is_adapted(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "merge_and_unload")


def is_adapter_directory(directory) -> bool:
    return (Path(directory) / "adapter_config.json").is_file()


def save_adapter(model, tokenizer, directory, base_dir) -> None:
    """The adapter only (`peft.merge: false`), the tokenizer, and the base it belongs to, with the hash
    of its files. A relative base_dir (params' model.base, relative to the project) is recorded relative
    to `directory`, so that the project can move and the adapter still finds its base."""
    import os

    from iwsft.model.hashing import directory_sha256

    model.save_pretrained(directory, safe_serialization=True)  # a PeftModel saves its adapter alone
    tokenizer.save_pretrained(directory)
    path = str(base_dir) if Path(base_dir).is_absolute() else os.path.relpath(base_dir, directory)
    record = {"path": path, "sha256": directory_sha256(base_dir)}
    (Path(directory) / BASE_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def base_of(directory) -> Path:
    """The base model directory an adapter directory was trained on, checked by its hash."""
    from iwsft.model.hashing import directory_sha256

    path = Path(directory) / BASE_RECORD
    try:
        record = json.loads(path.read_text())
        base = Path(directory) / record["path"]  # relative to the adapter directory (an absolute one stays)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: an adapter directory needs this record of its base model ({error})") from None
    if not base.is_dir():
        raise UserError(f"{path}: the base model {base} is not there (an adapter needs the base it was trained on; "
                        "run from the project it was trained in, or register the merged model: peft.merge: true)")
    if directory_sha256(base) != record["sha256"]:
        raise UserError(f"{path}: {base} is not the base model this adapter was trained on (its files' sha256 "
                        f"differs from {record['sha256'][:12]}): refusing to apply the adapter to another model")
    return base


def load_adapted(base_model, directory):
    """base_model (the one base_of(directory) names) with the adapter of `directory` merged in."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, str(directory), is_trainable=False).merge_and_unload()
