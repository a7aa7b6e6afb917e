"""Grouped-query attention without copied keys and values, while decoding and scoring on the CPU.

SmolLM2 has 9 query heads and 3 key/value heads. With an attention mask (left-padded prompts always
have one), transformers' SDPA path copies every layer's keys and values to 9 heads (`repeat_kv`) before
calling torch's kernel, at every decode step; torch's SDPA takes the 3 heads as they are with
`enable_gqa=True`. transformers uses that only without a mask, on the CPU as on CUDA (where a mask
would push the kernel to its slow math path); its TRANSFORMERS_SDPA_FORCE_GQA variable turns it on.
Measured (1 thread, 64 rows x 9 heads, 72 keys): 3.2 -> 0.76 ms a layer with the copy; 68 -> 7.1 ms at 320
rows. At one thread the output is bitwise the same (tests/unit/model/test_grouped_attention.py; the demo's
results and the generation benchmark's samples are unchanged). With two threads the kernel shares the
work out differently and the last bits can differ: 12 of the SmolLM2 profile's 384 samples changed (draws
from the same pi, rounded differently).

`grouped_query_sdpa(model)` sets the variable for a block of inference on the CPU and restores it after;
GPUs, training and a variable the user set are left alone.
"""

from __future__ import annotations

import contextlib
import os

FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"  # read by transformers.integrations.sdpa_attention at every call


def _grouped(model) -> bool:
    config = model.config.get_text_config(decoder=True)
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return bool(heads) and kv_heads < heads and getattr(config, "_attn_implementation", "sdpa") == "sdpa"


@contextlib.contextmanager
def grouped_query_sdpa(model):
    if model.device.type != "cpu" or FORCE_GQA in os.environ or not _grouped(model):
        yield
        return
    os.environ[FORCE_GQA] = "1"
    try:
        yield
    finally:
        os.environ.pop(FORCE_GQA, None)
