"""The policy of the paper's control code (PAPER.md §5.3), written here: mu(s) = tanh(MLP(s)), a
state-independent log-std clamped to [-5, 2], log pi(a|s) summed over action dims. Observations are
z-normalised with the dataset's statistics (held as buffers, so a saved policy carries them).
Saved as safetensors + a JSON of its shape; never pickled."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
ACTION_CLIP = 0.999  # dataset actions at exactly +-1 would be the tanh mean's asymptote


class TanhGaussianPolicy(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, depth: int = 3):
        super().__init__()
        layers, width = [], obs_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, act_dim))
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.shape = {"obs_dim": obs_dim, "act_dim": act_dim, "hidden": hidden, "depth": depth}

    def set_normalisation(self, observations) -> None:
        obs = torch.as_tensor(observations, dtype=torch.float32)
        self.obs_mean.copy_(obs.mean(0))
        self.obs_std.copy_(obs.std(0).clamp(min=1e-6))

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net((obs - self.obs_mean) / self.obs_std))

    def std(self) -> torch.Tensor:
        return self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s), summed over action dims; obs [..., d], actions [..., a] in [-1, 1] -> [...]."""
        dist = torch.distributions.Normal(self.mean(obs), self.std())
        return dist.log_prob(actions.clamp(-ACTION_CLIP, ACTION_CLIP)).sum(-1)

    @torch.no_grad()
    def act(self, obs) -> "torch.Tensor":
        """The deterministic (mean) action in [-1, 1] for one observation, as numpy."""
        return self.mean(torch.as_tensor(obs, dtype=torch.float32)).numpy()


@torch.no_grad()
def ema_update(q: nn.Module, policy: nn.Module, decay: float) -> None:
    """theta_q <- decay * theta_q + (1 - decay) * theta (the paper's lagged q)."""
    for target, source in zip(q.parameters(), policy.parameters()):
        target.mul_(decay).add_(source.detach(), alpha=1.0 - decay)


def frozen_copy(policy: nn.Module) -> nn.Module:
    twin = copy.deepcopy(policy)
    twin.requires_grad_(False)
    return twin


def save(policy: TanhGaussianPolicy, path: str | Path) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in policy.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps(policy.shape) + "\n")


def load(path: str | Path) -> TanhGaussianPolicy:
    from safetensors.torch import load_file

    path = Path(path)
    policy = TanhGaussianPolicy(**json.loads(path.with_suffix(".json").read_text()))
    policy.load_state_dict(load_file(str(path)))
    return policy
