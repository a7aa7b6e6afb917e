"""LoRA adapters (params.yaml `peft:`), through the peft library.

The policy trains low-rank adapters on frozen base weights; with `train.reference_source: online` its
reference is the same model with the adapters switched off (IwSftTrainer), so no second copy of the
model is held. What the stage saves and the registry logs is the merged model (base + B·A folded into
each weight): a plain Hugging Face model that evaluation, `iwsft generate` and the registry load like any
other. Saving base + adapter separately (`peft.merge: false`) is refused for now (issue 12).
"""

from __future__ import annotations

import copy


def with_lora(model, settings: dict):
    """`model` wrapped with fresh LoRA adapters (B = 0, so it starts equal to the base model)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(task_type="CAUSAL_LM", r=settings["r"], lora_alpha=settings["alpha"],
                        lora_dropout=settings["dropout"], target_modules=settings["target_modules"])
    return get_peft_model(model, config)


def merged(model):
    """A plain model with the adapters folded in, leaving `model` (still training-ready) as it is.
    The copy costs one model's memory for the moment of saving."""
    return copy.deepcopy(model).merge_and_unload()


def is_adapted(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "merge_and_unload")
