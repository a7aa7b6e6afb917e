"""Tiny models and data shared by the tests (imported by tests and by the DDP worker script)."""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import TrainingArguments

from iwsft.training.reference import score_reference
from iwsft.encoding.sequences import CompletionCollator, tokenize_dataset
from iwsft.model.tiny_lm import build_char_tokenizer, build_tiny_llama
from iwsft.training.trainer import IwSftConfig, IwSftTrainer

PAIRS = [
    ("1+2=", "3"),
    ("17+25=", "42"),
    ("9-12=", "-3"),
    ("100+250=", "350"),
    ("7+8=", "15"),
    ("33-3=", "30"),
    ("5+5+5=", "15"),
    ("64-100=", "-36"),
]


def tiny_model(seed: int = 0, tokenizer=None):
    tokenizer = tokenizer or build_char_tokenizer()
    return build_tiny_llama(len(tokenizer), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, seed=seed)


def toy_dataset(tokenizer, n: int = 4, reference_seed: int | None = 1, multiplicity=None) -> Dataset:
    """n prompt/completion pairs of different lengths, tokenized, with ref_logprobs scored by a
    tiny model of `reference_seed` (a different seed from the policy, so weights are not all 1)."""
    rows = {"id": [f"ex{i}" for i in range(n)], "prompt": [p for p, _ in PAIRS[:n]], "completion": [c for _, c in PAIRS[:n]]}
    if multiplicity is not None:
        rows["multiplicity"] = list(multiplicity)
        rows["sample_weight"] = [float(m) for m in multiplicity]
    dataset = tokenize_dataset(Dataset.from_dict(rows), tokenizer)
    if reference_seed is not None:
        reference = tiny_model(reference_seed, tokenizer)
        column = score_reference(reference, dataset, tokenizer.pad_token_id, batch_size=3, show_progress=False)
        dataset = dataset.add_column("ref_logprobs", column)
    return dataset


def training_args(output_dir, batch_size: int, accumulation: int, steps: int = 1, lr: float = 0.5, **extra):
    settings = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=steps,
        learning_rate=lr,
        optim="sgd",  # SGD keeps the gradient's scale visible in the update (Adam would hide it)
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        weight_decay=0.0,
        use_cpu=True,
        report_to="none",
        remove_unused_columns=False,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
    )
    return TrainingArguments(**{**settings, **extra})


def make_trainer(model, dataset, tokenizer, output_dir, batch_size, accumulation, steps=1, iw_config=None, **extra):
    return IwSftTrainer(
        model=model,
        args=training_args(output_dir, batch_size, accumulation, steps, **extra),
        train_dataset=dataset,
        data_collator=CompletionCollator(tokenizer.pad_token_id),
        iw_config=iw_config or IwSftConfig(method="iwsft"),
    )


def flat_parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])


def iwsft_score(argv) -> tuple[int, str]:
    """What iwsft.cli.main does for `iwsft score`: parse, handle; a UserError is its message and exit 1."""
    import argparse

    from iwsft.cli import tasks as cli_tasks
    from iwsft.errors import UserError

    parser = argparse.ArgumentParser(prog="iwsft")
    cli_tasks.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        assert cli_tasks.handle(args)
    except UserError as error:
        return 1, f"iwsft {args.command}: error: {error}"
    return 0, ""


def one_step(tokenizer, dataset, output_dir, batch, accumulation, **config):
    """(parameters, training loss, trainer) after one optimizer step of a fresh tiny model with IwSftConfig(**config)."""
    model = tiny_model(0, tokenizer)
    trainer = make_trainer(model, dataset, tokenizer, output_dir, batch, accumulation, iw_config=IwSftConfig(**config))
    result = trainer.train()
    return flat_parameters(model), result.training_loss, trainer
