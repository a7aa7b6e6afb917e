"""The environments, their action scaling and deterministic evaluation rollouts.

Policies act in a normalised action space [-1, 1]^a; datasets store actions in the env's units.
"""

from __future__ import annotations

import warnings

import numpy as np

# env id -> episode cap used for data and evaluation (HalfCheetah: 250 steps -> ~200 episodes of SAC data)
MAX_STEPS = {"Pendulum-v1": 200, "LunarLanderContinuous-v3": 1000, "HalfCheetah-v5": 250}


def make_env(env_id: str):
    import gymnasium as gym

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gym.make(env_id, max_episode_steps=MAX_STEPS.get(env_id))


def spaces(env_id: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(obs_dim, action low, action high) of env_id."""
    env = make_env(env_id)
    try:
        return int(np.prod(env.observation_space.shape)), env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    finally:
        env.close()


def to_unit(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Env units -> [-1, 1]."""
    return 2.0 * (np.asarray(actions, dtype=np.float64) - low) / (high - low) - 1.0


def from_unit(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """[-1, 1] -> env units."""
    return low + (np.clip(actions, -1.0, 1.0) + 1.0) * 0.5 * (high - low)


def rollout_returns(env_id: str, act, seeds) -> list[float]:
    """Undiscounted return of one episode per seed; act(obs) -> action in [-1, 1] (None: uniform random)."""
    env = make_env(env_id)
    low, high = env.action_space.low, env.action_space.high
    rng = np.random.default_rng(0)
    returns = []
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=int(seed))
            total, done = 0.0, False
            while not done:
                unit = rng.uniform(-1, 1, size=low.shape) if act is None else act(obs)
                obs, reward, terminated, truncated, _ = env.step(from_unit(unit, low, high).astype(np.float32))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return returns
