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
Re-running skips the experiments that finished (their names are in `dvc exp show`), waits for
those still queued or running, and re-queues failed ones: an interrupted study resumes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from iwsft.config.loading import read_yaml
from iwsft.config.schema import Params
from iwsft.errors import UserError
from iwsft.methods import METHODS, evaluate_stage, pipeline_methods

CONFIG = Path("configs/study.yaml")
PREFIX = "study-"
SEED_TARGET = "report"  # the seed runs stop before `register`: a study registers nothing


@dataclass(frozen=True)
class Ablation:
    param: str  # a dotted params.yaml key, e.g. train.temp
    values: tuple  # the values tried instead of params.yaml's
    methods: tuple[str, ...]  # retrained and evaluated with each value


@dataclass(frozen=True)
class StudyConfig:
    seeds: tuple[int, ...]
    jobs: int
    ablations: tuple[Ablation, ...] = ()
    source: str = str(CONFIG)


@dataclass(frozen=True)
class Experiment:
    name: str
    seed: int
    overrides: dict = field(hash=False)  # params.yaml key -> value (`dvc exp run -S key=value`)
    targets: tuple[str, ...]
    ablation: Ablation | None = None
    value: object = None  # the ablated knob's value

    def set_params(self) -> list[str]:
        # JSON is YAML for scalars, which is how DVC reads -S values: 0.5, true, "sequence"
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


def load_config(path: str | Path, params: Params) -> StudyConfig:
    """configs/study.yaml, checked against params.yaml: every ablated key exists there, every
    ablation method is one the pipeline runs, seeds are distinct integers."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such study file (configs/study.yaml is the default)")
    raw = read_yaml(path)  # a key given twice, or a list instead of a mapping: a UserError naming the file
    unknown = set(raw) - {"seeds", "jobs", "ablations"}
    if unknown:
        raise UserError(f"{path}: unknown keys {sorted(unknown)} (seeds, jobs, ablations)")
    seeds = raw.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise UserError(f"{path}: seeds must be a non-empty list of distinct integers, got {seeds!r}")
    jobs = raw.get("jobs", 1)
    if not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"{path}: jobs must be an integer >= 1, got {jobs!r}")
    methods = pipeline_methods(params)
    ablations = []
    for number, entry in enumerate(raw.get("ablations") or [], start=1):
        where = f"{path}: ablations entry {number}"
        if not isinstance(entry, dict) or set(entry) - {"param", "values", "methods"} or "param" not in entry:
            raise UserError(f"{where}: needs `param` and `values` (and optional `methods`), got {entry!r}")
        try:
            default = lookup(params, entry["param"])
        except KeyError:
            raise UserError(f"{where}: params.yaml has no key {entry['param']!r}") from None
        values = entry.get("values")
        if not isinstance(values, list) or not values or default in values:
            raise UserError(f"{where}: values must be a non-empty list without params.yaml's own value "
                            f"({entry['param']} = {default!r}: the seed runs already have it), got {values!r}")
        wrong = [v for v in values if not _same_kind(v, default)]
        if wrong:  # e.g. 1.0e9, which YAML reads as a string (write 1.0e+9)
            raise UserError(f"{where}: {entry['param']} is a {type(default).__name__} in params.yaml, but values "
                            f"{wrong!r} are not (YAML reads 1.0e9 as text: write 1.0e+9)")
        # default: the importance-weighted methods, whose knobs these are
        chosen = tuple(entry.get("methods") or [m for m in methods if METHODS[m].importance_weighted] or methods)
        missing = [m for m in chosen if m not in methods]
        if missing:
            raise UserError(f"{where}: methods {missing} are not in params.yaml's methods {list(methods)}")
        ablations.append(Ablation(entry["param"], tuple(values), chosen))
    return StudyConfig(tuple(seeds), jobs, tuple(ablations), str(path))


def _same_kind(value, default) -> bool:
    """A value may replace `default`: the same type, or an int where params.yaml has a float."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return type(value) is type(default) or default is None


def _slug(value) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value).lower()
    return re.sub(r"[^A-Za-z0-9_-]", "", text.replace(".", "p").replace("+", ""))


def seed_name(seed: int) -> str:
    return f"{PREFIX}s{seed}"


def ablation_name(seed: int, ablation: Ablation, value) -> str:
    return f"{seed_name(seed)}-{ablation.param.split('.')[-1]}-{_slug(value)}"


def plan(config: StudyConfig) -> list[Experiment]:
    """Seed runs first, then each seed's ablations: with `jobs` workers taking the queue in order, an
    ablation usually starts after its seed's run has filled the run cache it restores from."""
    seed_runs = [Experiment(seed_name(s), s, {"seed": s}, (SEED_TARGET,)) for s in config.seeds]
    ablated = [
        Experiment(ablation_name(s, a, v), s, {"seed": s, a.param: v}, tuple(evaluate_stage(m) for m in a.methods), a, v)
        for s in config.seeds for a in config.ablations for v in a.values
    ]
    names = [e.name for e in seed_runs + ablated]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise UserError(f"{config.source}: two ablation values give the same experiment name {clashes}")
    return seed_runs + ablated


def matches(experiment: Experiment, params: dict) -> bool:
    """Whether a finished experiment's params.yaml has this plan's overrides (a name reused for
    another setting is stale, not finished)."""
    try:
        return all(lookup(params, key) == value for key, value in experiment.overrides.items())
    except KeyError:
        return False

