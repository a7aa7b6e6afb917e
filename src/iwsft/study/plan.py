"""The study: the whole DAG over several seeds, and one-knob-at-a-time ablations, as DVC experiments.

A single run ranks the methods on one seed, but pi_ref's seed-to-seed spread is larger than the
SFT / iw-SFT difference (DEMO_FEASIBILITY.md), so a claim needs seeds. `iwsft study` plans the
experiments configs/study.yaml describes, queues the missing ones with `dvc exp run --queue`, runs
them with `dvc queue start -j JOBS`, and writes reports/study.md from `dvc exp show --json`
(iwsft.study.queue does the DVC part, iwsft.study.report the statistics and the report).

Each experiment is a named DVC experiment of the current commit:
  study-s3                 seed 3, the DAG up to `report` (every method and pi_ref evaluated)
  study-s3-temp-0p5        seed 3 with train.temp=0.5, only the ablation's methods retrained and
                           evaluated; everything upstream comes back from DVC's run cache
  study-teacher-s3         with `regimes:` in the study file, each regime's runs carry its name
  study-teacher-s3-temp-2  (iwsft.study.regimes): seed 3 with the teacher regime's keys, and so on
An ablation runs in the regimes it names (all by default); its effect is paired with the same seed's
run of the same regime.
Re-running skips the experiments that finished (their names are in `dvc exp show`), waits for
those still queued or running, and re-queues failed ones: an interrupted study resumes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import BaseModel

from iwsft.config.loading import PROFILES, merge, read_yaml
from iwsft.config.schema import Params, check
from iwsft.errors import UserError
from iwsft.methods import METHODS, evaluate_stage, pipeline_methods
from iwsft.study.regimes import NO_REGIME, Regime, load_regimes, nested, same_kind

CONFIG = Path("configs/study.yaml")
PREFIX = "study-"
SEED_TARGET = "report"  # the seed runs stop before `register`: a study registers nothing
KEYS = ("seeds", "jobs", "methods", "regimes", "ablations")


@dataclass(frozen=True)
class Ablation:
    param: str  # a dotted params.yaml key, e.g. train.temp
    values: tuple  # the values tried instead of the regime's (params.yaml's unless the regime sets it)
    methods: tuple[str, ...]  # retrained and evaluated with each value
    regimes: tuple[str, ...] = ("",)  # the regimes it runs in


@dataclass(frozen=True)
class StudyConfig:
    seeds: tuple[int, ...]
    jobs: int
    ablations: tuple[Ablation, ...] = ()
    source: str = str(CONFIG)
    regimes: tuple[Regime, ...] = (NO_REGIME,)
    methods: tuple[str, ...] = ()  # the study file's `methods:` where it differs from params.yaml's; () otherwise


@dataclass(frozen=True)
class Experiment:
    name: str
    seed: int
    overrides: dict = field(hash=False)  # params.yaml key -> value (`dvc exp run -S key=value`)
    targets: tuple[str, ...]
    ablation: Ablation | None = None
    value: object = None  # the ablated knob's value
    regime: str = ""

    def set_params(self) -> list[str]:
        # JSON is YAML for scalars and lists, which is how DVC (Hydra) reads -S values: 0.5, true, "sequence", ["sft"]
        return [f"{key}={json.dumps(value)}" for key, value in self.overrides.items()]


def lookup(params: Params | dict, dotted: str):
    """The value of a dotted key, e.g. 'train.temp': in the typed Params (a key params.yaml writes,
    not one the schema's default fills in: `dvc exp run -S` can only set a written key), or in a
    params.yaml document as `dvc exp show` reports it. KeyError naming the key when it is not there."""
    node = params
    for part in dotted.split("."):
        if isinstance(node, BaseModel) and part in node.model_fields_set:
            node = getattr(node, part)
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(dotted)
    return node


def default(regime: Regime, params: Params | dict, dotted: str):
    """A knob's value in the regime's runs before any ablation: the regime's, else params.yaml's."""
    return regime.overrides[dotted] if dotted in regime.overrides else lookup(params, dotted)


def study_methods(config: StudyConfig, params: Params) -> tuple[str, ...]:
    """The methods every run of the study trains: the study file's `methods:`, else params.yaml's."""
    return config.methods or pipeline_methods(params)


def load_config(path: str | Path, params: Params, written: dict | None = None,
                profiles_dir: Path = PROFILES) -> StudyConfig:
    """configs/study.yaml, checked against params.yaml (`written`: the file as written; by default what
    the typed `params` read from it): every regime and ablated key exists there, every method is one
    the schema knows, every ablation method one the study runs, seeds are distinct integers."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such study file (configs/study.yaml is the default)")
    raw = read_yaml(path)  # a key given twice, or a list instead of a mapping: a UserError naming the file
    written = params.model_dump(exclude_unset=True) if written is None else written
    unknown = set(raw) - set(KEYS)
    if unknown:
        raise UserError(f"{path}: unknown keys {sorted(unknown)} ({', '.join(KEYS)})")
    seeds = raw.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise UserError(f"{path}: seeds must be a non-empty list of distinct integers, got {seeds!r}")
    jobs = raw.get("jobs", 1)
    if not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"{path}: jobs must be an integer >= 1, got {jobs!r}")
    methods = raw.get("methods")
    if methods is not None:
        if not isinstance(methods, list) or not methods or len(set(methods)) != len(methods):
            raise UserError(f"{path}: methods must be a non-empty list of distinct method names, got {methods!r}")
        check({**written, "methods": methods}, f"{path}: methods")  # names the unknown method
    methods = () if methods is None or tuple(methods) == pipeline_methods(params) else tuple(methods)
    regimes = load_regimes(raw.get("regimes"), written, tuple(seeds), str(path), profiles_dir)
    config = StudyConfig(tuple(seeds), jobs, (), str(path), regimes, methods)
    ablations = tuple(_ablation(entry, f"{path}: ablations entry {number}", config, params, written)
                      for number, entry in enumerate(raw.get("ablations") or [], start=1))
    return replace(config, ablations=ablations)


def _ablation(entry, where: str, config: StudyConfig, params: Params, written: dict) -> Ablation:
    if not isinstance(entry, dict) or set(entry) - {"param", "values", "methods", "regimes"} or "param" not in entry:
        raise UserError(f"{where}: needs `param` and `values` (and optional `methods`, `regimes`), got {entry!r}")
    param, values = entry["param"], entry.get("values")
    named = {r.name: r for r in config.regimes}
    chosen = entry.get("regimes") or list(named)
    if not isinstance(chosen, list):
        raise UserError(f"{where}: regimes must be a list of the study's regime names, got {chosen!r}")
    unknown = [name for name in chosen if name not in named]
    if unknown:
        raise UserError(f"{where}: regimes {unknown} are not the study's regimes {[n for n in named if n]}")
    if not isinstance(values, list) or not values:
        raise UserError(f"{where}: values must be a non-empty list, got {values!r}")
    methods = study_methods(config, params)
    # default: the importance-weighted methods, whose knobs these are
    picked = tuple(entry.get("methods") or [m for m in methods if METHODS[m].importance_weighted] or methods)
    missing = [m for m in picked if m not in methods]
    if missing:
        raise UserError(f"{where}: methods {missing} are not in the study's methods {list(methods)}")
    for name in chosen:
        regime = named[name]
        try:
            own = default(regime, written, param)
        except KeyError:
            raise UserError(f"{where}: params.yaml has no key {param!r} (`dvc exp run -S` can only set a key "
                            "params.yaml writes)") from None
        whose = f"regime {name}'s" if name else "params.yaml's"
        if own in values:
            raise UserError(f"{where}: values must not hold {whose} own value ({param} = {own!r}: its seed runs "
                            f"already have it), got {values!r}")
        wrong = [v for v in values if not same_kind(v, own)]
        if wrong:  # e.g. 1.0e9, which YAML reads as a string (write 1.0e+9)
            raise UserError(f"{where}: {param} is a {type(own).__name__} in params.yaml, but values "
                            f"{wrong!r} are not (YAML reads 1.0e9 as text: write 1.0e+9)")
        for value in values:  # e.g. reference.policy: sampler with the online reference: refused now, not queued
            check(merge(written, nested({**regime.overrides, param: value})), f"{where} ({param} = {value!r}"
                  + (f" in regime {name})" if name else ")"))
    return Ablation(param, tuple(values), picked, tuple(chosen))


def _slug(value) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value).lower()
    return re.sub(r"[^A-Za-z0-9_-]", "", text.replace(".", "p").replace("+", ""))


def seed_name(seed: int, regime: str = "") -> str:
    return f"{PREFIX}{regime}{'-' if regime else ''}s{seed}"


def ablation_name(seed: int, ablation: Ablation, value, regime: str = "") -> str:
    return f"{seed_name(seed, regime)}-{ablation.param.split('.')[-1]}-{_slug(value)}"


def regime_seeds(config: StudyConfig, regime: Regime) -> tuple[int, ...]:
    """The study's seeds (the file's, or --seeds) that this regime runs on."""
    return tuple(s for s in config.seeds if regime.seeds is None or s in regime.seeds)


def _overrides(config: StudyConfig, regime: Regime, seed: int, ablated: dict | None = None) -> dict:
    return {"seed": seed, **({"methods": list(config.methods)} if config.methods else {}),
            **regime.overrides, **(ablated or {})}


def plan(config: StudyConfig) -> list[Experiment]:
    """Seed runs first, regime by regime (a teacher run then finds pi_ref's pretraining of the same
    seed in the run cache), then each regime's and seed's ablations: with `jobs` workers taking the
    queue in order, an ablation usually starts after its seed's run has filled the run cache."""
    seed_runs = [Experiment(seed_name(s, r.name), s, _overrides(config, r, s), (SEED_TARGET,), regime=r.name)
                 for r in config.regimes for s in regime_seeds(config, r)]
    ablated = [
        Experiment(ablation_name(s, a, v, r.name), s, _overrides(config, r, s, {a.param: v}),
                   tuple(evaluate_stage(m) for m in a.methods), a, v, r.name)
        for r in config.regimes for s in regime_seeds(config, r)
        for a in config.ablations if r.name in a.regimes for v in a.values
    ]
    names = [e.name for e in seed_runs + ablated]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise UserError(f"{config.source}: two regimes or ablation values give the same experiment name {clashes}")
    return seed_runs + ablated


def matches(experiment: Experiment, params: dict) -> bool:
    """Whether a finished experiment's params.yaml has this plan's overrides (a name reused for
    another setting is stale, not finished)."""
    try:
        return all(lookup(params, key) == value for key, value in experiment.overrides.items())
    except KeyError:
        return False
