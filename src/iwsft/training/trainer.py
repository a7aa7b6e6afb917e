"""IwSftTrainer: transformers.Trainer with the iw-SFT loss family.

Features:
- methods `sft`, `iwsft`, `sftq`, `iwsftq` (the (Q) ones resample the data by quality multiplicity,
  see `quality_resample`, or weight the loss by it), and `dft` (each token's NLL weighted by the
  policy's own detached probability of it, `objectives.dft_loss`; q and pi_ref play no part);
- q modes: `current` (detached log-probs of the same forward, the authors' code), `ema` (an EMA copy
  of the policy, the paper's "time-lagged theta", one extra forward), `reference` (w = 1: SFT);
- reference log-probs from a precomputed column (default) or `online` (a frozen copy of the initial
  model, or a PEFT model with its adapters switched off);
- token-level normalisation by HF's `num_items_in_batch` over the whole gradient-accumulation
  window and across ranks, so 1 x 4 and 4 x 1 micro-batches, and 1 or 2 processes, give one update;
- `weight_normalization: self` (importance-weighted methods): the weights scaled to mean 1 over the
  optimizer step's units (objectives.self_normalized_mean), the step's weight mass summed over its
  micro-batches and ranks before its first backward (`get_batch_samples`), so that the split of the
  step changes nothing; costs one no-grad forward per micro-batch with q_mode current;
- diagnostics every logging step: loss, SFT-equivalent loss, weight mean/std/ESS per optimizer step
  (averaged over the logging window; before normalisation), max/min, clipped fraction, mean
  log-ratio, empty completions, and with `self` the step's mean weight it divided by
  (`weight_normalizer`); for `dft` the token weights' mean, std (averaged over the window's
  micro-batches), max and min.

Limits: no sequence packing (the sequence weight needs one sequence per row); in DDP the weight
diagnostics are those of rank 0's micro-batches (the normaliser itself is global).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from iwsft.config.schema import Train
from iwsft.encoding.sequences import IGNORE_INDEX
from iwsft.io.durable import atomic_file
from iwsft.methods import METHODS
from iwsft.training import objectives
from iwsft.training.completion_head import completion_logprobs
from iwsft.training.weighting import MOMENTS, SelfNormalizedSteps, window_logs


def _schema_default(key: str):
    """params.yaml train.KEY's default, declared once in iwsft.config.schema.Train."""
    return Train.model_fields[key].default


@dataclass
class IwSftConfig:
    """The loss knobs of params.yaml `train:` (their defaults and checks are the schema's; the stage
    builds this with `from_train`), plus the method and the head's chunk size."""
    method: str = "iwsft"  # a name of iwsft.methods.METHODS
    q_mode: Literal["current", "ema", "reference"] = _schema_default("q_mode")
    ema_decay: float = _schema_default("ema_decay")
    temp: float = _schema_default("temp")
    w_max: float = _schema_default("w_max")
    per_token: bool = _schema_default("per_token")
    token_clip: tuple[float, float] = tuple(_schema_default("token_clip"))
    reduction: Literal["token", "sequence"] = _schema_default("reduction")
    reference_source: Literal["column", "online"] = _schema_default("reference_source")
    quality_mode: Literal["sample", "weight"] = _schema_default("quality_mode")
    weight_normalization: Literal["none", "self"] = _schema_default("weight_normalization")
    chunk_size: int = 1024  # params' reference.chunk_size in the train stage
    completion_head: bool = True  # LM head on completion rows only (iwsft.training.completion_head); False: full logits

    def __post_init__(self):
        if self.method not in METHODS:  # not a train: key, so not checked by the schema
            raise ValueError(f"method must be one of {tuple(METHODS)}, got {self.method!r}")
        self.token_clip = tuple(self.token_clip)

    @classmethod
    def from_train(cls, method: str, train: Train, chunk_size: int) -> "IwSftConfig":
        """The knobs of a checked `train:` section: every field of this class that Train also has."""
        knobs = {field.name: getattr(train, field.name) for field in fields(cls) if field.name in Train.model_fields}
        return cls(method=method, chunk_size=chunk_size, **knobs)

    @property
    def importance_weighted(self) -> bool:
        return METHODS[self.method].importance_weighted and self.q_mode != "reference"

    @property
    def self_normalized(self) -> bool:
        """Self-normalised importance weights. SFT-type methods (and q_mode reference) have w = 1, already
        mean 1; DFT's token weights are probabilities the method defines: neither is rescaled."""
        return self.weight_normalization == "self" and self.importance_weighted

    @property
    def uses_quality(self) -> bool:
        return METHODS[self.method].uses_quality

    @property
    def probability_weighted(self) -> bool:
        return METHODS[self.method].probability_weighted


def quality_resample(dataset, multiplicity_column: str = "multiplicity", seed: int = 0, size: int | None = None):
    """Draw `size` examples (default: as many as there are) with probability proportional to their
    multiplicity, with replacement. Seeded and computed before any sharding, so identical on every
    rank; the distributed sampler then splits the same list."""
    multiplicity = np.asarray(dataset[multiplicity_column], dtype=np.float64)
    if multiplicity.sum() <= 0:
        raise ValueError(f"quality resampling: every example has {multiplicity_column} = 0; nothing to sample")
    rng = np.random.default_rng(seed)
    draws = rng.choice(len(multiplicity), size=size or len(multiplicity), replace=True, p=multiplicity / multiplicity.sum())
    return dataset.select(draws.tolist())


class _EmaUpdate(TrainerCallback):
    def __init__(self, trainer: "IwSftTrainer"):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.update_ema()


class IwSftTrainer(SelfNormalizedSteps, Trainer):
    """Trainer whose loss is the iw-SFT objective; pass `iw_config` and a CompletionCollator."""

    def __init__(self, *args, iw_config: IwSftConfig | None = None, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.iw = iw_config or IwSftConfig()
        if self.args.remove_unused_columns:
            raise ValueError("IwSftTrainer needs TrainingArguments(remove_unused_columns=False) to keep ref_logprobs")
        # compute_loss always divides by the window's num_items_in_batch: no extra 1/GA scaling.
        self.loss_is_scaled_for_ga = True
        self.weight_history: list[dict] = []
        self._window: list[dict] = []
        self._init_steps()  # weight_normalization self (iwsft.training.weighting)
        self.ema_model = None
        self.ref_model = None
        if self.iw.importance_weighted and self.iw.q_mode == "ema":
            self.ema_model = self._frozen_copy(self.model)
            self.add_callback(_EmaUpdate(self))
        if self.iw.importance_weighted and self.iw.reference_source == "online":
            uses_adapters = hasattr(self.model, "disable_adapter")
            self.ref_model = ref_model if ref_model is not None else (None if uses_adapters else self._frozen_copy(self.model))

    @staticmethod
    def _frozen_copy(model):
        frozen = copy.deepcopy(model).eval()
        frozen.requires_grad_(False)
        return frozen

    @torch.no_grad()
    def update_ema(self):
        """theta_q <- decay * theta_q + (1 - decay) * theta, after every optimizer step."""
        policy = self.accelerator.unwrap_model(self.model)
        for ema_param, param in zip(self.ema_model.parameters(), policy.parameters()):
            ema_param.lerp_(param.detach().to(ema_param.dtype), 1.0 - self.iw.ema_decay)

    # -- checkpoints (iwsft.training.checkpoints) ---------------------------------------------------------
    def _save_checkpoint(self, model, trial):
        """HF's checkpoint, then this trainer's own state, `iwsft_state.json` last (the folder's
        "complete" mark), then the callbacks' on_save (which may prune older checkpoints)."""
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            self.save_iw_state(os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}"))

    def save_iw_state(self, folder: str) -> None:
        from safetensors.torch import save_model

        if self.ema_model is not None:
            save_model(self.ema_model, os.path.join(folder, "ema.safetensors"))
        state = {"weight_history": self.weight_history, "window": self._window}
        # last, synced before its rename: its presence marks the checkpoint complete (iwsft.training.checkpoints)
        with atomic_file(os.path.join(folder, "iwsft_state.json")) as handle:
            json.dump(state, handle)

    def load_iw_state(self, folder: str) -> None:
        """Before `train(resume_from_checkpoint=folder)`, which restores HF's part itself."""
        from safetensors.torch import load_model

        if self.ema_model is not None:
            load_model(self.ema_model, os.path.join(folder, "ema.safetensors"))
        with open(os.path.join(folder, "iwsft_state.json")) as handle:
            state = json.load(handle)
        self.weight_history, self._window = state["weight_history"], state["window"]

    # -- normalisation -------------------------------------------------------------------------
    def _get_num_items_in_batch(self, batch_samples, device):
        """Completion tokens (or sequences, for reduction="sequence") in the accumulation window,
        summed over ranks. Counted always, not only when the model 'accepts loss kwargs'."""
        if not batch_samples or "labels" not in batch_samples[0]:
            return None
        carries_loss = [batch["labels"][:, 1:] != IGNORE_INDEX for batch in batch_samples]
        if self.iw.reduction == "sequence":
            count = sum(mask.any(-1).sum() for mask in carries_loss)
        else:
            count = sum(mask.sum() for mask in carries_loss)
        count = torch.as_tensor(count, device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    # -- the loss ------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if num_items_in_batch is None:
            raise RuntimeError(
                "IwSftTrainer: num_items_in_batch is missing; refusing to fall back to an unnormalised "
                "or plain-SFT loss"
            )
        ref_column = inputs.get("ref_logprobs")
        logp, mask = self._token_logprobs(model, inputs, prepared=True)

        if self.iw.self_normalized and model.training:  # weighed before the step's first micro-batch (.weighting)
            raw, weights = self._normalized_step_weights(mask)
        else:
            raw = weights = self._importance_weights(model, inputs, logp, mask, ref_column)
            if self.iw.self_normalized:  # outside training (evaluation): the batch's own mean
                weights = objectives.self_normalized_mean(raw, mask, self.iw.reduction)
        multiplicity = self._multiplicity(inputs, weights)
        loss = objectives.weighted_nll(logp, mask, weights * multiplicity, num_items_in_batch, self.iw.reduction)

        if model.training:  # the weights as they came, before the step's normalisation
            self._record(logp, mask, raw * multiplicity, ref_column, num_items_in_batch)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            loss = loss * self.args.world_size  # DDP averages gradients; our N is already global
        return (loss, {"loss": loss, "token_logprobs": logp}) if return_outputs else loss

    def _token_logprobs(self, model, inputs, prepared: bool):
        """(logp, mask) of the batch's labels under `model`. prepared: `model` is the one accelerate
        wrapped, whose forward runs under its autocast; the head outside the forward then does too."""
        return completion_logprobs(
            model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"], chunk_size=self.iw.chunk_size,
            enabled=self.iw.completion_head, head_autocast=self.accelerator.autocast() if prepared else None,
        )

    def _importance_weights(self, model, inputs, logp, mask, ref_column):
        self._last_ref_logp = None
        if self.iw.probability_weighted:  # DFT: weighted_nll with these weights is objectives.dft_loss
            return objectives.dft_token_weights(logp, mask)
        if not self.iw.importance_weighted:
            return torch.ones(logp.shape[0], device=logp.device)
        ref_logp = self._reference_logprobs(model, inputs, ref_column)
        q_logp = self._q_logprobs(inputs, logp)
        self._last_ref_logp, self._last_q_logp = ref_logp, q_logp
        if self.iw.per_token:
            return objectives.token_weights(q_logp, ref_logp, mask, self.iw.token_clip)
        return objectives.sequence_weights(q_logp, ref_logp, mask, self.iw.temp, self.iw.w_max)

    def _reference_logprobs(self, model, inputs, ref_column):
        if self.iw.reference_source == "column":
            if ref_column is None:
                raise ValueError(
                    "reference_source='column' but the batch has no ref_logprobs: run the reference "
                    "stage (or score_reference) and train on its output"
                )
            return ref_column
        with torch.no_grad():
            if self.ref_model is not None:
                ref_logp, _ = self._token_logprobs(self.ref_model, inputs, prepared=False)
            else:  # a PEFT model: the reference is the base model with its adapters off
                with self.accelerator.unwrap_model(model).disable_adapter():
                    ref_logp, _ = self._token_logprobs(model, inputs, prepared=True)
        return ref_logp

    def _q_logprobs(self, inputs, logp):
        if self.iw.q_mode == "current":
            return logp.detach()
        with torch.no_grad():
            q_logp, _ = self._token_logprobs(self.ema_model, inputs, prepared=False)
        return q_logp

    # -- diagnostics ---------------------------------------------------------------------------
    @torch.no_grad()
    def _record(self, logp, mask, weights, ref_column, num_items):
        sft_equivalent = objectives.sft_loss(logp.detach(), mask, num_items, self.iw.reduction)
        row = {"sft_equivalent_loss": float(sft_equivalent)}
        if self._last_ref_logp is not None:
            log_ratio = objectives.mean_log_ratio(self._last_q_logp, self._last_ref_logp, mask)
            row.update(objectives.weight_diagnostics(weights, mask, log_ratio, self.iw.w_max))
            # mean, std and ESS are the optimizer step's (all its micro-batches): `log` recomputes them from these
            row[MOMENTS] = [self.state.global_step, *objectives.weight_moments(weights, mask)]
            if self.iw.self_normalized:
                row["weight_normalizer"] = self.step_normalizer
            if weights.dim() == 1:
                nonempty = mask.sum(-1) > 0
                self.weight_history.append(
                    {"step": self.state.global_step, "weights": weights[nonempty].float().cpu().tolist()}
                )
        elif self.iw.probability_weighted:
            row.update(objectives.token_weight_diagnostics(weights, mask))
        self._window.append(row)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._window and "loss" in logs:
            logs.update(window_logs(self._window, self.args.gradient_accumulation_steps * self.args.world_size))
            self._window = []
        super().log(logs, start_time)
