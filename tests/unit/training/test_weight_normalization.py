"""IwSftTrainer with train.weight_normalization: self on a tiny Llama: the step's mean weight, whatever the
micro-batch split; the hand formula; weights that grow together no longer scale the step; logs per step."""

import pytest
import torch

from iwsft.encoding.sequences import CompletionCollator
from iwsft.training import kernels
from iwsft.training.trainer import IwSftConfig
from support import flat_parameters, one_step, tiny_model, toy_dataset


def hand_weights(tokenizer, dataset):
    """Step 0's sequence weights, completion lengths and token log-probs, by hand (q = the policy)."""
    batch = CompletionCollator(tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        logits = tiny_model(0, tokenizer)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp, mask = kernels.token_logprobs(logits, batch["labels"])
    w = torch.exp(((logp - batch["ref_logprobs"]) * mask).sum(1) / mask.sum(1)).clamp(max=16)
    return w, mask, logp


@pytest.mark.parametrize("config", [dict(method="iwsft"), dict(method="iwsft", per_token=True),
                                   dict(method="iwsft", q_mode="ema")], ids=["sequence-weights", "per-token", "q-ema"])
def test_self_normalised_1x4_equals_4x1_and_is_not_the_unnormalised_step(tokenizer, dataset, tmp_path, config):
    start = flat_parameters(tiny_model(0, tokenizer))
    big, loss_big, _ = one_step(tokenizer, dataset, tmp_path / "a", 4, 1, weight_normalization="self", **config)
    small, loss_small, trainer = one_step(tokenizer, dataset, tmp_path / "b", 1, 4, weight_normalization="self", **config)
    raw, _, _ = one_step(tokenizer, dataset, tmp_path / "c", 4, 1, **config)
    assert (big - start).abs().max() > 1e-3
    assert torch.allclose(big, small, atol=1e-6)
    assert loss_big == pytest.approx(loss_small, rel=1e-5)
    assert not torch.allclose(big, raw, atol=1e-5)  # the normalisation did something
    assert trainer._step_weights == []  # every precomputed micro-batch was trained on


def test_first_step_loss_is_the_weighted_mean_and_logs_the_raw_weights(tokenizer, dataset, tmp_path):
    w, mask, logp = hand_weights(tokenizer, dataset)
    n = mask.sum(1)
    expected = float(-(w[:, None] * logp * mask).sum() / (w * n).sum())  # sum w M (-logp) / sum w M
    _, loss, trainer = one_step(tokenizer, dataset, tmp_path, 4, 1, method="iwsft", weight_normalization="self")
    assert loss == pytest.approx(expected, rel=1e-5)
    logged = trainer.state.log_history[0]
    assert logged["weight_mean"] == pytest.approx(float(w.mean()), rel=1e-5)  # before normalisation
    assert logged["weight_std"] == pytest.approx(float(w.std(correction=0)), rel=1e-4)
    assert logged["weight_normalizer"] == pytest.approx(float((w * n).sum() / n.sum()), rel=1e-5)
    assert abs(logged["weight_normalizer"] - 1) > 1e-3  # the test data's weights are not already mean 1


def test_weights_that_grow_together_no_longer_scale_the_step(tokenizer, dataset, tmp_path):
    """w_max = 1e-3 clips every weight to 1e-3: unnormalised, a step 1000 times smaller than SFT's (SGD);
    self-normalised, exactly SFT's step."""
    w, _, _ = hand_weights(tokenizer, dataset)
    assert (w > 1e-3).all()
    start = flat_parameters(tiny_model(0, tokenizer))
    sft, _, _ = one_step(tokenizer, dataset, tmp_path / "sft", 4, 1, method="sft")
    normalised, _, _ = one_step(tokenizer, dataset, tmp_path / "n", 2, 2, method="iwsft", w_max=1e-3,
                                weight_normalization="self")
    raw, _, _ = one_step(tokenizer, dataset, tmp_path / "r", 4, 1, method="iwsft", w_max=1e-3)
    assert torch.allclose(normalised, sft, atol=1e-6)
    assert torch.allclose(raw - start, (sft - start) * 1e-3, atol=1e-7)


def test_sft_and_dft_are_left_alone(tokenizer, dataset, tmp_path):
    """w = 1 (SFT) is already mean 1; DFT's token probabilities are the method's own: self changes neither."""
    for method in ("sft", "dft"):
        plain, loss_plain, _ = one_step(tokenizer, dataset, tmp_path / f"{method}-p", 4, 1, method=method)
        selfed, loss_self, _ = one_step(tokenizer, dataset, tmp_path / f"{method}-s", 4, 1, method=method,
                                        weight_normalization="self")
        assert torch.equal(plain, selfed) and loss_plain == loss_self


def test_quality_weight_mode_normalises_the_importance_weight_by_its_multiplicity_weighted_mean(tokenizer, tmp_path):
    """iw-SFT(Q) with quality_mode weight: the loss multiplies in m, the mean divided by is sum(m w n) / sum(m n),
    so uniform w gives SFT(Q)'s step exactly; 1 x 4 = 4 x 1."""
    data = toy_dataset(tokenizer, n=4, multiplicity=[0, 1, 2, 3])
    config = dict(method="iwsftq", quality_mode="weight", weight_normalization="self")
    big, _, _ = one_step(tokenizer, data, tmp_path / "a", 4, 1, **config)
    small, _, _ = one_step(tokenizer, data, tmp_path / "b", 1, 4, **config)
    assert torch.allclose(big, small, atol=1e-6)
    uniform, _, _ = one_step(tokenizer, data, tmp_path / "u", 4, 1, w_max=1e-3, **config)
    sftq, _, _ = one_step(tokenizer, data, tmp_path / "q", 4, 1, method="sftq", quality_mode="weight")
    assert torch.allclose(uniform, sftq, atol=1e-6)


def test_accumulated_logs_are_the_steps_not_each_micro_batchs(tokenizer, dataset, tmp_path):
    """Batch 1 x 4 micro-batches: mean, std and ESS of the step's 4 weights, as the 4 x 1 step logs them
    (a micro-batch of one weight has ESS 1 whatever the weights)."""
    _, _, big = one_step(tokenizer, dataset, tmp_path / "a", 4, 1, method="iwsft")
    _, _, small = one_step(tokenizer, dataset, tmp_path / "b", 1, 4, method="iwsft")
    for key in ("weight_mean", "weight_std", "ess", "weight_max", "weight_min"):
        assert small.state.log_history[0][key] == pytest.approx(big.state.log_history[0][key], rel=1e-5), key
    assert small.state.log_history[0]["ess"] < 0.999


def test_the_setting_comes_from_the_train_section_and_applies_to_the_iw_methods_only():
    from pydantic import ValidationError

    from iwsft.config.schema import Train

    assert Train(steps=10, batch_size=1, lr=0.1).weight_normalization == "none"  # the demo's: byte-identical results
    with pytest.raises(ValidationError, match="weight_normalization"):
        Train(steps=10, batch_size=1, lr=0.1, weight_normalization="batch")
    train = Train(steps=10, batch_size=1, lr=0.1, weight_normalization="self")
    assert [IwSftConfig.from_train(m, train, chunk_size=8).self_normalized for m in ("iwsft", "iwsftq", "sft", "dft")] \
        == [True, True, False, False]
    assert not IwSftConfig(method="iwsft", q_mode="reference", weight_normalization="self").self_normalized  # w = 1
