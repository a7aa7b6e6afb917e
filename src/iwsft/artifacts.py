"""Loading and saving models and stage outputs safely.

- Safetensors only, trust_remote_code off unless params say otherwise.
- Every output directory is written through `atomic_directory` (iwsft.durable: a synced staging
  sibling swapped onto the target), so a crash never leaves a half-written directory that DVC would
  cache. It lives in the light module so that callers without torch can use it; re-exported here
  for the stages that import it from this module.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from iwsft.durable import atomic_directory  # noqa: F401  (re-exported)


def save_model(model, tokenizer, directory: str | Path) -> None:
    """save_pretrained with safetensors (the only format we write or read)."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def load_tokenizer(directory: str | Path, trust_remote_code: bool = False):
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"model directory {directory} does not exist (set model.base in params.yaml)")
    return AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code, local_files_only=True)


def load_model(directory: str | Path, trust_remote_code: bool = False, dtype=torch.float32):
    """A causal LM and its tokenizer from a local HF directory; never a hub download or pickle."""
    tokenizer = load_tokenizer(directory, trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        directory,
        trust_remote_code=trust_remote_code,
        local_files_only=True,
        use_safetensors=True,
        dtype=dtype,
    )
    return model, tokenizer
