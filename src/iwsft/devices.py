"""Where models run: params.yaml `runtime:` -> (device, dtype). torch is imported lazily."""

from __future__ import annotations

from iwsft.errors import UserError


def device_and_dtype(params: dict):
    """(device, torch dtype) from params.yaml `runtime:` for loading models that sample or score.

    auto: the GPU when torch sees one, in bf16 where it is supported (log-probs are still reduced in
    fp32: iwsft.objectives.token_logprobs upcasts each chunk), else the CPU in fp32. A device that is
    asked for but absent is an error, never a silent fall-back to a 100x slower run.
    """
    import torch

    section = params.get("runtime") or {}
    device, dtype = section.get("device", "auto"), section.get("dtype", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("params.yaml runtime.device is cuda, but torch sees no CUDA device "
                        "(torch.cuda.is_available() is False): set runtime.device: auto or cpu")
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    return device, getattr(torch, dtype)
