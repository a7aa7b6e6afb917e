"""The study's data regimes: a regime is a name and the params.yaml keys that define it, set on each of
its experiments with `dvc exp run -S` like the seed (iwsft.study.plan).

    regimes:
      on-policy: {}                                  # params.yaml as it is: pi_ref samples its own data
      teacher: {profile: teacher}                    # profiles/teacher.yaml's keys over params.yaml
      teacher-small: {profile: teacher, params: {teacher.steps: 200}, seeds: [0]}

`profile` takes a profile's keys (its `extends` chain included), `params` adds keys of its own
(dotted, `train.temp: 2`, or nested), `seeds` runs the regime on some of the study's seeds only.
`dvc exp run -S` can only set a key params.yaml writes (a default the schema fills in is not in the
file, and Hydra refuses to set a key that is not there): a regime that needs any other key is refused
here, naming it, instead of failing in every queued experiment or, worse, running without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from iwsft.config.loading import PROFILES, layered, merge
from iwsft.config.schema import check
from iwsft.errors import UserError

NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")  # a piece of a DVC experiment name (a git ref): study-NAME-s3
KEYS = ("profile", "params", "seeds")
STUDY_KEYS = ("seed", "methods")  # the study file's seeds and methods set these, for every regime alike
MISSING = object()


@dataclass(frozen=True)
class Regime:
    name: str  # "" only for a study file without `regimes:` (experiments named study-s3, as before regimes)
    overrides: dict = field(default_factory=dict, hash=False)  # dotted params.yaml key -> value
    seeds: tuple[int, ...] | None = None  # None: every seed of the study
    profile: str | None = None

    def label(self) -> str:
        return self.name or "params.yaml"


NO_REGIME = Regime("")


def leaves(tree: dict, prefix: str = "") -> dict:
    """{"train": {"temp": 2}} -> {"train.temp": 2}; a list or an empty mapping is one value."""
    out = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(leaves(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def nested(overrides: dict) -> dict:
    """{"train.temp": 2} -> {"train": {"temp": 2}}, to merge over a params.yaml document."""
    tree: dict = {}
    for dotted, value in overrides.items():
        *path, last = dotted.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


def written_keys(document: dict) -> dict:
    """Every key params.yaml writes, with the sections that hold them: what `-S` can set."""
    keys = leaves(document)
    for dotted in list(keys):
        parts = dotted.split(".")
        for end in range(1, len(parts)):
            keys.setdefault(".".join(parts[:end]), MISSING)
    return keys


def _profile_overrides(name: str, written: dict, where: str, profiles_dir: Path) -> dict:
    """The keys a profile changes, as dotted key -> value; refused when one of them is not written in
    params.yaml, or when the profile drops a section (`replace:`), which `-S` cannot do."""
    profile = Path(name).stem if name.endswith(".yaml") else name  # profiles/teacher.yaml or teacher
    if name.endswith(".yaml") and Path(name).parent not in (PROFILES, Path(profiles_dir)):
        raise UserError(f"{where}: profile must be a profile name or a file in {profiles_dir}/, got {name!r}")
    try:
        merged = layered(profile, written, Path(profiles_dir))
    except UserError as error:
        raise UserError(f"{where}: {error}") from None
    before, after = leaves(written), leaves(merged)
    dropped = sorted(key for key in before if key not in after)
    if dropped:
        raise UserError(f"{where}: profile {profile} removes params.yaml keys {dropped[:5]} (its `replace:`), which "
                        "`dvc exp run -S` cannot do: use that profile with `iwsft profile`, not as a study regime")
    return {key: value for key, value in after.items() if before.get(key, MISSING) != value}


def _regime(name, entry, written: dict, seeds: tuple[int, ...], source: str, profiles_dir: Path) -> Regime:
    where = f"{source}: regime {name!r}"
    if not isinstance(name, str) or not NAME.match(name):
        raise UserError(f"{where}: a regime name is lower-case letters and digits joined by '-' (it is part of "
                        "each experiment's name, e.g. study-teacher-s3)")
    entry = {} if entry is None else entry
    if not isinstance(entry, dict) or set(entry) - set(KEYS):
        raise UserError(f"{where}: expected a mapping with {', '.join(KEYS)} (all optional), got {entry!r}")
    overrides = {}
    profile = entry.get("profile")
    if profile is not None:
        if not isinstance(profile, str):
            raise UserError(f"{where}: profile must be a profile name, got {profile!r}")
        overrides.update(_profile_overrides(profile, written, where, profiles_dir))
    own = entry.get("params") or {}
    if not isinstance(own, dict):
        raise UserError(f"{where}: params must be a mapping of params.yaml keys to values, got {own!r}")
    own = leaves(own)
    overrides.update(own)
    keys = written_keys(written)
    absent = sorted(key for key in overrides if key not in keys)
    if absent:
        where_from = "params" if any(key in own for key in absent) else f"profile {profile}"
        raise UserError(f"{where}: {where_from} sets {absent}, which params.yaml does not write; `dvc exp run -S` "
                        "can only set a key written in params.yaml: add it there (with its default and a comment)")
    sections = sorted(key for key in overrides if keys[key] is MISSING)
    if sections:
        raise UserError(f"{where}: {sections} are sections of params.yaml: set their keys one by one")
    wrong = sorted(key for key, value in overrides.items() if value is not None and not same_kind(value, keys[key]))
    if wrong:  # e.g. 1.0e9, which YAML reads as text
        raise UserError(f"{where}: {', '.join(f'{k} = {overrides[k]!r}' for k in wrong)} is not of the kind "
                        "params.yaml writes there (YAML reads 1.0e9 as text: write 1.0e+9)")
    overrides = {key: value for key, value in overrides.items() if keys[key] != value}  # -S only what changes
    clash = sorted(key for key in overrides if key.split(".")[0] in STUDY_KEYS)
    if clash:
        raise UserError(f"{where}: sets {clash}; the study file's `seeds` and `methods` set those for every regime")
    check(merge(written, nested(overrides)), where)  # a regime that is no valid params.yaml fails here, once
    chosen = entry.get("seeds")
    if chosen is not None:
        if not isinstance(chosen, list) or not chosen or any(s not in seeds for s in chosen) \
                or len(set(chosen)) != len(chosen):
            raise UserError(f"{where}: seeds must be a non-empty list of distinct seeds of the study {list(seeds)}, "
                            f"got {chosen!r}")
        chosen = tuple(chosen)
    return Regime(name, overrides, chosen, profile)


def load_regimes(raw, written: dict, seeds: tuple[int, ...], source: str,
                 profiles_dir: Path = PROFILES) -> tuple[Regime, ...]:
    """The study file's `regimes:` mapping, checked against params.yaml (`written`: the file as written,
    not the typed Params, whose defaults `-S` cannot reach); no mapping: one regime, params.yaml's."""
    if raw is None:
        return (NO_REGIME,)
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{source}: regimes must be a mapping of names to their settings, e.g. "
                        "{on-policy: {}, teacher: {profile: teacher}}, got {raw!r}")
    return tuple(_regime(name, entry, written, seeds, source, profiles_dir) for name, entry in raw.items())


def same_kind(value, default) -> bool:
    """A value may replace `default`: the same type, or an int where params.yaml has a float; any value
    where it has null."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return type(value) is type(default) or default is None
