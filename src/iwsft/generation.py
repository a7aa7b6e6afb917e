"""Sampling completions from a causal LM: exact samples from pi at temperature T, or greedy.

For the paper's bound to hold the samples must come from pi itself, so sampling uses the full
vocabulary (top_k=0, top_p=1), not transformers' default top-k of 50.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


@torch.inference_mode()
def generate_completions(
    model,
    tokenizer,
    prompts: list[str],
    num_samples: int = 1,
    temperature: float = 1.0,
    max_new_tokens: int = 8,
    seed: int = 0,
    batch_size: int = 256,
    greedy: bool = False,
    show_progress: bool = True,
) -> list[list[str]]:
    """`num_samples` completions per prompt (1 if greedy), in prompt order.

    Prompts are left-padded in batches; each batch is drawn with its own seeded generator state,
    so results do not depend on what ran before.
    """
    model.eval()
    device = next(model.parameters()).device
    repeats = 1 if greedy else num_samples
    flat_prompts = [prompt for prompt in prompts for _ in range(repeats)]
    order = sorted(range(len(flat_prompts)), key=lambda i: len(flat_prompts[i]))  # less padding
    texts: list[str | None] = [None] * len(flat_prompts)
    starts = range(0, len(order), batch_size)
    for batch_number, start in enumerate(tqdm(starts, desc="generate", disable=not show_progress, mininterval=5)):
        indices = order[start : start + batch_size]
        encoded = tokenizer([flat_prompts[i] for i in indices], return_tensors="pt", padding=True).to(device)
        torch.manual_seed(seed * 1_000_003 + batch_number)
        sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        output = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **sampling,
        )
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        for row, index in enumerate(indices):
            texts[index] = tokenizer.decode(new_tokens[row], skip_special_tokens=True)
    return [texts[i * repeats : (i + 1) * repeats] for i in range(len(prompts))]  # type: ignore[misc]
