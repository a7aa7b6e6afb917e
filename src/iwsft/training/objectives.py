"""The iw-SFT objective family as pure functions: no model, no I/O.

Paper: Qin & Springenberg (2025), "Supervised Fine Tuning on Curated Data is Reinforcement
Learning (and can be improved)", arXiv 2507.12856.

- SFT on curated data maximises a lower bound of the RL objective (Eq. 5).
- iw-SFT weights each kept sequence by w = q(tau) / pi_ref(tau) (Eq. 8), a constant with respect to
  theta. The authors' code (the default here) uses q = the current policy, detached, and
  w = clamp(exp(temp * mean_t[log pi_theta(y_t) - log pi_ref(y_t)]), 0, w_max).
- The per-token ("per-step iw") variant clips each token's ratio to [0.2, 1.8].

Shapes: `logp`, `ref_logp`, `mask` are [B, T] aligned with the *shifted* labels (position t holds
log pi(y_{t+1} | y_{<=t})); `mask` is 1 on completion tokens and 0 on prompt and padding.

Two fixes over the released code (PAPER.md section 2.3): the weight broadcasts over the batch axis
(its `nll * iw` broadcast the wrong way for batch > 1), and a sequence with no completion tokens
gets weight 0 instead of NaN.
"""

from __future__ import annotations

from typing import Literal

import torch

Reduction = Literal["token", "sequence"]


class _ChunkedTokenLogprob(torch.autograd.Function):
    """log softmax(logits)[target] computed in row chunks, in fp32.

    Autograd would keep every chunk's fp32 copy of the logits alive for the backward pass, which
    is the full fp32 [N, V] tensor we want to avoid. So the backward recomputes softmax chunk by
    chunk from the logits the caller already holds (in their own dtype).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, chunk_size: int) -> torch.Tensor:
        out = torch.empty(targets.shape, dtype=torch.float32, device=logits.device)
        for start in range(0, logits.shape[0], chunk_size):
            rows = logits[start : start + chunk_size].float()
            picked = rows.gather(-1, targets[start : start + chunk_size, None])[:, 0]
            out[start : start + chunk_size] = picked - torch.logsumexp(rows, dim=-1)
        ctx.save_for_backward(logits, targets)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, targets = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk_size):
            stop = start + ctx.chunk_size
            g = grad_out[start:stop].float()
            grad = torch.softmax(logits[start:stop].float(), dim=-1).mul_(-g[:, None])
            grad.scatter_add_(-1, targets[start:stop, None], g[:, None])
            grad_logits[start:stop] = grad.to(logits.dtype)
        return grad_logits, None, None


def token_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the labels under `logits`, with the causal shift.

    logits [B, T, V] (any float dtype), labels [B, T] with -100 on positions that carry no loss.
    Returns (logp [B, T-1] fp32 with grad, mask [B, T-1] fp32). Masked positions hold 0.
    """
    batch, length, vocab = logits.shape
    mask = labels[:, 1:] != -100
    # Score every position of the contiguous logits (the last one against a dummy target) rather
    # than slicing logits[:, :-1], whose reshape would copy the whole [B, T, V] tensor.
    shifted = torch.cat([labels[:, 1:], labels.new_full((batch, 1), -100)], dim=1)
    flat = _ChunkedTokenLogprob.apply(logits.reshape(-1, vocab), shifted.clamp(min=0).reshape(-1), chunk_size)
    logp = flat.view(batch, length)[:, :-1] * mask
    return logp, mask.float()


class _ChunkedLinearTokenLogprob(torch.autograd.Function):
    """log softmax(hidden @ weight.T + bias)[target] in row chunks: an LM head fused with the fp32
    log-softmax, so that at most one chunk's logits exist at a time, in the forward and the backward.

    The backward recomputes each chunk's logits (one extra matmul) instead of keeping them: memory
    scales with the chunk, not with rows x vocabulary. `compute_dtype` is the dtype the head's matmul
    runs in (the weights' own, or autocast's), exactly as the module would have run it; the
    log-softmax is always fp32.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size: int, compute_dtype: torch.dtype):
        out = torch.empty(targets.shape, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(compute_dtype)
            b = bias.to(compute_dtype) if bias is not None else None
            for start in range(0, hidden.shape[0], chunk_size):
                stop = start + chunk_size
                rows = torch.nn.functional.linear(hidden[start:stop].to(compute_dtype), w, b).float()
                lse[start:stop] = torch.logsumexp(rows, dim=-1)
                out[start:stop] = rows.gather(-1, targets[start:stop, None])[:, 0] - lse[start:stop]
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_size, ctx.compute_dtype = chunk_size, compute_dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        dtype = ctx.compute_dtype
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        accumulate = torch.promote_types(dtype, torch.float32)  # the chunks' shares are summed in >= fp32
        grad_weight = torch.zeros(weight.shape, dtype=accumulate, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=accumulate, device=bias.device) if need_bias else None
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            for start in range(0, hidden.shape[0], ctx.chunk_size):
                stop = start + ctx.chunk_size
                rows = hidden[start:stop].to(dtype)
                g = grad_out[start:stop].float()
                # d logp / d logits = onehot(target) - softmax; softmax = exp(logits - saved logsumexp)
                grad = torch.nn.functional.linear(rows, w, b).float()
                grad = grad.sub_(lse[start:stop, None]).exp_().mul_(-g[:, None])
                grad.scatter_add_(-1, targets[start:stop, None], g[:, None])
                grad = grad.to(dtype)
                if need_hidden:
                    grad_hidden[start:stop] = grad @ w
                if need_weight:
                    if grad_weight.dtype == dtype:
                        grad_weight.addmm_(grad.t(), rows)
                    else:
                        grad_weight += (grad.t() @ rows).to(accumulate)
                if need_bias:
                    grad_bias += grad.sum(0).to(accumulate)
        if need_weight:
            grad_weight = grad_weight.to(weight.dtype)
        if need_bias:
            grad_bias = grad_bias.to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None


def linear_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_size: int = 1024,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """log softmax(hidden @ weight.T + bias)[targets] per row, fp32, never holding more than
    `chunk_size` rows of logits (forward or backward): an LM head applied to selected rows only.

    hidden [N, H], weight [V, H], targets [N] (valid ids). Returns [N] fp32, differentiable with
    respect to hidden, weight and bias. compute_dtype: the matmul's dtype (default: weight's)."""
    return _ChunkedLinearTokenLogprob.apply(hidden, weight, bias, targets, chunk_size, compute_dtype or weight.dtype)


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
def weight_diagnostics(weights: torch.Tensor, mask: torch.Tensor, log_ratio: torch.Tensor, w_max: float) -> dict:
    """Numbers worth watching every logging step. Empty completions are counted and left out."""
    nonempty = _completion_lengths(mask) > 0
    w = weights[nonempty].float() if weights.dim() == 1 else weights[mask.bool()].float()
    n = max(int(w.numel()), 1)
    total, squares = float(w.sum()), float((w * w).sum())
    return {
        "weight_mean": total / n,
        "weight_max": float(w.max()) if w.numel() else 0.0,
        "weight_min": float(w.min()) if w.numel() else 0.0,
        "clipped_fraction": float((w >= w_max).float().mean()) if w.numel() else 0.0,
        "ess": (total * total) / (n * squares) if squares > 0 else 0.0,
        "mean_log_ratio": float(log_ratio[nonempty].mean()) if nonempty.any() else 0.0,
        "empty_completions": int((~nonempty).sum()),
    }
