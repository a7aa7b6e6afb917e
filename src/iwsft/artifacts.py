"""Loading and saving models and stage outputs safely.

- Safetensors only, trust_remote_code off unless params say otherwise.
- Every output is written to a temporary sibling and renamed into place, so a crash never
  leaves a half-written file or directory that DVC would cache.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


@contextlib.contextmanager
def atomic_directory(target: str | Path):
    """Yield a temporary directory next to `target`; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


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
