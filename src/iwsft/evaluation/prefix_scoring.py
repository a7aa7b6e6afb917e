"""Trajectory log-probs with each prompt pre-filled once: what sample and evaluate score.

Sample scores pi_ref's k completions of every prompt, evaluate its 4 samples of every held-out prompt;
scored whole (`score_reference`), a 40-token chat prompt with k = 4 is forwarded four times and the chat
template's ~30-token system prompt once per row, more token forwards than the completions themselves.
Here, as in the decode loop (iwsft.evaluation.decoding):
- the longest prefix every prompt shares is forwarded once, at batch 1, into a KV cache;
- each batch forwards its prompts' own remaining tokens once per prompt (left-padded behind the
  prefix), and the last prompt position's hidden state predicts each completion's first token;
- the cache rows are then copied to the prompt's completions, which are forwarded in groups of
  similar length (right-padded, at most WASTE of a group padding: a prompt's k completions run from
  a few tokens to max_new_tokens), their positions continuing their prompt's;
- the LM head runs on the completion positions only, fused with the fp32 log-softmax
  (training.kernels.linear_token_logprobs), as in score_reference.

The numbers are score_reference's to float rounding (a KV cache splits the same sums differently:
~1e-6 per sequence, tests/unit/evaluation/test_prefix_scoring.py), and bitwise the same however the
rows are sharded over processes: batches are cut from the whole list, the prefix from all prompts.
Models the decode loop cannot cache the same way, or whose head is not a plain linear one
(iwsft.training.completion_head), are scored whole (`prefix_scoring_supported`).
"""

from __future__ import annotations

import torch

from iwsft.encoding.sequences import IGNORE_INDEX
from iwsft.evaluation import kv_cache
from iwsft.model.grouped_attention import grouped_query_sdpa
from iwsft.training import kernels
from iwsft.training.completion_head import chunk_rows, head_parts

WASTE = 0.125  # at most this share of a completion group's tokens is padding


def prefix_scoring_supported(model) -> bool:
    return (kv_cache.supports(model) and head_parts(model)[0] is not None
            and "logits_to_keep" in kv_cache.forward_keywords(model)[1])


def split_rows(encoded: list[dict]) -> list[tuple[tuple[int, ...], list[int]]]:
    """(prompt ids, completion ids) of each tokenized row (encode_pair's input_ids / labels)."""
    pairs = []
    for row in encoded:
        ids, labels = row["input_ids"], row["labels"]
        start = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
        if start == 0:
            raise ValueError("a row without prompt tokens cannot be scored: its first token has no context")
        pairs.append((tuple(ids[:start]), list(ids[start:])))
    return pairs


def plan(pairs, batch_rows: int) -> tuple[int, list[list[int]]]:
    """(shared prefix length, batches of row indices): rows grouped by prompt, prompts in order of
    length, at most batch_rows rows a batch (a prompt's rows stay together, so one prompt with more
    rows than that is a batch of its own). Cut from the whole list, so every process cuts the same."""
    prompts: dict[tuple[int, ...], list[int]] = {}
    for index, (prompt, _) in enumerate(pairs):
        prompts.setdefault(prompt, []).append(index)
    shared = kv_cache.shared_prefix_length([list(p) for p in prompts])
    order = sorted(prompts, key=lambda p: (len(p), max(len(pairs[i][1]) for i in prompts[p])))
    batches: list[list[int]] = []
    for prompt in order:
        rows = prompts[prompt]
        if batches and len(batches[-1]) + len(rows) <= batch_rows:
            batches[-1].extend(rows)
        else:
            batches.append(list(rows))
    return shared, batches


@torch.inference_mode()
def prefix_prefill(model, pairs, shared: int):
    """The shared prefix's keys and values, forwarded once at batch 1 (None without a prefix)."""
    if not shared:
        return None
    cache_keyword, extra = kv_cache.forward_keywords(model)
    cache = kv_cache.new_cache(model, shared)
    model(input_ids=torch.tensor([list(pairs[0][0][:shared])], device=model.device), use_cache=True,
          **{cache_keyword: cache}, **extra)
    kv_cache.check_filled(cache, shared)
    return kv_cache.layer_states(cache)


def length_groups(lengths: list[int], waste: float = WASTE) -> list[list[int]]:
    """Indices of the non-zero `lengths`, shortest first, cut into groups padded to their longest with at
    most `waste` of the group's padded tokens being padding (a completion group is one forward)."""
    groups: list[list[int]] = []
    total = 0
    for index in sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: lengths[i]):
        n = lengths[index]
        if groups and (len(groups[-1]) + 1) * n - (total + n) <= waste * (len(groups[-1]) + 1) * n:
            groups[-1].append(index)
            total += n
        else:
            groups.append([index])
            total = n
    return groups


@torch.inference_mode()
def score_batch(model, pairs, rows: list[int], shared: int, prefix, chunk_size: int = 1024) -> list[list[float]]:
    """log pi(completion token | everything before it) of each row's completion tokens, in `rows` order."""
    device = model.device
    cache_keyword, _ = kv_cache.forward_keywords(model)
    decoder, head = head_parts(model)[0]
    prompts = list(dict.fromkeys(pairs[i][0] for i in rows))  # in order of first appearance
    of_prompt = {prompt: position for position, prompt in enumerate(prompts)}
    rests = [prompt[shared:] for prompt in prompts]
    longest_rest = max(len(rest) for rest in rests)
    prompt_end = shared + longest_rest
    cache = kv_cache.new_cache(model, prompt_end)
    for layer, (keys, values) in zip(cache.layers, prefix or []):
        layer.fill(keys, values, len(prompts))
    pad = 0  # masked out of attention: any id does
    input_ids = torch.full((len(prompts), longest_rest), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), prompt_end), dtype=torch.long)
    mask[:, :shared] = 1
    for row, rest in enumerate(rests):
        input_ids[row, longest_rest - len(rest):] = torch.tensor(rest)
        mask[row, prompt_end - len(rest):] = 1
    positions = (mask.cumsum(-1) - 1).clamp_(min=0)  # pad positions: masked, any value does
    mask, positions = mask.to(device), positions.to(device)
    nothing = torch.empty(0, dtype=torch.long, device=device)  # the model's own head computes nothing
    completions = [pairs[i][1] for i in rows]
    owner = torch.tensor([of_prompt[pairs[i][0]] for i in rows], device=device)
    states: list[torch.Tensor | None] = [None] * len(rows)  # per row: the states that predict its tokens
    captured: list[torch.Tensor] = []
    hook = decoder.register_forward_hook(lambda module, args, output: captured.append(output[0]))
    try:
        model(input_ids=input_ids.to(device), attention_mask=mask, position_ids=positions[:, shared:],
              use_cache=True, logits_to_keep=nothing, **{cache_keyword: cache})
        kv_cache.check_filled(cache, prompt_end)
        last_prompt_state = captured[-1][:, -1]  # [prompts, H]: predicts each completion's first token
        prompt_states = kv_cache.layer_states(cache)
        # the completions' own tokens (all but the last, which is only a label), in groups of similar
        # length: each group's rows start from copies of their prompt's cache rows
        for group in length_groups([len(c) - 1 for c in completions]):
            longest = len(completions[group[-1]]) - 1
            mine = owner[torch.tensor(group, device=device)]
            group_cache = kv_cache.new_cache(model, prompt_end + longest)
            for layer, (keys, values) in zip(group_cache.layers, prompt_states):
                layer.fill(keys.index_select(0, mine), values.index_select(0, mine), len(group))
            inputs = torch.full((len(group), longest), pad, dtype=torch.long)
            own_mask = torch.zeros((len(group), longest), dtype=torch.long)
            for position, row in enumerate(group):
                tokens = completions[row][:-1]
                inputs[position, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                own_mask[position, : len(tokens)] = 1
            start = positions[:, -1].index_select(0, mine) + 1
            group_mask = torch.cat([mask.index_select(0, mine), own_mask.to(device)], 1)
            model(input_ids=inputs.to(device), attention_mask=group_mask, use_cache=True, logits_to_keep=nothing,
                  position_ids=start[:, None] + torch.arange(longest, device=device), **{cache_keyword: group_cache})
            for position, row in enumerate(group):
                states[row] = captured[-1][position, : len(completions[row]) - 1]
    finally:
        hook.remove()
    picked, targets = [], []
    for row, completion in enumerate(completions):
        if completion:
            picked.append(last_prompt_state[owner[row]][None])
            if states[row] is not None:
                picked.append(states[row])
            targets.extend(completion)
    if not targets:
        return [[] for _ in rows]
    values = kernels.linear_token_logprobs(
        torch.cat(picked), head.weight, torch.tensor(targets, device=device), bias=head.bias,
        chunk_size=chunk_rows(head.weight.shape[0], chunk_size), compute_dtype=head.weight.dtype).float().cpu()
    return [chunk.tolist() for chunk in torch.split(values, [len(c) for c in completions])]


def score_trajectories(model, encoded, batch_rows: int, show_progress: bool = False) -> list[list[float]]:
    """Every row's completion-token log-probs, in row order, on every process: with launch.num_processes
    > 1 each scores whole batches of the one-process plan (iwsft.evaluation.sharding), so the numbers
    are the same bits however many processes share the work."""
    from tqdm.auto import tqdm

    from iwsft.evaluation.sharding import map_shards

    pairs = split_rows(encoded)
    shared, batches = plan(pairs, batch_rows)
    was_training = model.training
    model.eval()

    def work(_, mine: list[list[int]]) -> list[list[list[float]]]:
        with grouped_query_sdpa(model):  # the same numbers without copied key/value heads
            prefix = prefix_prefill(model, pairs, shared) if mine else None
            return [score_batch(model, pairs, rows, shared, prefix)
                    for rows in tqdm(mine, desc="score", disable=not show_progress, mininterval=5)]

    try:
        scored = map_shards(batches, work, everywhere=True)
    finally:
        model.train(was_training)
    per_row: list[list[float]] = [[] for _ in pairs]
    for rows, values in zip(batches, scored):
        for index, row_values in zip(rows, values, strict=True):
            per_row[index] = row_values
    return per_row
