"""Drawing the next token exactly from softmax(logits / T), with one uniform per row and step.

Inverse CDF: the unnormalised weights exp(l / T - max) are summed in fp64 along the vocabulary, and
the token is the first whose cumulative sum exceeds u * total, u ~ U[0, 1). That is an exact draw from
the softmax (up to fp64 rounding of the sums), like `torch.multinomial`, but without one random
exponential per vocabulary entry (multinomial: ~68 ms a step for 64 x 49,152 logits on one core, this
~8 ms; `inverse_cdf` sums in two levels). A token of weight 0 (its logit -inf, or underflowed) is never
drawn: its cumulative sum equals the previous one, which `searchsorted(right=True)` skips.

The uniforms are drawn up front, per prompt, from a generator seeded by (seed, prompt index) only:
a prompt's samples depend on neither the batch it lands in nor the process that draws it, so
sharding the prompts over processes gives the very same samples.
"""

from __future__ import annotations

import numpy as np
import torch

BLOCK = 256  # entries per block of the two-level inverse CDF (inverse_cdf)


def prompt_generator(seed: int, prompt_index: int) -> torch.Generator:
    """A CPU generator for one prompt: SeedSequence mixes (seed, index), so neighbouring seeds and
    indices do not give overlapping streams (seed * C + index would collide)."""
    state = np.random.SeedSequence([int(seed), int(prompt_index)]).generate_state(1, np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(state) & ((1 << 63) - 1))


def prompt_uniforms(seed: int, prompt_index: int, num_samples: int, max_new_tokens: int) -> torch.Tensor:
    """[num_samples, max_new_tokens] fp64 uniforms in [0, 1): sample j's draw at step t is [j, t]."""
    return torch.rand(num_samples, max_new_tokens, dtype=torch.float64, generator=prompt_generator(seed, prompt_index))


def draw_tokens(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float, greedy: torch.Tensor | None = None
                ) -> torch.Tensor:
    """One token per row of `logits` [rows, vocab]: row r is an exact draw from softmax(logits[r] / T)
    using `uniforms[r]` (fp64, [0, 1)), or the argmax where `greedy[r]` (bool [rows]) is set.

    Temperature as transformers applies it (scores / T in fp32); the argmax as `generate` takes it
    (torch.argmax of the fp32 logits: the first of equal maxima).
    """
    logits = logits.float()
    picked = torch.argmax(logits, dim=-1) if greedy is not None and bool(greedy.any()) else None
    if greedy is not None and bool(greedy.all()):
        return picked
    scaled = logits / temperature if temperature != 1.0 else logits  # x / 1.0 is x: one pass fewer
    drawn = inverse_cdf(torch.exp(scaled - scaled.amax(dim=-1, keepdim=True)), uniforms)
    if picked is not None:
        drawn = torch.where(greedy.to(drawn.device), picked, drawn)
    return drawn


def inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """The first index whose cumulative weight exceeds u * total, per row of `weights` [rows, n] (>= 0).

    In two levels: the cumulative sums of blocks of `block` entries find the block, then the cumulative
    sum inside that one block finds the entry. A full fp64 cumsum over 49,152 entries costs ~28 ms for 64
    rows on one core; this a few. The block sums are fp32 (relative error ~1e-7, that of the fp32 weights
    themselves, as in transformers' fp32 softmax before multinomial); the running sums are fp64. The two
    levels sum in different orders, so they can disagree in the last bits: a target that falls into that
    gap (probability ~1e-7 at most) takes the block's last entry of weight > 0, never one of weight 0.
    """
    rows, size = weights.shape
    blocks = -(-size // block)
    if blocks * block != size:
        weights = torch.nn.functional.pad(weights, (0, blocks * block - size))
    padded = weights.view(rows, blocks, block)
    # each block's sum in the weights' fp32 (an fp64 copy of all of them would cost more than the rest), the
    # running sum over blocks and the sums inside the chosen block in fp64
    block_sums = torch.cumsum(padded.sum(dim=-1), dim=-1, dtype=torch.float64)
    total = block_sums[:, -1]
    # u * total can round up to total itself; just below it, the last entry of weight > 0 is drawn
    below = torch.nextafter(total, torch.zeros_like(total))
    target = torch.minimum(uniforms.to(total.device, torch.float64) * total, below).unsqueeze(-1)
    chosen = torch.searchsorted(block_sums, target, right=True).clamp_(max=blocks - 1)  # [rows, 1]
    before = torch.where(chosen > 0, block_sums.gather(1, (chosen - 1).clamp(min=0)), torch.zeros_like(target))
    inside = padded.gather(1, chosen.unsqueeze(-1).expand(rows, 1, block)).squeeze(1)  # [rows, block]
    within = torch.searchsorted(before + torch.cumsum(inside, dim=-1, dtype=torch.float64), target, right=True)
    last_positive = block - 1 - torch.argmax((inside.flip(-1) > 0).to(torch.uint8), dim=-1, keepdim=True)
    return (chosen * block + torch.minimum(within, last_positive)).squeeze(-1)
