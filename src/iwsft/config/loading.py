"""params.yaml: read once and checked (iwsft.config.schema), with the micro and other profiles layered on top.

Every YAML file a user writes for iwsft (params.yaml, profiles/*.yaml, control/params.yaml,
configs/study.yaml) is read by `read_yaml`: a key given twice is an error naming the key and both
lines (plain YAML keeps the last one silently: `seed: 0` ... `seed: 1` would run seed 1), and a
file that is not a mapping (a list, a scalar) is an error naming the file.
"""

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
MERGE_KEY = "tag:yaml.org,2002:merge"  # `<<: *defaults`: the keys it brings may be overridden, by design


class DuplicateKey(yaml.YAMLError):
    """A mapping names the same key twice."""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping, naming the key (dotted, from
    the top of the document) and both lines. Checked on the composed node tree, before any value is
    built, so that the message can say where the mapping sits."""

    def compose_document(self):
        node = super().compose_document()
        self._refuse_duplicates(node, (), set())
        return node

    def _refuse_duplicates(self, node, where: tuple[str, ...], seen_nodes: set[int]) -> None:
        if id(node) in seen_nodes:  # an alias: its node was checked where the anchor is
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._refuse_duplicates(item, (*where, f"[{index}]"), seen_nodes)
        elif isinstance(node, yaml.MappingNode):
            lines: dict[object, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == MERGE_KEY:
                    continue
                key = self._key(key_node)
                line = key_node.start_mark.line + 1
                if key is not None and key in lines:
                    dotted = ".".join((*where, str(key))).replace(".[", "[")
                    raise DuplicateKey(f"key {dotted!r} is given twice, on lines {lines[key]} and {line} (YAML would "
                                       f"keep the last one without a word): remove one")
                if key is not None:
                    lines[key] = line
                self._refuse_duplicates(value_node, (*where, str(key)), seen_nodes)

    def _key(self, node):
        """A scalar key as YAML reads it (`1` and `01`, `yes` and `true` are one key); None for a
        complex key, which is left to the constructor's own message."""
        if not isinstance(node, yaml.ScalarNode):
            return None
        try:
            key = self.construct_object(node)
            hash(key)
        except (yaml.YAMLError, TypeError):
            return None
        return key


def parse_yaml(stream):
    """A YAML document (text, or an open file: its name is in the messages) with UniqueKeyLoader:
    None for an empty one; DuplicateKey or another yaml.YAMLError when it is not valid."""
    return yaml.load(stream, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: Path) -> dict:
    """A YAML file that must hold a mapping (an empty file: {}); UserError naming the file otherwise."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as handle:
            data = parse_yaml(handle)
    except DuplicateKey as error:
        raise UserError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {error}") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of `key: value` lines at the top, got {_kind(data)}")
    return data


def _kind(value) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' * (len(value) != 1)} (lines starting with `- `)"
    return f"the {type(value).__name__} {value!r}"


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
