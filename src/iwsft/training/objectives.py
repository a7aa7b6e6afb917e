"""The iw-SFT objective family as pure functions: no model, no I/O.

Paper: Qin & Springenberg (2025), "Supervised Fine Tuning on Curated Data is Reinforcement
Learning (and can be improved)", arXiv 2507.12856.

- SFT on curated data maximises a lower bound of the RL objective (Eq. 5).
- iw-SFT weights each kept sequence by w = q(tau) / pi_ref(tau) (Eq. 8), a constant with respect to
  theta. The authors' code (the default here) uses q = the current policy, detached, and
  w = clamp(exp(temp * mean_t[log pi_theta(y_t) - log pi_ref(y_t)]), 0, w_max).
- The per-token ("per-step iw") variant clips each token's ratio to [0.2, 1.8].
- DFT (`dft_loss`, another paper, the baseline the field compares SFT variants with) weights each
  token's NLL by the policy's own detached probability of it: no q, no pi_ref.

Shapes: `logp`, `ref_logp`, `mask` are [B, T] aligned with the *shifted* labels (position t holds
log pi(y_{t+1} | y_{<=t})); `mask` is 1 on completion tokens and 0 on prompt and padding.

The log-probs themselves come from iwsft.training.kernels (chunked fp32 log-softmax, custom autograd).

Two fixes over the released code (PAPER.md section 2.3): the weight broadcasts over the batch axis
(its `nll * iw` broadcast the wrong way for batch > 1), and a sequence with no completion tokens
gets weight 0 instead of NaN.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Reduction = Literal["token", "sequence"]


def _completion_lengths(mask: torch.Tensor) -> torch.Tensor:
    return mask.sum(dim=-1)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


@torch.no_grad()
def mean_log_ratio(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over completion tokens of log q - log pi_ref, per sequence [B]; 0 for empty ones."""
    rho = (_at_least_fp32(logp.detach()) - _at_least_fp32(ref_logp)) * mask
    return rho.sum(-1) / _completion_lengths(mask).clamp(min=1)


@torch.no_grad()
def sequence_weights(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    temp: float = 1.0,
    w_max: float = 16.0,
) -> torch.Tensor:
    """w_b = clamp(exp(temp * mean_t rho_bt), 0, w_max), no gradient; empty completions get 0."""
    w = torch.exp(temp * mean_log_ratio(logp, ref_logp, mask)).clamp(0.0, w_max)
    return torch.where(_completion_lengths(mask) > 0, w, torch.zeros_like(w))


@torch.no_grad()
def token_weights(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    clip: tuple[float, float] = (0.2, 1.8),
) -> torch.Tensor:
    """Per-token variant: w_bt = clamp(exp(rho_bt), *clip) on completion tokens, 0 elsewhere."""
    rho = _at_least_fp32(logp.detach()) - _at_least_fp32(ref_logp)
    return torch.exp(rho).clamp(*clip) * mask


@torch.no_grad()
def self_normalized(weights: torch.Tensor) -> torch.Tensor:
    """Divide sequence weights by their batch sum (the continuous-control code's normalisation)."""
    return weights / weights.sum().clamp(min=torch.finfo(weights.dtype).tiny)


@torch.no_grad()
def weight_mass(weights: torch.Tensor, mask: torch.Tensor, reduction: Reduction = "token") -> torch.Tensor:
    """The weights summed over the units `weighted_nll` averages over: sum_bt w_bt M_bt (reduction token:
    every completion token, a sequence weight counted once per token) or sum_b mean_t w_bt (reduction
    sequence: every sequence, its tokens' mean weight). With w = 1 it is N, the count weighted_nll divides
    by, so mass / count is the mean weight per unit. A scalar in fp32 (or wider)."""
    w = _at_least_fp32(weights.detach())
    if w.dim() == 1:
        w = w[:, None]
    per_token = w * mask
    if reduction == "token":
        return per_token.sum()
    if reduction == "sequence":
        return (per_token.sum(-1) / _completion_lengths(mask).clamp(min=1)).sum()
    raise ValueError(f"reduction must be 'token' or 'sequence', got {reduction!r}")


@torch.no_grad()
def self_normalized_mean(
    weights: torch.Tensor,
    mask: torch.Tensor,
    reduction: Reduction = "token",
    mass: float | torch.Tensor | None = None,
    count: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Self-normalised weights with mean 1 over the loss's units: w_hat = w * count / mass.

    The language-model form of the control code's `self_normalized` (w / sum w): there the loss is a sum
    over sequences, here weighted_nll divides by the count N, so mean 1 (not sum 1) makes uniform weights
    give exactly SFT, whatever their common value; unnormalised weights that grow together act as a
    learning-rate multiplier instead. The loss becomes sum w M (-logp) / sum w M, a weighted mean.

    mass, count: `weight_mass` of the weights and of ones over the whole optimizer step (every micro-batch
    of the accumulation window, every rank), so that the split of the step does not change the result;
    by default this batch's own. No gradient. ValueError when every weight is 0 but there are units."""
    if mass is None:
        mass = weight_mass(weights, mask, reduction)
    if count is None:
        count = weight_mass(torch.ones_like(weights), mask, reduction)
    mass, count = float(mass), float(count)
    if count <= 0:  # nothing carries loss: the weights do not matter
        return weights.detach().clone()
    if not mass > 0:
        raise ValueError(f"self-normalised weights: the weights sum to {mass} over {count:g} units; every "
                         "weight of the step is 0 (or NaN), so there is no mean to divide by")
    return weights.detach() * (count / mass)


def weighted_nll(
    logp: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    num_items: int | float | torch.Tensor | None = None,
    reduction: Reduction = "token",
) -> torch.Tensor:
    """-sum w * M * logp / N. `weights` is [B] (per sequence) or [B, T] (per token).

    reduction="token": N = num_items (HF's `num_items_in_batch`: completion tokens over the whole
    gradient-accumulation window) or, if None, the tokens of this batch.
    reduction="sequence": each sequence's weighted NLL is averaged over its own tokens, then summed
    and divided by N = num_items (sequences in the window) or B. With one sequence per device this
    is the authors' setup.
    """
    w = weights.detach()
    if w.dim() == 1:
        w = w[:, None]  # broadcast over time, never over the batch (the released code's bug)
    per_token = -(w * mask * logp)
    if reduction == "token":
        denominator = mask.sum() if num_items is None else num_items
        return per_token.sum() / denominator
    if reduction == "sequence":
        per_sequence = per_token.sum(-1) / _completion_lengths(mask).clamp(min=1)
        denominator = per_sequence.shape[0] if num_items is None else num_items
        return per_sequence.sum() / denominator
    raise ValueError(f"reduction must be 'token' or 'sequence', got {reduction!r}")


def sft_loss(
    logp: torch.Tensor,
    mask: torch.Tensor,
    num_items: int | float | torch.Tensor | None = None,
    reduction: Reduction = "token",
) -> torch.Tensor:
    """Plain SFT: the weighted NLL with w = 1."""
    ones = torch.ones(logp.shape[0], dtype=logp.dtype, device=logp.device)
    return weighted_nll(logp, mask, ones, num_items, reduction)


def iw_sft_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    temp: float = 1.0,
    w_max: float = 16.0,
    per_token: bool = False,
    num_items: int | float | torch.Tensor | None = None,
    reduction: Reduction = "token",
    q_logp: torch.Tensor | None = None,
    clip: tuple[float, float] = (0.2, 1.8),
) -> torch.Tensor:
    """iw-SFT loss (Eq. 8). q defaults to the detached current policy (`logp`); pass `q_logp` for
    a time-lagged q (e.g. an EMA copy of the policy)."""
    q = logp if q_logp is None else q_logp
    if per_token:
        weights = token_weights(q, ref_logp, mask, clip)
    else:
        weights = sequence_weights(q, ref_logp, mask, temp, w_max)
    return weighted_nll(logp, mask, weights, num_items, reduction)


@torch.no_grad()
def dft_token_weights(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """DFT's per-token weight w_bt = sg(p_theta(y_t)) = exp(logp_bt) on completion tokens, 0 elsewhere."""
    return torch.exp(_at_least_fp32(logp.detach())) * mask


def dft_loss(
    logp: torch.Tensor,
    mask: torch.Tensor,
    num_items: int | float | torch.Tensor | None = None,
    reduction: Reduction = "token",
) -> torch.Tensor:
    """DFT, "dynamic fine-tuning": Wu et al. (2025), "On the Generalization of SFT: A Reinforcement
    Learning Perspective with Reward Rectification", arXiv 2508.05629, its token-level objective:

        L = sum_{b,t} sg(p_theta(y_t)) * M_bt * (-log p_theta(y_t)) / N

    The weight is the policy's own probability of the token, detached (no gradient flows through
    it), so the gradient is -sg(p) * grad log p. N and `reduction` as in `weighted_nll`: by default the
    completion tokens of the whole accumulation window on all ranks (`num_items`), as for SFT and iw-SFT.
    """
    return weighted_nll(logp, mask, dft_token_weights(logp, mask), num_items, reduction)


def _counted_weights(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The weights diagnostics count: one per non-empty completion (sequence weights [B]) or one per
    completion token (per-token weights [B, T])."""
    if weights.dim() == 1:
        return weights[_completion_lengths(mask) > 0].float()
    return weights[mask.bool()].float()


@torch.no_grad()
def weight_moments(weights: torch.Tensor, mask: torch.Tensor) -> tuple[int, float, float]:
    """(n, sum w, sum w^2) of the counted weights: what `moment_diagnostics` needs, summable over the
    micro-batches of a step."""
    w = _counted_weights(weights, mask).double()  # fp64: the std is a difference of two sums
    return int(w.numel()), float(w.sum()), float((w * w).sum())


def moment_diagnostics(n: int, total: float, squares: float) -> dict:
    """The weights' mean, spread (population std) and effective sample size as a fraction of n,
    ESS = (sum w)^2 / (n sum w^2) (1: uniform weights; 1/n: one weight carries all), from their moments.
    The one place these formulas live (per micro-batch here, per optimizer step in the trainer's log)."""
    n = max(n, 1)
    mean = total / n
    return {
        "weight_mean": mean,
        "weight_std": math.sqrt(max(squares / n - mean * mean, 0.0)),
        "ess": (total * total) / (n * squares) if squares > 0 else 0.0,
    }


@torch.no_grad()
def token_weight_diagnostics(weights: torch.Tensor, mask: torch.Tensor) -> dict:
    """Per-token weights (DFT's token probabilities) over the completion tokens: mean, spread (population
    std) as `moment_diagnostics` gives them (no ESS: these are probabilities, not importance weights), max,
    min, and the number of empty completions."""
    w = _counted_weights(weights, mask)
    moments = moment_diagnostics(*weight_moments(weights, mask))
    return {
        "weight_mean": moments["weight_mean"],
        "weight_std": moments["weight_std"],
        "weight_max": float(w.max()) if w.numel() else 0.0,
        "weight_min": float(w.min()) if w.numel() else 0.0,
        "empty_completions": int((_completion_lengths(mask) == 0).sum()),
    }


@torch.no_grad()
def weight_diagnostics(weights: torch.Tensor, mask: torch.Tensor, log_ratio: torch.Tensor, w_max: float) -> dict:
    """Numbers worth watching every logging step. Empty completions are counted and left out."""
    nonempty = _completion_lengths(mask) > 0
    w = _counted_weights(weights, mask)
    return {
        **moment_diagnostics(*weight_moments(weights, mask)),
        "weight_max": float(w.max()) if w.numel() else 0.0,
        "weight_min": float(w.min()) if w.numel() else 0.0,
        "clipped_fraction": float((w >= w_max).float().mean()) if w.numel() else 0.0,
        "mean_log_ratio": float(log_ratio[nonempty].mean()) if nonempty.any() else 0.0,
        "empty_completions": int((~nonempty).sum()),
    }
