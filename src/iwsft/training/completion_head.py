"""Completion-only LM head: per-token log-probs of the completion without the [B, T, V] logits.

Real vocabularies (49k-152k tokens) make the LM head's logits the largest activation of a step,
and the prompt and padding positions' logits are thrown away. Here the model runs to its final
hidden states, the rows whose *shifted* label is not -100 are picked, and the head is applied to
those rows only, in chunks, fused with the fp32 log-softmax
(`kernels.linear_token_logprobs`, which recomputes a chunk's logits in the backward instead of
keeping them). The result has `kernels.token_logprobs`' layout: (logp [B, T-1], mask [B, T-1]),
0 on masked positions, so every caller's maths is unchanged. Same numbers as the full-logits path
to float rounding (tests/unit/training/test_completion_head.py: 1e-5 in fp32 for log-probs, loss and
gradients).

How: the model is called whole (so DDP's and accelerate's forward wrappers, PEFT's adapters and
`disable_adapter()` all apply as usual) with `logits_to_keep` = an empty index, so its own head
computes nothing, and a forward hook on its decoder keeps the final hidden states (after the final
norm: what the head would have received).

A batch whose rows all start with the same tokens (a chat template's system prompt: ~24 of SmolLM2's
~60-token rows) forwards them once, at batch 1, into a KV cache that every row continues from
(`shared_prefix`, `_final_states`); autograd sums the rows' gradients through the cache into that one
forward. Same numbers to float rounding; ~35 % fewer token forwards in SmolLM2's training steps.

Features / limits: exact only for architectures whose head is `lm_head(last_hidden_state)`, a
plain `nn.Linear` (tied or not, bias or not), with no logit scaling or soft-capping: the classes
in EXACT_HEAD_CLASSES, checked by exact class name. Anything else (Gemma 2/3's soft-capping,
Cohere's and Granite's scaling, a LoRA-wrapped or quantised lm_head, PEFT prompt learning, unknown
architectures) falls back, with one warning per model class, to the full-logits path of today.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from iwsft.encoding.sequences import IGNORE_INDEX
from iwsft.training import kernels

log = logging.getLogger(__name__)

# Classes whose forward is `logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, ...))`
# and nothing more (read in transformers 5.24's modeling files).
EXACT_HEAD_CLASSES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "GemmaForCausalLM",
    "Phi3ForCausalLM", "SmolLM3ForCausalLM", "Olmo2ForCausalLM", "GPT2LMHeadModel",
})
# Rows per chunk are also capped so that one chunk's fp32 logits stay under 2**24 values (64 MB).
CHUNK_VALUES = 2**24
# A batch's common prefix is forwarded once when it has at least SHARED_MIN_TOKENS tokens and that saves at
# least SHARED_FRACTION of the batch's token forwards: a chat template's system prompt (SmolLM2's 24 tokens
# in ~60-token rows: ~35 %). A BOS token alone (the demo's char model) does not pay for a second forward.
SHARED_FRACTION = 0.1
SHARED_MIN_TOKENS = 8
_reported: set[str] = set()


def _causal_lm(model):
    """The transformers model inside DDP, torch.compile and PEFT (LoRA) wrappers."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "get_base_model") and hasattr(model, "peft_config"):
            return None if getattr(model, "active_peft_config", None) is None or model.active_peft_config.is_prompt_learning \
                else model.get_base_model()
        else:
            return model


def head_parts(model):
    """(decoder, lm_head) when the completion-only head is exact for `model`, else (None, reason)."""
    causal_lm = _causal_lm(model)
    if causal_lm is None:
        return None, "PEFT prompt learning (virtual tokens shift the positions)"
    name = type(causal_lm).__name__
    if name not in EXACT_HEAD_CLASSES:
        return None, f"{name} is not among the architectures checked for a plain lm_head"
    head = causal_lm.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        return None, f"{name}'s lm_head is a {type(head).__name__}, not a plain Linear (adapted or quantised?)"
    decoder = causal_lm.base_model
    if decoder is causal_lm:
        return None, f"{name} has no separate decoder module"
    return (decoder, head), None


def _report_fallback(model, reason: str) -> None:
    key = type(_causal_lm(model) or model).__name__
    if key not in _reported:
        _reported.add(key)
        log.warning("completion-only LM head not used for %s: %s; computing the full [B, T, V] logits instead "
                    "(same numbers, more time and memory)", key, reason)


def chunk_rows(vocab_size: int, chunk_size: int) -> int:
    return max(1, min(chunk_size, CHUNK_VALUES // max(vocab_size, 1)))


def _compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmul runs in inside the model's forward: autocast's, if it is on."""
    device = weight.device.type
    if torch.is_autocast_enabled(device) and weight.dtype in (torch.float32, torch.float64):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def completion_logprobs(model, input_ids, attention_mask, labels, chunk_size: int = 1024, enabled: bool = True,
                        head_autocast=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp [B, T-1] fp32, mask [B, T-1] fp32) of the labels, as `kernels.token_logprobs` would
    return them from `model(...).logits`, computing the head on the completion rows only.

    Gradients flow to the model as usual when grad mode is on. enabled=False, or an architecture
    outside EXACT_HEAD_CLASSES, takes the full-logits path. head_autocast: the autocast context the
    model's own forward runs under (accelerate's, for the model it prepared), for the head's matmul."""
    parts, reason = head_parts(model) if enabled else (None, "disabled")
    if parts is None:
        if enabled:
            _report_fallback(model, reason)
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return kernels.token_logprobs(logits, labels, chunk_size=chunk_size)
    decoder, head = parts
    hidden = _final_states(model, decoder, input_ids, attention_mask, shared_prefix(model, input_ids, attention_mask))
    mask = labels[:, 1:] != IGNORE_INDEX
    rows = hidden[:, :-1][mask]  # [N, H]: position t predicts label t+1
    with head_autocast if head_autocast is not None else contextlib.nullcontext():
        compute_dtype = _compute_dtype(head.weight)
    values = kernels.linear_token_logprobs(
        rows, head.weight, labels[:, 1:][mask], bias=head.bias,
        chunk_size=chunk_rows(head.weight.shape[0], chunk_size), compute_dtype=compute_dtype,
    )
    logp = values.new_zeros(mask.shape).masked_scatter(mask, values)
    return logp, mask.float()


def shared_prefix(model, input_ids, attention_mask) -> int:
    """The tokens every row of a right-padded batch starts with (a chat template's system prompt), when
    they are at least SHARED_MIN_TOKENS and forwarding them once instead of once per row saves at least
    SHARED_FRACTION of the batch's token forwards; else 0. Each row keeps at least one token of its own.
    Not under DDP (one forward per backward) or gradient checkpointing, nor for models the decode loop's
    cache does not cover."""
    from iwsft.evaluation.kv_cache import supports

    rows = input_ids.shape[0]
    if rows < 2 or isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return 0
    causal_lm = _causal_lm(model)
    if getattr(causal_lm, "is_activation_checkpointing", False) or not supports(causal_lm):
        return 0
    lengths = attention_mask.sum(-1)
    shortest = int(lengths.min())
    if shortest < 2 or not bool(attention_mask[:, :shortest].all()):  # empty or left-padded rows
        return 0
    same = (input_ids[:, : shortest - 1] == input_ids[:1, : shortest - 1]).all(0)
    shared = int(same.long().cumprod(0).sum())
    worth_it = shared >= SHARED_MIN_TOKENS and shared * (rows - 1) >= SHARED_FRACTION * int(lengths.sum())
    return shared if worth_it else 0


def _final_states(model, decoder, input_ids, attention_mask, shared: int) -> torch.Tensor:
    """The decoder's final hidden states [B, T, H] (what the head would receive), from one forward of
    the batch with the model's own head computing nothing or, with a `shared` prefix, from that prefix
    forwarded at batch 1 into a KV cache that every row continues from. Autograd sums the rows' gradients
    through the cache into the one prefix forward: the same gradients to float rounding
    (tests/unit/training/test_completion_head.py)."""
    from transformers import DynamicCache

    from iwsft.evaluation.kv_cache import forward_keywords

    captured = []
    hook = decoder.register_forward_hook(lambda module, args, output: captured.append(output[0]))
    nothing = torch.empty(0, dtype=torch.long, device=input_ids.device)  # the model's own head: 0 positions
    try:
        if not shared:
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=nothing)
        else:
            keyword = forward_keywords(_causal_lm(model))[0]
            cache = DynamicCache(config=_causal_lm(model).config)
            model(input_ids=input_ids[:1, :shared], attention_mask=attention_mask[:1, :shared], use_cache=True,
                  logits_to_keep=nothing, **{keyword: cache})
            rows, length = input_ids.shape
            cache.batch_repeat_interleave(rows)
            positions = torch.arange(shared, length, device=input_ids.device).expand(rows, -1)
            model(input_ids=input_ids[:, shared:], attention_mask=attention_mask, position_ids=positions,
                  use_cache=True, logits_to_keep=nothing, **{keyword: cache})
    finally:
        hook.remove()
    if len(captured) != 1 + bool(shared):
        raise RuntimeError(f"completion head: the decoder ran {len(captured)} times, expected {1 + bool(shared)}")
    if not shared:
        return captured[0]
    return torch.cat([captured[0].expand(input_ids.shape[0], -1, -1), captured[1]], dim=1)
