"""Self-normalised importance weights (train.weight_normalization: self) and the weights' moments,
against values computed by hand."""

import math

import pytest
import torch

from iwsft.training import objectives as obj

EQUAL = torch.ones(2, 3, dtype=torch.float64)  # two completions of 3 tokens
UNEQUAL = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)  # 1 token, 3 tokens


def test_weights_1_and_3_become_half_and_one_and_a_half():
    w = torch.tensor([1.0, 3.0], dtype=torch.float64)
    assert obj.self_normalized_mean(w, EQUAL).tolist() == [0.5, 1.5]
    assert obj.self_normalized_mean(w, EQUAL, reduction="sequence").tolist() == [0.5, 1.5]


def test_token_reduction_counts_a_sequence_weight_once_per_token():
    """[1, 3] on 1 and 3 tokens: mass 1*1 + 3*3 = 10 over 4 tokens, mean 2.5 -> [0.4, 1.2]; the token-mean is 1.
    Per sequence (reduction sequence) the mean is (1 + 3) / 2 = 2 -> [0.5, 1.5]."""
    w = torch.tensor([1.0, 3.0], dtype=torch.float64)
    assert float(obj.weight_mass(w, UNEQUAL)) == 10.0
    assert obj.self_normalized_mean(w, UNEQUAL).tolist() == pytest.approx([0.4, 1.2], abs=1e-15)
    assert obj.self_normalized_mean(w, UNEQUAL, reduction="sequence").tolist() == [0.5, 1.5]


def test_per_token_weights_mass_and_mean():
    w = torch.tensor([[0.5, 9.0, 9.0], [1.5, 1.0, 1.0]], dtype=torch.float64)  # 9.0s are masked out
    assert float(obj.weight_mass(w, UNEQUAL)) == 4.0  # 0.5 + 1.5 + 1 + 1 over 4 tokens: mean 1 already
    assert float(obj.weight_mass(w, UNEQUAL, reduction="sequence")) == pytest.approx(0.5 + 3.5 / 3)
    assert obj.self_normalized_mean(w, UNEQUAL).tolist() == w.tolist()


def test_the_step_mass_makes_the_split_irrelevant():
    """Normalising each half by the whole step's mass and count gives the whole batch's weights."""
    w = torch.tensor([1.0, 3.0, 0.5, 2.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.float64)
    whole = obj.self_normalized_mean(w, mask)
    mass, count = obj.weight_mass(w, mask), obj.weight_mass(torch.ones_like(w), mask)
    assert float(count) == 8 and float(mass) == pytest.approx(2 + 3 + 1.5 + 4)  # 10.5 over 8 tokens
    halves = [obj.self_normalized_mean(w[s], mask[s], mass=mass, count=count) for s in (slice(0, 2), slice(2, 4))]
    assert torch.cat(halves).tolist() == pytest.approx(whole.tolist(), abs=1e-15)
    assert whole.tolist() == pytest.approx([x * 8 / 10.5 for x in w.tolist()], abs=1e-15)
    local = obj.self_normalized_mean(w[:2], mask[:2])  # the half's own mean: another answer
    assert local.tolist() != pytest.approx(halves[0].tolist())


def test_the_loss_is_a_weighted_mean_and_uniform_weights_give_sft():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]], dtype=torch.float64)
    w = torch.tensor([1.0, 3.0], dtype=torch.float64)
    loss = obj.weighted_nll(logp, UNEQUAL, obj.self_normalized_mean(w, UNEQUAL))
    assert float(loss) == pytest.approx((1 * 1.0 + 3 * 1.5) / (1 * 1 + 3 * 3))  # sum w M (-logp) / sum w M
    for level in (0.01, 1.0, 16.0):  # weights that grow together are no longer a learning-rate multiplier
        uniform = torch.full((2,), level, dtype=torch.float64)
        normalised = obj.weighted_nll(logp, UNEQUAL, obj.self_normalized_mean(uniform, UNEQUAL))
        assert float(normalised) == pytest.approx(float(obj.sft_loss(logp, UNEQUAL)), abs=1e-12)
        assert float(obj.weighted_nll(logp, UNEQUAL, uniform)) == pytest.approx(level * float(obj.sft_loss(logp, UNEQUAL)))


def test_normalised_weights_carry_no_gradient():
    w = torch.tensor([1.0, 3.0], dtype=torch.float64, requires_grad=True)
    normalised = obj.self_normalized_mean(w, EQUAL)
    assert not normalised.requires_grad
    logp = torch.full((2, 3), -1.0, dtype=torch.float64, requires_grad=True)
    obj.weighted_nll(logp, EQUAL, normalised).backward()
    assert logp.grad.flatten().tolist() == pytest.approx([-0.5 / 6] * 3 + [-1.5 / 6] * 3)  # dL/dlogp = -w_hat M / N


def test_all_zero_weights_are_refused_and_no_units_leave_them_alone():
    with pytest.raises(ValueError, match="every weight of the step is 0"):
        obj.self_normalized_mean(torch.zeros(2, dtype=torch.float64), EQUAL)
    w = torch.tensor([2.0, 3.0], dtype=torch.float64)
    assert obj.self_normalized_mean(w, torch.zeros_like(EQUAL)).tolist() == [2.0, 3.0]


def test_moment_diagnostics_hand_values():
    """[1, 3]: mean 2, population std 1, ESS (1 + 3)^2 / (2 (1 + 9)) = 0.8."""
    n, total, squares = obj.weight_moments(torch.tensor([1.0, 3.0, 7.0]), torch.tensor([[1.0], [1.0], [0.0]]))
    assert (n, total, squares) == (2, 4.0, 10.0)  # the empty completion (weight 7) is left out
    found = obj.moment_diagnostics(n, total, squares)
    assert found == pytest.approx({"weight_mean": 2.0, "weight_std": 1.0, "ess": 0.8})
    assert obj.moment_diagnostics(0, 0.0, 0.0) == {"weight_mean": 0.0, "weight_std": 0.0, "ess": 0.0}
    stats = obj.weight_diagnostics(torch.tensor([1.0, 3.0]), torch.ones(2, 2), torch.zeros(2), 16.0)
    assert stats["weight_std"] == 1.0 and stats["ess"] == pytest.approx(0.8) and not math.isnan(stats["weight_mean"])
