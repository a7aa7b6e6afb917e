"""Two parts of IwSftTrainer that look at a whole optimizer step rather than one micro-batch:

- `SelfNormalizedSteps` (train.weight_normalization: self): the importance weights scaled to mean 1
  over the step's units (objectives.self_normalized_mean). The mean must be the step's, over every
  micro-batch of the accumulation window and every rank, or 1 x 4 and 4 x 1 micro-batches (or 1 and 2
  processes) would take different steps. HF's loop fetches the step's micro-batches before the first
  forward (`get_batch_samples`); the weights of all of them are computed there, with no gradient, and
  kept for compute_loss. That is exact because neither q nor pi_ref changes during the step (theta
  changes at the optimizer step, the EMA after it). Cost: one no-grad forward per micro-batch with
  q_mode current (with ema or an online reference, those forwards move here and are not repeated).
  Unnormalised weights that grow together act as a larger learning rate; these do not.
- `window_logs`: the logging window's diagnostics from its micro-batches' rows, mean / std / ESS of the
  weights per optimizer step (objectives.moment_diagnostics), averaged over the window's steps.
"""

from __future__ import annotations

import numpy as np
import torch

from iwsft.training import objectives

MOMENTS = "_moments"  # a window row's [step, n, sum w, sum w^2]: internal, never logged


class SelfNormalizedSteps:
    """Mixin for IwSftTrainer (which provides iw, model, args, accelerator, _prepare_inputs,
    _token_logprobs, _importance_weights, _last_q_logp, _last_ref_logp)."""

    def _init_steps(self) -> None:
        self._step_weights: list[tuple] = []  # this step's micro-batches' (weights, q, ref), in order
        self._step_mass: tuple[float, float] = (0.0, 0.0)  # sum(m w) and sum(m) over the step, all ranks

    @property
    def step_normalizer(self) -> float:
        """The step's mean weight per unit (what the weights are divided by); 1 with no units."""
        mass, count = self._step_mass
        return mass / count if count > 0 else 1.0

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """HF's: the optimizer step's micro-batches, fetched before the first of them runs; with
        self-normalised weights, their weights and the step's weight mass too."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.iw.self_normalized:
            self._weigh_step(batch_samples, device)
        return batch_samples, num_items_in_batch

    @torch.no_grad()
    def _weigh_step(self, batch_samples, device) -> None:
        """Each micro-batch's weights, and sum(m w) and sum(m) over the step's units (objectives.weight_mass;
        m: the quality multiplicity with quality_mode weight, else 1) on every rank, gathered like HF's
        num_items_in_batch."""
        if self._step_weights:
            raise RuntimeError(f"IwSftTrainer: {len(self._step_weights)} micro-batches of the previous step were "
                               "never trained on; refusing to normalise this step by a stale mean")
        policy = self.model  # not the DDP wrapper: a no-grad forward needs no gradient hooks; autocast is on its forward
        totals = torch.zeros(2, dtype=torch.float64, device=device)
        for batch in batch_samples:
            inputs = self._prepare_inputs(batch)
            logp, mask = self._token_logprobs(policy, inputs, prepared=True)
            weights = self._importance_weights(policy, inputs, logp, mask, inputs.get("ref_logprobs"))
            multiplicity = self._multiplicity(inputs, weights)
            totals += torch.stack([objectives.weight_mass(weights * multiplicity, mask, self.iw.reduction),
                                   objectives.weight_mass(multiplicity.expand_as(weights), mask, self.iw.reduction)]
                                  ).to(totals)
            self._step_weights.append((weights, self._last_q_logp, self._last_ref_logp))
        if self.args.average_tokens_across_devices and self.args.world_size > 1:  # as num_items_in_batch
            totals = self.accelerator.gather(totals[None]).sum(0)
        self._step_mass = (float(totals[0]), float(totals[1]))

    def _normalized_step_weights(self, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw, normalised) weights that _weigh_step computed for this micro-batch (the next in order)."""
        if not self._step_weights:
            raise RuntimeError("IwSftTrainer: weight_normalization self, but this step's weights were not computed "
                               "before its first micro-batch (get_batch_samples)")
        raw, self._last_q_logp, self._last_ref_logp = self._step_weights.pop(0)
        if raw.shape[0] != mask.shape[0]:
            raise RuntimeError(f"IwSftTrainer: weights computed for {raw.shape[0]} sequences, the micro-batch has "
                               f"{mask.shape[0]}: micro-batches out of order")
        mass, count = self._step_mass
        return raw, objectives.self_normalized_mean(raw, mask, self.iw.reduction, mass=mass, count=count)

    def _multiplicity(self, inputs, weights) -> torch.Tensor:
        """The quality multiplicity the loss multiplies in (quality_mode weight), shaped to broadcast
        against `weights`; 1 otherwise."""
        if not (self.iw.uses_quality and self.iw.quality_mode == "weight"):
            return torch.ones((), dtype=weights.dtype, device=weights.device)
        sample_weight = inputs.get("sample_weight")
        if sample_weight is None:
            raise ValueError("quality_mode='weight' needs a sample_weight column (the multiplicity)")
        return sample_weight[:, None] if weights.dim() == 2 else sample_weight


def per_step_moments(window: list[dict]) -> dict:
    """weight_mean, weight_std and ess of each optimizer step (its micro-batches' moments summed), averaged
    over the window's steps; {} when no row has weights. One micro-batch per step: exactly the mean of the
    micro-batches' own values."""
    steps: dict[int, list[float]] = {}
    for row in window:
        if MOMENTS in row:
            step, *moments = row[MOMENTS]
            steps[step] = [a + b for a, b in zip(steps.get(step, [0, 0.0, 0.0]), moments)]
    found = [objectives.moment_diagnostics(*moments) for moments in steps.values()]
    return {key: float(np.mean([row[key] for row in found])) for key in found[0]} if found else {}


def window_logs(window: list[dict], micro_batches_per_step: int) -> dict:
    """One log entry from the window's rows (one per micro-batch): per-step moments as above, max / min
    over the window, empty completions summed, the rest averaged. micro_batches_per_step (gradient
    accumulation x processes): each micro-batch's sft_equivalent_loss holds its share of the step's, like
    HF's `loss`."""
    per_step = per_step_moments(window)
    logs = {}
    for key in window[0]:
        values = [row[key] for row in window]
        if key == MOMENTS:
            continue
        if key in per_step:
            logs[key] = per_step[key]
        elif key == "weight_max":
            logs[key] = max(values)
        elif key == "weight_min":
            logs[key] = min(values)
        elif key == "empty_completions":
            logs[key] = int(sum(values))
        elif key == "sft_equivalent_loss":
            logs[key] = float(np.mean(values)) * micro_batches_per_step
        else:
            logs[key] = float(np.mean(values))
    return logs
