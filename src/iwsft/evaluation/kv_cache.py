"""A KV cache written into buffers allocated once, for the decode loop (iwsft.evaluation.decoding).

transformers' DynamicCache grows every layer's keys and values by `torch.cat` at every step: a copy of
the whole cache per token (28 % of a decode step at batch 64 in issue 30's profile). StaticCache avoids
the copy but makes attention run over its full length at every step. This layer does neither: its
buffers hold `capacity` positions from the start, `update` writes the new positions in place and
returns views of the filled part, so attention sees exactly the tokens so far, as with DynamicCache.

Rows leave the batch (`keep_rows`) and a prompt's row becomes k rows (`repeat_rows`) by copying the
filled part into fresh buffers: once per event, not per step. Only for models whose layers are all
full attention (`supports`); others keep DynamicCache (sliding windows, linear attention).
"""

from __future__ import annotations

import inspect

import torch
from transformers.cache_utils import Cache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values: views [:, :, :length] of [batch, heads, capacity, dim] buffers."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self._allocate(key_states, value_states, key_states.shape[0])

    def _allocate(self, keys: torch.Tensor, values: torch.Tensor, rows: int) -> None:
        self.device = keys.device
        self.key_buffer = keys.new_empty(rows, keys.shape[1], self.capacity, keys.shape[-1])
        self.value_buffer = values.new_empty(rows, values.shape[1], self.capacity, values.shape[-1])
        self.is_initialized = True

    def _expose(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache full: {end} positions, room for {self.capacity}")
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def fill(self, keys: torch.Tensor, values: torch.Tensor, rows: int) -> None:
        """Start from given keys and values: [1, heads, length, dim] (a shared prefix, copied to `rows` rows) or
        [rows, heads, length, dim] (each row its own, as the trajectory scorer copies them)."""
        self._allocate(keys, values, rows)
        self.length = keys.shape[-2]
        self.key_buffer[:, :, : self.length] = keys
        self.value_buffer[:, :, : self.length] = values
        self._expose()

    def _rebuild(self, pick) -> None:
        keys, values = pick(self.keys), pick(self.values)
        self._allocate(keys, values, keys.shape[0])
        self.key_buffer[:, :, : self.length] = keys
        self.value_buffer[:, :, : self.length] = values
        self._expose()

    def keep_rows(self, rows: torch.Tensor) -> None:
        if self.is_initialized:
            self._rebuild(lambda t: t.index_select(0, rows))

    def repeat_rows(self, repeats: int) -> None:
        if self.is_initialized:
            self._rebuild(lambda t: t.repeat_interleave(repeats, dim=0))

    batch_select_indices = keep_rows
    batch_repeat_interleave = repeat_rows

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.capacity

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("the decode loop never crops")

    def reset(self) -> None:
        self.length, self.keys, self.values = 0, None, None
        self.key_buffer = self.value_buffer = None
        self.is_initialized = False


def supports(model) -> bool:
    """Every decoder layer is plain full attention (no sliding window, linear or shared KV layers)."""
    config = model.config.get_text_config(decoder=True)
    types = getattr(config, "layer_types", None) or ["full_attention"]
    return all(kind == "full_attention" for kind in types) and not getattr(config, "sliding_window", None)


def new_cache(model, capacity: int) -> Cache:
    config = model.config.get_text_config(decoder=True)
    return Cache(layers=[PreallocatedLayer(capacity) for _ in range(config.num_hidden_layers)])


def layer_states(cache: Cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) of every layer, as filled so far (views)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def shared_prefix_length(prompts: list[list[int]]) -> int:
    """Length of the longest common prefix, leaving each prompt at least one token of its own (the
    last prompt token's logits give the first new token)."""
    if not prompts:
        return 0
    shortest = min(len(p) for p in prompts)
    length = 0
    first = prompts[0]
    while length < shortest - 1 and all(p[length] == first[length] for p in prompts):
        length += 1
    return length


def forward_keywords(model) -> tuple[str, dict]:
    """The cache's keyword (`cache` since transformers 5.2x, `past_key_values` in older remote code) and
    logits_to_keep=1 where the model takes it. Read from the forward itself: a **kwargs that swallowed an
    unknown name would run without the cache (caught after the pre-fill anyway: _check_filled)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model forwards kwargs
    names = inspect.signature(base.forward).parameters
    keyword = "cache" if "cache" in names else "past_key_values"
    return keyword, ({"logits_to_keep": 1} if "logits_to_keep" in names else {})


def check_filled(cache, expected: int) -> None:
    if cache.get_seq_length() != expected:
        raise RuntimeError(f"the model did not fill the KV cache ({cache.get_seq_length()} of {expected} positions): "
                           "its forward takes neither `cache` nor `past_key_values`")
