"""Where models run: params.yaml `runtime:` -> (device, dtype). torch is imported lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING

from iwsft.errors import UserError

if TYPE_CHECKING:
    from iwsft.config.schema import Params


def device_and_dtype(params: Params):
    """(device, torch dtype) from params.yaml `runtime:` for loading models that sample or score.

    auto: the GPU when torch sees one, in bf16 where it is supported (log-probs are still reduced in
    fp32: iwsft.training.kernels.token_logprobs upcasts each chunk), else the CPU in fp32. A device that is
    asked for but absent is an error, never a silent fall-back to a 100x slower run.
    """
    import torch

    device, dtype = params.runtime.device, params.runtime.dtype
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("params.yaml runtime.device is cuda, but torch sees no CUDA device "
                        "(torch.cuda.is_available() is False): set runtime.device: auto or cpu")
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    return device, getattr(torch, dtype)


def training_precision(params: Params, device: str, dtype=None) -> str:
    """params.yaml train.precision -> "bf16" | "fp16" | "fp32" on `device`.

    auto follows runtime.dtype's choice (bf16 on a GPU that supports it, else fp32): `dtype` when the
    caller has it from device_and_dtype already. fp16 needs a GPU
    (its loss scaler is CUDA's); bf16 on the CPU is allowed (autocast), though rarely faster there.
    """
    import torch

    precision = params.train.precision
    if precision == "auto":
        dtype = dtype if dtype is not None else device_and_dtype(params)[1]
        return "bf16" if dtype == torch.bfloat16 else "fp32"
    if precision == "fp16" and device != "cuda":
        raise UserError(f"params.yaml train.precision is fp16, which needs a CUDA device (this run is on {device}): "
                        "use bf16, fp32 or auto")
    return precision
