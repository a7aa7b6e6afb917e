"""One place that turns params into a configured IwSftTrainer run (pretraining and fine-tuning):
`section_arguments` reads a checked `train:` section (iwsft.config.schema.Train); the prepare stage's
pretraining and the tests pass training_arguments' keywords themselves."""

from __future__ import annotations

import math
import os
import torch
from transformers import TrainerCallback, TrainingArguments

from iwsft.config.schema import Train
from iwsft.encoding.sequences import CompletionCollator
from iwsft.runtime import quiet
from iwsft.training.trainer import IwSftConfig, IwSftTrainer


def training_arguments(output_dir, *, steps, batch_size, lr, warmup_steps, weight_decay, seed,
                       gradient_accumulation=1, logging_steps=10, device: str | None = None,
                       precision: str = "fp32", lr_scheduler: str = "constant_with_warmup",
                       optimizer: str = "adamw_torch_fused", gradient_checkpointing: bool = False,
                       save_steps: int | None = None) -> TrainingArguments:
    """device: "cpu" or "cuda" (None: the GPU when there is one); precision: "bf16" / "fp16" autocast
    over fp32 master weights, or "fp32" (devices.training_precision resolves params' "auto");
    save_steps: a checkpoint into output_dir every so many steps (iwsft.training.checkpoints prunes them)."""
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation,
        learning_rate=lr,
        lr_scheduler_type=lr_scheduler,  # default constant_with_warmup (DEMO_FEASIBILITY.md)
        warmup_steps=warmup_steps,
        weight_decay=weight_decay,
        optim=optimizer,
        adam_beta1=0.9,
        adam_beta2=0.95,  # the paper's (and s1's) AdamW betas
        max_grad_norm=1.0,
        logging_steps=logging_steps,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,  # unused when save_strategy is "no"
        save_total_limit=None,  # pruned by Checkpoints after each complete save, never before
        report_to="none",
        remove_unused_columns=False,
        seed=seed,
        data_seed=seed,
        disable_tqdm=quiet(),
        dataloader_drop_last=False,
        use_cpu=(device == "cpu") if device else not torch.cuda.is_available(),
        # several CPU processes (iwsft.training.launch) talk over gloo; naming a backend in one process would fail
        ddp_backend="gloo" if device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=gradient_checkpointing,  # transformers 5's name for it
        # the non-reentrant variant works with inputs that need no grad (frozen embeddings, adapters)
        activation_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
    )


def steps_for_epochs(epochs: float, examples: int, batch_size: int, gradient_accumulation: int = 1,
                     processes: int = 1) -> int:
    """Optimizer steps for `epochs` passes over `examples`, the last partial step counted."""
    per_step = batch_size * gradient_accumulation * processes
    return max(math.ceil(epochs * examples / per_step), 1)


def optimizer_steps(train: Train, examples: int) -> int:
    """train.steps, or the steps of train.epochs passes over `examples` (the schema allows exactly one)."""
    return train.steps or steps_for_epochs(train.epochs, examples, train.batch_size, train.gradient_accumulation)


def section_arguments(train: Train, *, steps: int, seed: int, device: str, precision: str) -> dict:
    """training_arguments' keywords from params.yaml `train:` (steps: optimizer_steps; precision:
    devices.training_precision's answer)."""
    return dict(steps=steps, batch_size=train.batch_size, lr=train.lr, warmup_steps=train.warmup_steps,
                weight_decay=train.weight_decay, seed=seed, gradient_accumulation=train.gradient_accumulation,
                logging_steps=train.logging_steps, device=device, precision=precision, lr_scheduler=train.lr_scheduler,
                optimizer=train.optimizer, gradient_checkpointing=train.gradient_checkpointing,
                save_steps=train.save_steps)


class PruneCheckpoints(TrainerCallback):
    """After each complete checkpoint, the older ones go: `keep` stay (at least the newest)."""

    def __init__(self, checkpoints, keep: int):
        self.checkpoints, self.keep = checkpoints, max(keep, 1)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:  # one process deletes; the others would race it
            self.checkpoints.prune(self.keep)


class NoFinalCheckpoint(TrainerCallback):
    """transformers saves a checkpoint at the last step whatever save_steps says. With train.keep_checkpoints
    0 the stage deletes it once it has written the model itself, a few seconds later, so it is not written:
    SmolLM2's weights and optimizer state are ~1.6 GB, ~4 s a stage. A crash after the last periodic
    checkpoint costs the steps since then, as it does anywhere in the run."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps and state.global_step % args.save_steps:
            control.should_save = False


def fine_tune(model, tokenizer, dataset, iw_config: IwSftConfig, output_dir, callbacks=(), resume_from=None,
              **arguments):
    """Train `model` in place on a tokenized dataset; returns the trainer (log_history, weights).
    resume_from: a complete checkpoint folder (iwsft.training.checkpoints) to continue from exactly."""
    trainer = IwSftTrainer(
        model=model,
        args=training_arguments(output_dir, **arguments),
        train_dataset=dataset,
        data_collator=CompletionCollator(tokenizer.pad_token_id),
        iw_config=iw_config,
        callbacks=list(callbacks),
    )
    if resume_from is not None:
        trainer.load_iw_state(str(resume_from))
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    return trainer
