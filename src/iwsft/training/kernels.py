"""Custom autograd kernels for per-token log-probs: log softmax(logits)[target] computed in row chunks in
fp32, so that no full fp32 [B, T, V] tensor ever exists, in the forward or the backward.

- `token_logprobs(logits, labels)`: from logits the model already computed (any float dtype), with the
  causal shift; the backward recomputes softmax chunk by chunk from those logits.
- `linear_token_logprobs(hidden, weight, targets)`: the LM head fused with the log-softmax, for selected
  rows only (iwsft.training.completion_head); at most one chunk's logits exist at a time.

Both return fp32 log-probs that the loss family (iwsft.training.objectives) consumes; they hold no
loss maths themselves. Tests: tests/unit/training/test_objectives.py (chunked = unchunked, gradients =
autograd's) and tests/unit/training/test_completion_head.py.
"""

from __future__ import annotations

import torch


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
