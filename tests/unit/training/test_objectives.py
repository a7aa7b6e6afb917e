"""The loss family against the hand-computed values of PAPER.md section 8.1 (and DFT's, computed by hand below)."""

import importlib.util
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from iwsft.training import kernels
from iwsft.training import objectives as obj
from iwsft.data import quality as quality_sampling

# Sequence A: 3 completion tokens; B: 2 tokens + 1 pad (masked).
LOGP = torch.tensor([[-0.5, -1.0, -0.2], [-2.0, -0.1, 0.0]], dtype=torch.float64)
REF = torch.tensor([[-0.7, -1.2, -0.3], [-1.0, -0.1, 0.0]], dtype=torch.float64)
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)


def test_sequence_weights_match_hand_values():
    w = obj.sequence_weights(LOGP, REF, MASK, temp=1.0)
    assert w.tolist() == pytest.approx([1.1813604, 0.6065307], abs=1e-7)
    w2 = obj.sequence_weights(LOGP, REF, MASK, temp=2.0)
    assert w2.tolist() == pytest.approx([1.3956124, 0.3678794], abs=1e-7)


def test_sequence_level_loss_one_device():
    loss = obj.iw_sft_loss(LOGP, REF, MASK, temp=1.0)
    assert float(loss) == pytest.approx(0.6564054, abs=1e-7)
    assert float(obj.sft_loss(LOGP, MASK)) == pytest.approx(0.76, abs=1e-12)


def test_per_sequence_reduction_replicates_one_sequence_per_device():
    loss = obj.iw_sft_loss(LOGP, REF, MASK, temp=1.0, reduction="sequence")
    assert float(loss) == pytest.approx(0.6531474, abs=1e-7)


def test_per_token_branch():
    w = obj.token_weights(LOGP, REF, MASK)
    assert w[0].tolist() == pytest.approx([1.2214028, 1.2214028, 1.1051709], abs=1e-7)
    assert w[1, :2].tolist() == pytest.approx([0.3678794, 1.0], abs=1e-7)
    assert float(w[1, 2]) == 0.0
    loss = obj.iw_sft_loss(LOGP, REF, MASK, per_token=True)
    assert float(loss) == pytest.approx(0.5777794, abs=1e-7)


def test_gradient_is_minus_weight_times_mask_over_n():
    logp = LOGP.clone().requires_grad_(True)
    obj.iw_sft_loss(logp, REF, MASK).backward()
    assert logp.grad[0].tolist() == pytest.approx([-0.2362721] * 3, abs=1e-7)
    assert logp.grad[1].tolist() == pytest.approx([-0.1213061, -0.1213061, 0.0], abs=1e-7)


def test_weights_carry_no_gradient():
    logp = LOGP.clone().requires_grad_(True)
    w = obj.sequence_weights(logp, REF, MASK)
    assert not w.requires_grad
    assert not obj.token_weights(logp, REF, MASK).requires_grad


def test_clamp_at_w_max():
    logp = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    ref = torch.tensor([[-3.0, -3.0]], dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.float64)
    assert math.exp(3) > 16
    assert float(obj.sequence_weights(logp, ref, mask)[0]) == 16.0
    assert float(obj.sequence_weights(logp, ref, mask, w_max=4.0)[0]) == 4.0


def test_control_style_self_normalised_weights():
    w = obj.sequence_weights(LOGP, REF, MASK, temp=10.0, w_max=1000.0)
    assert w.tolist() == pytest.approx([5.2944901, 0.0067379], abs=1e-7)
    normalised = obj.self_normalized(w)
    assert normalised.tolist() == pytest.approx([0.9987290, 0.0012710], abs=1e-7)
    loss = obj.weighted_nll(LOGP, MASK, normalised, reduction="sequence")
    assert float(loss) == pytest.approx(0.2836405, abs=1e-7)


def test_equal_policies_give_unit_weights_and_the_sft_loss():
    w = obj.sequence_weights(LOGP, LOGP, MASK)
    assert w.tolist() == [1.0, 1.0]
    assert float(obj.iw_sft_loss(LOGP, LOGP, MASK)) == pytest.approx(float(obj.sft_loss(LOGP, MASK)), abs=1e-12)


def test_empty_completion_gets_zero_weight_and_no_nan():
    mask = MASK.clone()
    mask[1] = 0.0
    w = obj.sequence_weights(LOGP, REF, mask)
    assert w[1] == 0.0 and torch.isfinite(w).all()
    logp = LOGP.clone().requires_grad_(True)
    loss = obj.iw_sft_loss(logp, REF, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    stats = obj.weight_diagnostics(w, mask, obj.mean_log_ratio(LOGP, REF, mask), 16.0)
    assert stats["empty_completions"] == 1
    assert stats["weight_mean"] == pytest.approx(1.1813604, abs=1e-7)


def test_batch_larger_than_one_weights_apply_per_sequence():
    # T - 1 == B is the case where the released code silently weighted the time axis.
    logp = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.0, -2.0], [-2.0, -3.0]], dtype=torch.float64)
    mask = torch.ones(2, 2, dtype=torch.float64)
    w = obj.sequence_weights(logp, ref, mask)  # [1, e^-1]
    expected = (1.0 * 3.0 + math.exp(-1) * 7.0) / 4
    assert float(obj.iw_sft_loss(logp, ref, mask)) == pytest.approx(expected, abs=1e-12)
    wrong_axis = float(-(w[None, :] * logp).sum() / 4)  # what `nll * iw` with iw [B,1] computed
    assert abs(wrong_axis - expected) > 0.1


def test_num_items_is_the_window_denominator():
    loss = obj.iw_sft_loss(LOGP, REF, MASK, num_items=10)
    assert float(loss) == pytest.approx(0.6564054 / 2, abs=1e-7)


def test_diagnostics_ess_and_clip_fraction():
    w = torch.tensor([1.0, 1.0, 16.0, 2.0])
    mask = torch.ones(4, 3)
    stats = obj.weight_diagnostics(w, mask, torch.zeros(4), 16.0)
    assert stats["ess"] == pytest.approx(20.0**2 / (4 * 262.0))
    assert stats["clipped_fraction"] == 0.25
    assert stats["weight_max"] == 16.0 and stats["weight_min"] == 1.0


# DFT (arXiv 2508.05629): each completion token's NLL weighted by its own detached probability.
def test_dft_two_tokens_hand_value():
    logp = torch.tensor([[math.log(0.5), math.log(0.25)]], dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.float64)
    expected = (0.5 * math.log(2) + 0.25 * math.log(4)) / 2  # = 0.3465736
    assert float(obj.dft_loss(logp, mask)) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.3465736, abs=1e-7)
    assert obj.dft_token_weights(logp, mask)[0].tolist() == pytest.approx([0.5, 0.25], abs=1e-12)


def test_dft_batch_with_padding_and_num_items():
    # A: p = 0.5, 0.25, 1.0; B: p = 0.8 and one pad (its logp 0, i.e. p = 1, must not count)
    logp = torch.tensor([[math.log(0.5), math.log(0.25), 0.0], [math.log(0.8), 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    total = 0.5 * math.log(2) + 0.25 * math.log(4) + 1.0 * 0.0 + 0.8 * math.log(1.25)
    assert float(obj.dft_loss(logp, mask)) == pytest.approx(total / 4, abs=1e-12)  # N = 4 completion tokens
    assert float(obj.dft_loss(logp, mask, num_items=10)) == pytest.approx(total / 10, abs=1e-12)  # the window's N
    per_sequence = (0.5 * math.log(2) + 0.25 * math.log(4)) / 3 + 0.8 * math.log(1.25)
    assert float(obj.dft_loss(logp, mask, reduction="sequence")) == pytest.approx(per_sequence / 2, abs=1e-12)
    assert obj.dft_token_weights(logp, mask)[1].tolist() == pytest.approx([0.8, 0.0, 0.0], abs=1e-12)
    stats = obj.token_weight_diagnostics(obj.dft_token_weights(logp, mask), mask)
    p = np.array([0.5, 0.25, 1.0, 0.8])
    assert stats["weight_mean"] == pytest.approx(p.mean()) and stats["weight_std"] == pytest.approx(p.std())
    assert stats["weight_max"] == pytest.approx(1.0) and stats["weight_min"] == pytest.approx(0.25)
    assert stats["empty_completions"] == 0


def test_dft_gradient_is_detached_probability_times_minus_grad_logp():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 7, (2, 5))
    labels[0, :2] = -100  # prompt
    labels[1, 4:] = -100  # padding
    logp, mask = kernels.token_logprobs(logits, labels)
    assert not obj.dft_token_weights(logp, mask).requires_grad
    obj.dft_loss(logp, mask, num_items=6).backward()
    dft_grad = logits.grad.clone()
    logits.grad = None
    logp, mask = kernels.token_logprobs(logits, labels)
    p = logp.detach().exp()
    (-(p * mask * logp).sum() / 6).backward()  # p * (-grad log p) / N, p held constant
    assert torch.allclose(dft_grad, logits.grad, atol=1e-12)
    # with respect to logp itself: -p / N on completion tokens, 0 on masked ones
    leaf = logp.detach().clone().requires_grad_(True)
    obj.dft_loss(leaf, mask, num_items=6).backward()
    assert torch.allclose(leaf.grad, -p * mask / 6, atol=1e-12)


def test_dft_empty_completion_is_finite():
    logp = torch.tensor([[-0.5, -1.0], [0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    loss = obj.dft_loss(logp, mask, reduction="sequence")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert obj.token_weight_diagnostics(obj.dft_token_weights(logp, mask), mask)["empty_completions"] == 1


def test_dft_matches_trl_dft_loss():
    """TRL's SFTConfig(loss_type="dft") loss on the same batch (only with the optional `trl` extra)."""
    if importlib.util.find_spec("trl") is None:
        pytest.skip("the optional trl extra is not installed (pip install -e '.[trl]')")
    from trl.trainer.sft_trainer import dft_loss as trl_dft_loss

    torch.manual_seed(2)
    logits = torch.randn(3, 6, 11)
    labels = torch.randint(0, 11, (3, 6))
    labels[0, :3] = -100
    labels[2, 4:] = -100
    logp, mask = kernels.token_logprobs(logits, labels)
    for num_items in (None, 23):
        ours = obj.dft_loss(logp, mask, num_items=num_items)
        theirs = trl_dft_loss(SimpleNamespace(logits=logits), labels.clone(), num_items_in_batch=num_items)
        assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_token_logprobs_match_unchunked(dtype):
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11, dtype=dtype)
    labels = torch.randint(0, 11, (3, 7))
    labels[0, :3] = -100
    labels[2, 5:] = -100
    reference = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0]
    reference = reference * (labels[:, 1:] != -100)
    for chunk in (1, 4, 5, 1000):
        logp, mask = kernels.token_logprobs(logits, labels, chunk_size=chunk)
        assert logp.dtype == torch.float32
        assert torch.allclose(logp, reference, atol=1e-6)
        assert mask.tolist() == (labels[:, 1:] != -100).float().tolist()


def test_chunked_token_logprobs_gradient_matches_autograd():
    torch.manual_seed(1)
    logits = torch.randn(2, 6, 9, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 9, (2, 6))
    labels[1, :2] = -100
    weights = torch.randn(2, 5, dtype=torch.float64)
    logp, _ = kernels.token_logprobs(logits, labels, chunk_size=3)
    (logp * weights).sum().backward()
    chunked_grad = logits.grad.clone()
    logits.grad = None
    direct = torch.log_softmax(logits[:, :-1], -1).gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0]
    (direct * (labels[:, 1:] != -100) * weights).sum().backward()
    assert torch.allclose(chunked_grad, logits.grad, atol=1e-6)


def test_quality_multiplicity_counts_thresholds():
    scores = np.arange(100, dtype=float)  # percentiles 90/95/98 -> 89.1, 94.05, 97.02
    m = quality_sampling.quality_multiplicity(scores)
    assert m[:90].sum() == 0
    assert m[90] == 1 and m[95] == 2 and m[98] == 3 and m[99] == 3
    assert np.bincount(m).tolist() == [90, 5, 3, 2]
    assert quality_sampling.quality_thresholds(scores).tolist() == pytest.approx([89.1, 94.05, 97.02])
    with pytest.raises(ValueError, match="finite"):
        quality_sampling.quality_multiplicity([1.0, float("nan")])


def test_the_quality_stage_starts_without_torch():
    import subprocess
    import sys

    code = "import sys, iwsft.stages.quality; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
