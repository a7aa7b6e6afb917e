"""train: knobs (iwsft.training.arguments): schedules, epochs, precision and gradient checkpointing, on a tiny model."""

import pytest
import torch

from iwsft.model.devices import training_precision
from iwsft.errors import UserError
from iwsft.model.tiny_lm import build_char_tokenizer
from iwsft.training.trainer import IwSftConfig
from iwsft.training.arguments import fine_tune, steps_for_epochs

from support import tiny_model, toy_dataset

TRAIN = dict(batch_size=2, lr=1e-2, warmup_steps=1, weight_decay=0.0, seed=0, logging_steps=1, device="cpu")


def train(tmp_path, steps=4, **knobs):
    tokenizer = build_char_tokenizer()
    model = tiny_model(0, tokenizer)
    trainer = fine_tune(model, tokenizer, toy_dataset(tokenizer, n=4), IwSftConfig(method="iwsft"), tmp_path,
                        steps=steps, **TRAIN, **knobs)
    return model, [entry for entry in trainer.state.log_history if "loss" in entry]


def test_gradient_checkpointing_changes_memory_not_numbers(tmp_path):
    plain_model, plain = train(tmp_path / "plain")
    checkpointed_model, checkpointed = train(tmp_path / "checkpointed", gradient_checkpointing=True)
    assert checkpointed_model.is_activation_checkpointing and not plain_model.is_activation_checkpointing
    assert [e["loss"] for e in checkpointed] == pytest.approx([e["loss"] for e in plain], abs=1e-5)
    for a, b in zip(plain_model.parameters(), checkpointed_model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("schedule, last", [("constant_with_warmup", 1e-2), ("linear", 1e-2 / 3), ("cosine", 2.5e-3)])
def test_schedules_follow_transformers(tmp_path, schedule, last):
    """4 steps, 1 of warm-up: the learning rate logged after the last step is the schedule's value there."""
    _, logged = train(tmp_path, lr_scheduler=schedule)
    assert logged[-1]["learning_rate"] == pytest.approx(last, rel=1e-6)


def test_other_optimizer_and_bf16_autocast_train(tmp_path):
    model, logged = train(tmp_path, steps=2, optimizer="sgd", precision="bf16")
    assert len(logged) == 2 and all(torch.isfinite(torch.tensor(e["loss"])) for e in logged)
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32


def test_epochs_become_whole_steps():
    assert steps_for_epochs(1, 10, batch_size=4) == 3  # the last partial batch counts
    assert steps_for_epochs(2.5, 100, batch_size=8, gradient_accumulation=2, processes=2) == 8
    assert steps_for_epochs(0.01, 10, batch_size=4) == 1


def with_precision(precision: str, device: str = "auto"):
    """The project's params.yaml, typed, with this train.precision and runtime.device."""
    from pathlib import Path

    from iwsft.config.loading import merge, read_yaml
    from iwsft.config.schema import check

    project = read_yaml(Path(__file__).resolve().parents[3] / "params.yaml")
    return check(merge(project, {"runtime": {"device": device}, "train": {"precision": precision}}))


def test_precision_auto_follows_the_device_and_fp16_needs_a_gpu():
    assert training_precision(with_precision("auto", device="cpu"), "cpu") == "fp32"
    assert training_precision(with_precision("bf16", device="cpu"), "cpu") == "bf16"
    with pytest.raises(UserError, match="train.precision is fp16, which needs a CUDA device"):
        training_precision(with_precision("fp16"), "cpu")


def test_the_default_optimizer_is_transformers_own(tmp_path):
    """params.yaml's optimizer is what TrainingArguments picks unasked (adamw_torch_fused in transformers 5):
    naming another one by default changed the demo's pi_ref and every number after it."""
    from pathlib import Path

    import yaml
    from transformers import TrainingArguments

    from iwsft.training.arguments import training_arguments

    default = TrainingArguments(output_dir=str(tmp_path)).optim
    params = yaml.safe_load((Path(__file__).resolve().parents[3] / "params.yaml").read_text())
    assert params["train"]["optimizer"] == default
    ours = training_arguments(tmp_path, steps=1, batch_size=1, lr=1e-3, warmup_steps=0, weight_decay=0.0, seed=0)
    assert ours.optim == default


def test_training_arguments_defaults_are_params_defaults():
    """prepare calls fine_tune without the knobs; its defaults must be the ones params.yaml's schema
    declares (settings.Train), or the demo's pi_ref and the methods would train differently."""
    import inspect

    from iwsft.config.schema import Train
    from iwsft.training.arguments import training_arguments

    signature = inspect.signature(training_arguments).parameters
    for knob in ("lr_scheduler", "optimizer", "gradient_checkpointing"):
        assert signature[knob].default == Train.model_fields[knob].default, knob


def test_the_train_section_becomes_the_trainers_arguments(tmp_path):
    """The train stage passes its typed section (iwsft.training.arguments.section_arguments): each knob
    lands on its TrainingArguments field; epochs become whole optimizer steps."""
    from iwsft.config.schema import Train
    from iwsft.training.arguments import optimizer_steps, section_arguments, training_arguments

    train = Train(steps=None, epochs=1.5, batch_size=4, gradient_accumulation=2, lr=0.01, warmup_steps=3,
                  weight_decay=0.1, logging_steps=5, lr_scheduler="cosine", save_steps=7)
    steps = optimizer_steps(train, examples=10)
    assert steps == 2  # ceil(1.5 * 10 / (4 x 2))
    args = training_arguments(tmp_path, **section_arguments(train, steps=steps, seed=3, device="cpu", precision="fp32"))
    assert (args.max_steps, args.per_device_train_batch_size, args.gradient_accumulation_steps, args.learning_rate,
            args.warmup_steps, args.weight_decay, args.logging_steps, args.save_steps, args.seed) == \
        (2, 4, 2, 0.01, 3, 0.1, 5, 7, 3)
    assert args.lr_scheduler_type == "cosine" and args.optim == "adamw_torch_fused"
    assert optimizer_steps(train.model_copy(update={"steps": 9, "epochs": None}), examples=10) == 9
