"""The four methods (iwsft.methods.CONTROL_METHODS; PAPER.md §5; CONTROL_FEASIBILITY.md §4), one torch
thread per process.

- bc:     pi_ref itself: BC on all episodes from scratch (the reference stage trains it once).
- bc10:   BC from scratch on the episodes with return >= the 90th percentile.
- sftq:   from pi_ref, episodes sampled with probability ~ multiplicity #{k: R >= p_k}.
- iwsftq: sftq's sampling plus the self-normalised trajectory weights of iwsft.control.losses,
          q an EMA of the policy updated before each loss (so at step 0, q = pi_ref and w is uniform).

BC batches draw `batch` (episode, timestep) pairs, episodes uniformly; SFT(Q) batches draw
`episodes` episodes x `timesteps` timesteps. Warmup (linear) then cosine to 0 for the fine-tunes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from iwsft.config.control import BehaviourCloning, FineTune
from iwsft.control import losses
from iwsft.control.dataset import Episodes
from iwsft.control.policy import TanhGaussianPolicy, ema_update, frozen_copy


def _sample(episodes: Episodes, rng: np.random.Generator, chosen: np.ndarray, timesteps: int) -> np.ndarray:
    """Row indices [len(chosen), timesteps]: uniform timesteps within each chosen episode."""
    offsets = (rng.random((len(chosen), timesteps)) * episodes.lengths[chosen, None]).astype(np.int64)
    return episodes.starts[chosen, None] + offsets


def behaviour_cloning(episodes: Episodes, keep: np.ndarray, settings: BehaviourCloning, seed: int) -> tuple[TanhGaussianPolicy, list[dict]]:
    """A fresh policy cloned on the episodes `keep` (indices)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    policy = TanhGaussianPolicy(episodes.observations.shape[1], episodes.actions.shape[1], settings.hidden, settings.depth)
    policy.set_normalisation(episodes.observations)  # statistics of all data, for every method alike
    optimiser = torch.optim.Adam(policy.parameters(), lr=settings.lr)
    obs, act = torch.from_numpy(episodes.observations), torch.from_numpy(episodes.actions)
    history = []
    for step in range(settings.steps):
        rows = torch.from_numpy(_sample(episodes, rng, rng.choice(keep, settings.batch), 1))
        loss = losses.bc_loss(policy.log_prob(obs[rows], act[rows]))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % settings.log_every == 0 or step == settings.steps - 1:
            history.append({"step": step, "loss": loss.item(), "log_std": policy.log_std.detach().mean().item()})
    return policy, history


def _schedule(optimiser, warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


def fine_tune(reference: TanhGaussianPolicy, episodes: Episodes, multiplicity: np.ndarray, reference_logp: np.ndarray,
              settings: FineTune, seed: int, weighted: bool) -> tuple[TanhGaussianPolicy, list[dict]]:
    """SFT(Q) (weighted=False) or iw-SFT(Q) from pi_ref; reference_logp [N] holds log pi_ref per row."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    policy = frozen_copy(reference).requires_grad_(True)
    q = frozen_copy(reference)
    probabilities = multiplicity / multiplicity.sum()
    optimiser = torch.optim.Adam(policy.parameters(), lr=settings.lr)
    scheduler = _schedule(optimiser, settings.warmup, settings.steps)
    obs, act = torch.from_numpy(episodes.observations), torch.from_numpy(episodes.actions)
    ref_logp = torch.from_numpy(reference_logp.astype(np.float32))
    history = []
    for step in range(settings.steps):
        chosen = rng.choice(len(probabilities), settings.episodes, p=probabilities)
        rows = torch.from_numpy(_sample(episodes, rng, chosen, settings.timesteps))
        logp = policy.log_prob(obs[rows], act[rows])
        record = {"step": step}
        if weighted:
            ema_update(q, policy, settings.ema_decay)  # before the loss: step 0 has q = pi_ref
            with torch.no_grad():
                q_logp = q.log_prob(obs[rows], act[rows])
            raw, normalised = losses.trajectory_weights(q_logp, ref_logp[rows], settings.temp, settings.w_max)
            loss = losses.iw_sft_loss(logp, normalised)
            if step % settings.log_every == 0 or step == settings.steps - 1:
                record.update(losses.diagnostics(raw, q_logp, ref_logp[rows], settings.w_max))
        else:
            loss = losses.bc_loss(logp)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        if step % settings.log_every == 0 or step == settings.steps - 1:
            history.append({**record, "loss": loss.item(), "log_std": policy.log_std.detach().mean().item()})
    return policy, history


@torch.no_grad()
def per_step_logp(policy: TanhGaussianPolicy, episodes: Episodes, chunk: int = 65536) -> np.ndarray:
    obs, act = torch.from_numpy(episodes.observations), torch.from_numpy(episodes.actions)
    return torch.cat([policy.log_prob(obs[i:i + chunk], act[i:i + chunk]) for i in range(0, len(obs), chunk)]).numpy()
