"""IwSftTrainer on a tiny Llama: normalisation across accumulation, q modes, refusals."""

import math

import pytest
import torch

from iwsft.training import kernels
from iwsft.encoding.sequences import CompletionCollator, SequenceAlignmentError
from iwsft.training.trainer import IwSftConfig, quality_resample
from support import flat_parameters, make_trainer, one_step, tiny_model, toy_dataset


@pytest.mark.parametrize("method", ["sft", "iwsft", "dft"])
def test_accumulation_1x4_equals_4x1(tokenizer, dataset, tmp_path, method):
    start = flat_parameters(tiny_model(0, tokenizer))
    big, loss_big, _ = one_step(tokenizer, dataset, tmp_path / "a", 4, 1, method=method)
    small, loss_small, _ = one_step(tokenizer, dataset, tmp_path / "b", 1, 4, method=method)
    assert (big - start).abs().max() > 1e-3  # the step did move the model
    assert torch.allclose(big, small, atol=1e-6)
    assert loss_big == pytest.approx(loss_small, rel=1e-5)


def test_first_step_loss_equals_hand_formula(tokenizer, dataset, tmp_path):
    model = tiny_model(0, tokenizer)
    batch = CompletionCollator(tokenizer.pad_token_id)([dataset[i] for i in range(4)])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp, mask = kernels.token_logprobs(logits, batch["labels"])
    rho = ((logp - batch["ref_logprobs"]) * mask).sum(1) / mask.sum(1)
    w = torch.exp(rho).clamp(max=16)
    expected = float(-(w[:, None] * logp * mask).sum() / mask.sum())
    _, loss, trainer = one_step(tokenizer, dataset, tmp_path, 4, 1, method="iwsft")
    assert loss == pytest.approx(expected, rel=1e-5)
    logged = trainer.state.log_history[0]
    assert logged["weight_mean"] == pytest.approx(float(w.mean()), rel=1e-5)
    assert logged["ess"] == pytest.approx(float(w.sum() ** 2 / (4 * (w * w).sum())), rel=1e-5)
    assert logged["sft_equivalent_loss"] == pytest.approx(float(-(logp * mask).sum() / mask.sum()), rel=1e-5)
    for key in ("weight_max", "weight_min", "clipped_fraction", "mean_log_ratio", "empty_completions"):
        assert key in logged


def test_dft_two_micro_batches_of_4_equal_one_batch_of_8(tokenizer, tmp_path):
    """DFT (objectives.dft_loss): N is the window's completion tokens, so 2 x 4 accumulated is 1 x 8; the
    loss is the hand formula on the first batch, the token weights are logged, and it is not SFT."""
    eight = toy_dataset(tokenizer, n=8, reference_seed=None)  # DFT needs no pi_ref column
    model = tiny_model(0, tokenizer)
    start = flat_parameters(model)
    batch = CompletionCollator(tokenizer.pad_token_id)([eight[i] for i in range(8)])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp, mask = kernels.token_logprobs(logits, batch["labels"])
    p = logp.exp()[mask.bool()]
    expected = float(-(logp.exp() * logp * mask).sum() / mask.sum())

    big, loss_big, trainer = one_step(tokenizer, eight, tmp_path / "a", 8, 1, method="dft")
    small, loss_small, _ = one_step(tokenizer, eight, tmp_path / "b", 4, 2, method="dft")
    sft, _, _ = one_step(tokenizer, eight, tmp_path / "s", 8, 1, method="sft")
    assert (big - start).abs().max() > 1e-3
    assert torch.allclose(big, small, atol=1e-6)
    assert loss_big == pytest.approx(loss_small, rel=1e-5)
    assert loss_big == pytest.approx(expected, rel=1e-5)
    assert not torch.allclose(big, sft, atol=1e-5)  # no silent fall-back to SFT
    logged = trainer.state.log_history[0]
    assert logged["weight_mean"] == pytest.approx(float(p.mean()), rel=1e-5)
    assert logged["weight_std"] == pytest.approx(float(p.std(correction=0)), rel=1e-4)
    assert logged["weight_max"] <= 1.0 and "ess" not in logged and trainer.weight_history == []


def test_reference_equal_to_policy_gives_unit_weights_and_sft_update(tokenizer, tmp_path):
    own_reference = toy_dataset(tokenizer, n=4, reference_seed=0)  # pi_ref == pi_theta at step 0
    iw, loss_iw, trainer = one_step(tokenizer, own_reference, tmp_path / "iw", 4, 1, method="iwsft")
    sft, loss_sft, _ = one_step(tokenizer, own_reference, tmp_path / "sft", 4, 1, method="sft")
    assert trainer.state.log_history[0]["weight_mean"] == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(iw, sft, atol=1e-6)
    assert loss_iw == pytest.approx(loss_sft, rel=1e-6)


def test_q_reference_is_sft(tokenizer, dataset, tmp_path):
    ref_q, _, _ = one_step(tokenizer, dataset, tmp_path / "q", 4, 1, method="iwsft", q_mode="reference")
    sft, _, _ = one_step(tokenizer, dataset, tmp_path / "s", 4, 1, method="sft")
    iw, _, _ = one_step(tokenizer, dataset, tmp_path / "i", 4, 1, method="iwsft")
    assert torch.allclose(ref_q, sft, atol=1e-7)
    assert not torch.allclose(iw, sft, atol=1e-5)


def test_online_reference_matches_precomputed_column(tokenizer, tmp_path):
    own_reference = toy_dataset(tokenizer, n=4, reference_seed=0)
    column, _, _ = one_step(tokenizer, own_reference, tmp_path / "c", 2, 1, method="iwsft")
    without = own_reference.remove_columns("ref_logprobs")
    model = tiny_model(0, tokenizer)
    trainer = make_trainer(model, without, tokenizer, tmp_path / "o", 2, 1,
                           iw_config=IwSftConfig(method="iwsft", reference_source="online"))
    trainer.train()
    assert torch.allclose(flat_parameters(model), column, atol=1e-5)


def test_ema_q_starts_at_policy_and_lags(tokenizer, dataset, tmp_path):
    model = tiny_model(0, tokenizer)
    trainer = make_trainer(model, dataset, tokenizer, tmp_path, 2, 1, steps=3,
                           iw_config=IwSftConfig(method="iwsft", q_mode="ema", ema_decay=0.5))
    start = flat_parameters(model)
    trainer.train()
    ema, now = flat_parameters(trainer.ema_model), flat_parameters(model)
    assert not torch.allclose(ema, now) and not torch.allclose(ema, start)
    assert (ema - now).norm() < (start - now).norm()


def test_missing_reference_column_is_refused(tokenizer, tmp_path):
    data = toy_dataset(tokenizer, n=4, reference_seed=None)
    trainer = make_trainer(tiny_model(0, tokenizer), data, tokenizer, tmp_path, 2, 1)
    with pytest.raises(ValueError, match="no ref_logprobs"):
        trainer.train()


def test_reference_of_wrong_length_is_refused(tokenizer, dataset, tmp_path):
    broken = dataset.map(lambda row: {"ref_logprobs": row["ref_logprobs"][:-1]})
    trainer = make_trainer(tiny_model(0, tokenizer), broken, tokenizer, tmp_path, 2, 1)
    with pytest.raises(SequenceAlignmentError, match="id='ex"):
        trainer.train()


def test_quality_resampling_is_seeded_and_proportional(tokenizer):
    data = toy_dataset(tokenizer, n=4, reference_seed=None, multiplicity=[0, 1, 2, 3])
    draws = quality_resample(data, seed=3, size=6000)
    again = quality_resample(data, seed=3, size=6000)
    assert draws["id"] == again["id"]
    counts = {i: draws["id"].count(f"ex{i}") for i in range(4)}
    assert counts[0] == 0
    assert counts[3] / counts[1] == pytest.approx(3.0, rel=0.1)
    with pytest.raises(ValueError, match="nothing to sample"):
        quality_resample(data.select([0]))


def test_quality_weight_mode_scales_the_loss(tokenizer, tmp_path):
    data = toy_dataset(tokenizer, n=4, multiplicity=[1, 1, 1, 1])
    doubled = toy_dataset(tokenizer, n=4, multiplicity=[2, 2, 2, 2])
    _, loss_one, _ = one_step(tokenizer, data, tmp_path / "a", 4, 1, method="sftq", quality_mode="weight")
    _, loss_two, _ = one_step(tokenizer, doubled, tmp_path / "b", 4, 1, method="sftq", quality_mode="weight")
    assert loss_two == pytest.approx(2 * loss_one, rel=1e-6)


def test_config_takes_the_schemas_defaults_and_a_train_section():
    """The loss knobs' defaults and checks are params.yaml's schema's (iwsft.config.schema.Train); only
    the method, which is not a train: key, is checked here."""
    from iwsft.config.schema import Train

    with pytest.raises(ValueError, match="method"):
        IwSftConfig(method="dpo")
    assert math.isclose(IwSftConfig().w_max, 16.0) and IwSftConfig().token_clip == (0.2, 1.8)
    train = Train(steps=10, batch_size=2, lr=0.1, q_mode="ema", ema_decay=0.5, token_clip=[0.1, 2.0])
    config = IwSftConfig.from_train("iwsftq", train, chunk_size=64)
    assert (config.method, config.q_mode, config.ema_decay, config.token_clip, config.chunk_size) == \
        ("iwsftq", "ema", 0.5, (0.1, 2.0), 64)
    assert config.w_max == train.w_max and config.reference_source == "column"
