"""params.yaml: read once, with the micro and other profiles layered on top."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

PROFILES = Path("profiles")


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run iwsft from the project root (where dvc.yaml is)")
    return yaml.safe_load(path.read_text())


def merge(base: dict, overrides: dict) -> dict:
    """Deep merge: nested sections are merged key by key, everything else replaced."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_profile(name: str, params_path: str | Path = "params.yaml", profiles_dir: Path = PROFILES) -> dict:
    """Write params.yaml with profiles/NAME.yaml's keys on top (comments are not kept)."""
    profile = profiles_dir / f"{name}.yaml"
    if not profile.is_file():
        known = sorted(p.stem for p in profiles_dir.glob("*.yaml"))
        raise FileNotFoundError(f"no profile {name!r}; known profiles: {', '.join(known) or 'none'}")
    merged = merge(load_params(params_path), yaml.safe_load(profile.read_text()) or {})
    Path(params_path).write_text(yaml.safe_dump(merged, sort_keys=False))
    return merged
