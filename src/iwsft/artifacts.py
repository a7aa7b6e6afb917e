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

from iwsft.errors import UserError
from iwsft.durable import atomic_directory  # noqa: F401  (re-exported)


def save_model(model, tokenizer, directory: str | Path, dtype: torch.dtype | None = None) -> None:
    """save_pretrained with safetensors (the only format we write or read). dtype: cast the weights
    first, in place (for a model that is done training)."""
    if dtype is not None:
        model.to(dtype)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def resolve_model_dir(name: str | Path) -> Path:
    """A local HF directory, or a hub id ("org/name") already in the local Hugging Face cache.

    Never a download at run time (HF_HUB_OFFLINE stays on): a missing model is a UserError that
    says how to fetch it once.
    """
    path = Path(name)
    if path.is_dir():
        return path
    text = str(name)
    if text.count("/") == 1 and not text.startswith((".", "/")):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(snapshot_download(text, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError):
            raise UserError(f"model {text!r} is neither a local directory nor in the local Hugging Face cache; "
                            f"download it once with `huggingface-cli download {text}` (or point model.base at "
                            f"a directory), then run again: nothing is downloaded at run time") from None
    raise UserError(f"model directory {path} does not exist (set model.base in params.yaml to a local HF "
                    f"directory or a hub id in your Hugging Face cache; `iwsft import-model` converts a GGUF file)")


def load_tokenizer(directory: str | Path, trust_remote_code: bool = False):
    return AutoTokenizer.from_pretrained(resolve_model_dir(directory), trust_remote_code=trust_remote_code,
                                         local_files_only=True)


def load_model(directory: str | Path, trust_remote_code: bool = False, dtype=torch.float32, device: str = "cpu"):
    """A causal LM and its tokenizer from a local HF directory; never a hub download or pickle.
    An adapter directory (`peft.merge: false`, iwsft.adapters) loads its recorded base with the adapter
    merged in: a plain model for sampling and scoring."""
    from iwsft.adapters import base_of, is_adapter_directory, load_adapted

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


def load_model_for(params: dict, directory: str | Path):
    """load_model on params.yaml's runtime device and dtype, with its trust_remote_code."""
    from iwsft.devices import device_and_dtype

    device, dtype = device_and_dtype(params)
    return load_model(directory, params["model"]["trust_remote_code"], dtype=dtype, device=device)
