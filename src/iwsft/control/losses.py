"""BC, SFT(Q) and iw-SFT(Q) losses for Gaussian policies, on top of iwsft.training.objectives (one
implementation of the weights for both domains; PAPER.md §5.3).

A batch is [B episodes, T sampled timesteps]: logp[b, t] = log pi(a_t | s_t) of episode b. Each
episode contributes its per-step mean log-likelihood, as in the authors' per-trajectory loss.

- BC / SFT(Q):  L = -mean_b mean_t logp[b, t]
- iw-SFT(Q):    w_b = clamp(exp(temp * mean_t(log q - log pi_ref)), 0, w_max), w_hat = w / sum_b w,
                L = -sum_b w_hat_b mean_t logp[b, t]
"""

from __future__ import annotations

import torch

from iwsft.training import objectives


def bc_loss(logp: torch.Tensor) -> torch.Tensor:
    mask = torch.ones_like(logp)
    return objectives.sft_loss(logp, mask, reduction="sequence")


def trajectory_weights(q_logp: torch.Tensor, ref_logp: torch.Tensor, temp: float, w_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw w [B], self-normalised w_hat [B], summing to 1)."""
    mask = torch.ones_like(q_logp)
    raw = objectives.sequence_weights(q_logp, ref_logp, mask, temp=temp, w_max=w_max)
    return raw, objectives.self_normalized(raw)


def iw_sft_loss(logp: torch.Tensor, normalised_weights: torch.Tensor) -> torch.Tensor:
    mask = torch.ones_like(logp)
    return objectives.weighted_nll(logp, mask, normalised_weights, num_items=1, reduction="sequence")


def diagnostics(raw: torch.Tensor, q_logp: torch.Tensor, ref_logp: torch.Tensor, w_max: float) -> dict:
    """objectives.weight_diagnostics plus the largest normalised weight and the normalised sum."""
    mask = torch.ones_like(q_logp)
    log_ratio = objectives.mean_log_ratio(q_logp, ref_logp, mask)
    found = objectives.weight_diagnostics(raw, mask, log_ratio, w_max)
    normalised = objectives.self_normalized(raw)
    found.update(normalised_max=float(normalised.max()), normalised_sum=float(normalised.sum()))
    return found
