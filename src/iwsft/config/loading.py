"""params.yaml: read once and checked (iwsft.config.schema), with the micro and other profiles layered on top."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from iwsft.errors import UserError

if TYPE_CHECKING:
    from iwsft.config.schema import Params

PROFILES = Path("profiles")
PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # a file name in profiles/, never a path


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {error}") from None
    return data if data is not None else {}


def load_params(path: str | Path = "params.yaml", check: bool = True) -> Params | dict:
    """The typed Params (iwsft.config.schema) of a params file; with check=False the raw mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run iwsft from the project root (where dvc.yaml is)")
    params = read_yaml(path)
    if check:
        from iwsft.config.schema import check as check_settings

        return check_settings(params, str(path))
    return params


def merge(base: dict, overrides: dict) -> dict:
    """Deep merge: nested sections are merged key by key, everything else replaced."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def profile_path(name: str, profiles_dir: Path = PROFILES) -> Path:
    """profiles/NAME.yaml for a known profile name; UserError otherwise (no paths: `../x` is refused)."""
    known = sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))
    if not PROFILE_NAME.match(name or "") or name not in known:
        raise UserError(f"no profile {name!r}; known profiles: {', '.join(known) or 'none'} (files in {profiles_dir}/)")
    return Path(profiles_dir) / f"{name}.yaml"


def layer(base: dict, profile: dict, source: str) -> dict:
    """base with a profile on top. A profile's `replace: [section, ...]` drops those sections of base
    first, so that the profile's own section is the whole of it: a task of another kind must not
    inherit the demo's chain_sum knobs (they would be errors for it), nor a model its paths."""
    profile = dict(profile)
    replaced = profile.pop("replace", [])
    if not isinstance(replaced, list) or not all(isinstance(key, str) for key in replaced):
        raise UserError(f"{source}: replace must be a list of section names, got {replaced!r}")
    missing = [key for key in replaced if key not in profile]
    if missing:
        raise UserError(f"{source}: replace names {missing}, which the profile does not define")
    return merge({key: value for key, value in base.items() if key not in replaced}, profile)


def layered(name: str, base: dict, profiles_dir: Path = PROFILES, chain: tuple[str, ...] = ()) -> dict:
    """base with profiles/NAME.yaml on top; a profile's `extends: OTHER` layers OTHER first (the
    smoke-sized smollm2-smoke extends smollm2, and says only what it shrinks)."""
    if name in chain:
        raise UserError(f"profiles: {' -> '.join(chain + (name,))} extends itself")
    path = profile_path(name, profiles_dir)
    profile = dict(read_yaml(path))
    parent = profile.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise UserError(f"{path}: extends must be a profile name, got {parent!r}")
        base = layered(parent, base, profiles_dir, chain + (name,))
    return layer(base, profile, str(path))


def profiled(name: str, params_path: str | Path = "params.yaml", profiles_dir: Path = PROFILES) -> Params:
    """params.yaml with profiles/NAME.yaml's keys on top, checked; nothing is written."""
    from iwsft.config.schema import check as check_settings

    merged = layered(name, load_params(params_path, check=False), profiles_dir)
    return check_settings(merged, f"{params_path} + {profile_path(name, profiles_dir)}")


def apply_profile(name: str, params_path: str | Path = "params.yaml", profiles_dir: Path = PROFILES) -> Params:
    """Write params.yaml with profiles/NAME.yaml's keys on top, atomically (comments are not kept);
    returns the typed Params it checked."""
    from iwsft.io.durable import write_text_atomic

    from iwsft.config.schema import check as check_settings

    merged = layered(name, load_params(params_path, check=False), profiles_dir)
    checked = check_settings(merged, f"{params_path} + {profile_path(name, profiles_dir)}")
    write_text_atomic(params_path, yaml.safe_dump(merged, sort_keys=False))  # as written, not defaults filled in
    return checked
