"""Mixed-quality datasets from scripted controllers with per-episode Gaussian action noise
(CONTROL_FEASIBILITY.md §3b): noise levels from none to uniform-random, so that episode returns
spread from poor to near the controller's best. Noise is added in [-1, 1] action units and clipped;
the executed (noisy) action is recorded."""

from __future__ import annotations

import math

import numpy as np

from iwsft.control.envs import from_unit, make_env, to_unit

RANDOM = "random"


def pendulum(obs, env) -> np.ndarray:
    """Energy pumping u = 2(5 - E) thetadot with E = thetadot^2/6 + 5 cos(theta), PD near upright."""
    cos, sin, speed = (float(x) for x in obs)
    if cos > 0.85:
        u = -(12.0 * math.atan2(sin, cos) + 2.5 * speed)
    else:
        u = 2.0 * (5.0 - (speed * speed / 6.0 + 5.0 * cos)) * speed
    return np.array([np.clip(u / 2.0, -1.0, 1.0)])  # max torque 2


def lunar_lander(obs, env) -> np.ndarray:
    from gymnasium.envs.box2d.lunar_lander import heuristic

    return np.asarray(heuristic(env.unwrapped, obs), dtype=np.float64)


CONTROLLERS = {"Pendulum-v1": pendulum, "LunarLanderContinuous-v3": lunar_lander}


def generate(env_id: str, noise_levels, episodes_per_level: int, seed: int) -> dict[str, np.ndarray]:
    """The dataset arrays (see iwsft.control's layout) of len(noise_levels) * episodes_per_level episodes."""
    if env_id not in CONTROLLERS:
        raise ValueError(f"no scripted controller for {env_id}: choose one of {sorted(CONTROLLERS)}")
    controller = CONTROLLERS[env_id]
    env = make_env(env_id)
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    rng = np.random.default_rng(seed)
    columns = {name: [] for name in ("observations", "actions", "rewards", "terminations", "truncations")}
    episode = 0
    for level in noise_levels:
        for _ in range(episodes_per_level):
            obs, _ = env.reset(seed=seed * 100_000 + episode)
            episode += 1
            done = False
            while not done:
                if level == RANDOM:
                    unit = rng.uniform(-1.0, 1.0, size=low.shape)
                else:
                    base = to_unit(from_unit(controller(obs, env), low, high), low, high)
                    unit = np.clip(base + float(level) * rng.standard_normal(low.shape), -1.0, 1.0)
                action = from_unit(unit, low, high)
                next_obs, reward, terminated, truncated, _ = env.step(action.astype(np.float32))
                done = terminated or truncated
                for name, value in zip(columns, (obs, action, reward, terminated, truncated and not terminated)):
                    columns[name].append(value)
                obs = next_obs
    env.close()
    return {
        "observations": np.asarray(columns["observations"], dtype=np.float32),
        "actions": np.asarray(columns["actions"], dtype=np.float32),
        "rewards": np.asarray(columns["rewards"], dtype=np.float32),
        "terminations": np.asarray(columns["terminations"], dtype=bool),
        "truncations": np.asarray(columns["truncations"], dtype=bool),
    }
