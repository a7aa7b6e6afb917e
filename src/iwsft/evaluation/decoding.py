"""The decode loop: each prompt pre-filled once, its rows continue from copies of its KV cache.

`decode` returns, per prompt, `num_samples` sampled rows (exact draws from pi at temperature T, see
iwsft.evaluation.sampling) and, with `greedy`, one greedy row after them, each the new tokens up to and
including the first stop token (or max_new_tokens of them). How, and why:
- The longest prefix all prompts share (a chat template's system prompt) is pre-filled once per call,
  at batch 1. Each batch then pre-fills only its prompts' remaining tokens, once per prompt, and
  repeats each prompt's cache rows for its k samples (+ the greedy row): a 40-token chat prompt with
  k = 4 costs ~10 token forwards instead of 160.
- Layout of a row: [shared prefix][left padding][rest of the prompt][new tokens]. Position ids count
  unmasked tokens (as `generate` makes them from the attention mask), so every row sees its prompt at
  positions 0..len-1, exactly as `generate` with left padding; padding is masked out of attention.
- Keys and values go into buffers allocated once per batch (iwsft.evaluation.kv_cache), not grown by
  concatenation; logits are computed for the last position only (`logits_to_keep`), on the CPU in
  vocabulary blocks (iwsft.model.output_head: the same logits, ~a quarter faster), with grouped-query
  attention reading the key/value heads as they are (iwsft.model.grouped_attention: the same output).
- A row leaves the batch once it has sampled a stop token (when an eighth of the rows are done: each
  drop copies the cache, so they are grouped).
- Batches: prompts sorted by length, at most `batch_size` rows each and, with `max_batch_tokens`, at most
  that many rows x (prompt + max_new_tokens) tokens; a prompt's rows stay together (a batch has at
  least one prompt, so it can exceed both limits when k + 1 alone does).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from iwsft.evaluation import kv_cache
from iwsft.evaluation.sampling import draw_tokens, prompt_uniforms
from iwsft.model.grouped_attention import grouped_query_sdpa
from iwsft.model.output_head import vocabulary_blocks

DROP_FRACTION = 8  # drop finished rows once 1/8 of the batch is done


def batches(lengths: list[int], rows_per_prompt: int, max_new_tokens: int, batch_size: int,
            max_batch_tokens: int | None) -> list[list[int]]:
    """Prompt indices grouped into batches, shortest prompts first."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for index in order:
        rows = (len(current) + 1) * rows_per_prompt
        tokens = rows * (lengths[index] + max_new_tokens)  # the longest so far: the sort is ascending
        if current and (rows > batch_size or (max_batch_tokens is not None and tokens > max_batch_tokens)):
            groups.append(current)
            current = []
        current.append(index)
    return groups + ([current] if current else [])


@torch.inference_mode()
def decode(model, prompts: list[list[int]], indices: list[int], *, num_samples: int, greedy: bool,
           temperature: float, max_new_tokens: int, seed: int, stops: list[int], pad_id: int,
           batch_size: int, max_batch_tokens: int | None = None, show_progress: bool = False) -> list[list[list[int]]]:
    """Per prompt: num_samples sampled rows, then the greedy row if `greedy`; each row the new tokens.

    indices[i] is prompt i's index for seeding (its place in the whole prompt list, whichever
    process or batch draws it): its samples use prompt_uniforms(seed, indices[i], ...)."""
    rows_per_prompt = num_samples + int(greedy)
    results: list[list[list[int]]] = [[[] for _ in range(rows_per_prompt)] for _ in prompts]
    if not prompts or rows_per_prompt == 0 or max_new_tokens == 0:
        return results
    model.eval()
    device = model.device
    preallocated = kv_cache.supports(model)
    cache_keyword, extra = kv_cache.forward_keywords(model)
    shared = kv_cache.shared_prefix_length(prompts) if preallocated else 0
    prefix = None
    if shared:
        cache = kv_cache.new_cache(model, shared)
        model(input_ids=torch.tensor([prompts[0][:shared]], device=device), use_cache=True, **{cache_keyword: cache},
              **extra)
        kv_cache.check_filled(cache, shared)
        prefix = kv_cache.layer_states(cache)
    step = dict(model=model, prefix=prefix, shared=shared, preallocated=preallocated, cache_keyword=cache_keyword,
                extra={**extra, "use_cache": True},
                num_samples=num_samples, greedy=greedy, temperature=temperature, max_new_tokens=max_new_tokens,
                stops=torch.tensor(stops, device=device), pad_id=pad_id)
    groups = batches([len(p) for p in prompts], rows_per_prompt, max_new_tokens, batch_size, max_batch_tokens)
    for group in tqdm(groups, desc="generate", disable=not show_progress, mininterval=5):
        uniforms = [prompt_uniforms(seed, indices[i], num_samples, max_new_tokens) for i in group]
        # the same logits, faster on the CPU (iwsft.model.output_head, iwsft.model.grouped_attention)
        with vocabulary_blocks(model), grouped_query_sdpa(model):
            rows = _decode_batch([prompts[i][shared:] for i in group], uniforms, **step)
        for position, i in enumerate(group):
            results[i] = rows[position * rows_per_prompt : (position + 1) * rows_per_prompt]
    return results


def _decode_batch(suffixes, uniforms, *, model, prefix, shared, preallocated, extra, cache_keyword, num_samples,
                  greedy, temperature, max_new_tokens, stops, pad_id) -> list[list[int]]:
    device = model.device
    count, longest = len(suffixes), max(len(s) for s in suffixes)
    rows_per_prompt = num_samples + int(greedy)
    prompt_end = shared + longest
    capacity = prompt_end + max_new_tokens
    if preallocated:
        cache = kv_cache.new_cache(model, capacity)
        for layer, (keys, values) in zip(cache.layers, prefix or []):
            layer.fill(keys, values, count)
    else:
        from transformers import DynamicCache
        cache = DynamicCache(config=model.config)
    input_ids = torch.full((count, longest), pad_id, dtype=torch.long)
    mask = torch.zeros((count, capacity), dtype=torch.long)
    mask[:, :shared] = 1
    for row, suffix in enumerate(suffixes):
        input_ids[row, longest - len(suffix) :] = torch.tensor(suffix)
        mask[row, prompt_end - len(suffix) : prompt_end] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask[:, :prompt_end].cumsum(-1) - 1).clamp_(min=0)  # pad positions: masked, any value does
    extra = {**extra, cache_keyword: cache}
    logits = model(input_ids=input_ids, attention_mask=mask[:, :prompt_end], position_ids=positions[:, shared:],
                   **extra).logits[:, -1]
    kv_cache.check_filled(cache, prompt_end)
    # each prompt's row becomes its k sample rows (+ greedy): cache, mask, logits, next position
    cache.batch_repeat_interleave(rows_per_prompt)
    mask = mask.repeat_interleave(rows_per_prompt, dim=0)
    logits = logits.repeat_interleave(rows_per_prompt, dim=0)
    position = positions[:, -1].repeat_interleave(rows_per_prompt) + 1
    rows = count * rows_per_prompt
    noise = torch.zeros((rows, max_new_tokens), dtype=torch.float64)
    is_greedy = torch.zeros(rows, dtype=torch.bool)
    for prompt, drawn in enumerate(uniforms):
        first = prompt * rows_per_prompt
        noise[first : first + num_samples] = drawn
        is_greedy[first + num_samples : first + rows_per_prompt] = True
    noise, is_greedy = noise.to(device), is_greedy.to(device)
    live = torch.arange(rows, device=device)  # original row of each row in the batch
    tokens: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    finished_in_batch = 0
    for t in range(max_new_tokens):
        drawn = draw_tokens(logits, noise[live, t], temperature, is_greedy[live] if greedy else None)
        stopped = torch.isin(drawn, stops)
        for row, token, stop in zip(live.tolist(), drawn.tolist(), stopped.tolist()):
            if not done[row]:
                tokens[row].append(token)
                if stop:
                    done[row] = True
                    finished_in_batch += 1
        if t == max_new_tokens - 1 or all(done[row] for row in live.tolist()):
            break
        if finished_in_batch * DROP_FRACTION >= len(live):
            keep = torch.tensor([i for i, row in enumerate(live.tolist()) if not done[row]], device=device)
            cache.batch_select_indices(keep)
            live, mask, drawn, position = live[keep], mask[keep], drawn[keep], position[keep]
            finished_in_batch = 0
        length = prompt_end + t
        mask[:, length] = 1
        logits = model(input_ids=drawn[:, None], attention_mask=mask[:, : length + 1], position_ids=position[:, None],
                       **extra).logits[:, -1]
        position = position + 1
    return tokens
