"""Loading and saving models and stage outputs safely.

- Safetensors only, trust_remote_code off unless params say otherwise.
- Every output directory is written through `atomic_directory` (iwsft.io.durable: a synced staging
  sibling swapped onto the target), so a crash never leaves a half-written directory that DVC would
  cache. It lives in the light module so that callers without torch can use it; re-exported here
  for the stages that import it from this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoModelForCausalLM

from iwsft.io.durable import atomic_directory  # noqa: F401  (re-exported)
# re-exported: the tokenizer loads without torch (iwsft.model.tokenizer), for the stages that load no model
from iwsft.model.tokenizer import load_tokenizer, resolve_model_dir  # noqa: F401

if TYPE_CHECKING:
    from iwsft.config.schema import Params


def save_model(model, tokenizer, directory: str | Path, dtype: torch.dtype | None = None) -> None:
    """save_pretrained with safetensors (the only format we write or read). dtype: cast the weights
    first, in place (for a model that is done training)."""
    if dtype is not None:
        model.to(dtype)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def load_model(directory: str | Path, trust_remote_code: bool = False, dtype=torch.float32, device: str = "cpu"):
    """A causal LM and its tokenizer from a local HF directory; never a hub download or pickle.
    An adapter directory (`peft.merge: false`, iwsft.model.adapters) loads its recorded base with the adapter
    merged in: a plain model for sampling and scoring."""
    from iwsft.model.adapters import base_of, is_adapter_directory, load_adapted

    directory = resolve_model_dir(directory)
    tokenizer = load_tokenizer(directory, trust_remote_code)
    adapter = is_adapter_directory(directory)
    model = AutoModelForCausalLM.from_pretrained(
        base_of(directory) if adapter else directory,
        trust_remote_code=trust_remote_code,
        local_files_only=True,
        use_safetensors=True,
        dtype=dtype,
    )
    if adapter:
        model = load_adapted(model, directory)
    return model.to(device), tokenizer


def load_model_for(params: Params, directory: str | Path):
    """load_model on params.yaml's runtime device and dtype, with its trust_remote_code."""
    from iwsft.model.devices import device_and_dtype

    device, dtype = device_and_dtype(params)
    return load_model(directory, params.model.trust_remote_code, dtype=dtype, device=device)
