"""Preflight: what a stage would refuse at its start, checked before `iwsft run` or a Prefect flow
starts the first one, so that a typo costs seconds, not the minutes of the stages before it (and not
the outputs DVC deletes before it runs a stage).

Checked, every problem in one UserError:
- model.base: a local directory (or a hub id already in the local Hugging Face cache) whose
  config.json loads (transformers' AutoConfig: the config only, never the weights), unless a stage
  of this run writes it (the demo's prepare);
- runtime.device: cuda only when torch sees a GPU; train.precision: fp16 only on a GPU (torch is
  imported only for these two);
- task.scorer / task.extractor (the custom task): they import and are callable;
- model.chat_template (a Jinja file) and launch.config_file (with several processes) exist;
- every file a planned stage depends on (curate.raw, curate.eval_prompts, sample.prompts, ...)
  exists or is written by a stage of this run: data/sample/raw.jsonl, which generate/dvc.yaml's
  sample stage writes, is not demanded. DVC would otherwise stop at that stage with a bare
  "[Errno 2] No such file or directory".

Not checked here (each stage checks it at its start, and it is not cheap or not knowable before):
the records of the data files (`iwsft validate raw FILE` does that), an adapter directory's base.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from iwsft.errors import UserError

if TYPE_CHECKING:
    from iwsft.config.schema import Params

# the params that name a file or folder a stage reads, for messages ("curate.raw: ... does not exist")
# sample.policy first: when it is model.base (the default), the path is named model.base, which _model checks
PATH_PARAMS = ("sample.policy", "model.base", "curate.raw", "curate.eval_prompts", "sample.prompts")


@dataclass(frozen=True)
class Plan:
    """What `dvc repro [target]` would run (flows.dag.Dag has the same two fields, and is passed as one)."""

    deps: dict[str, tuple[str, ...]]  # planned stage -> its dependency paths, relative to the root
    outs: tuple[str, ...]  # every output of the planned stages, relative to the root


def writes(planned: Plan, path: str) -> bool:
    """Whether a planned stage writes `path`, a folder holding it, or something in it (report depends
    on data/evaluate, whose subfolders the evaluate stages write)."""
    path = os.path.normpath(path)
    return any(path == out or path.startswith(out + os.sep) or out.startswith(path + os.sep) for out in planned.outs)


def plan(root, target: str | None = None) -> Plan:
    """Plan like `dvc repro [target]`, from DVC's own graph (its Python API: ~1 s, no stage runs)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    root = Path(root).resolve()
    try:
        with contextlib.chdir(root), Repo(str(root)) as repo:
            stages = [stage for stage in plan_repro(get_active_graph(repo.index.graph),
                                                    collect_stages(repo, [target or "dvc.yaml"])) if stage.cmd]
            relative = lambda item: os.path.relpath(item.fs_path, repo.root_dir)  # noqa: E731
            return Plan({stage.addressing: tuple(map(relative, stage.deps)) for stage in stages},
                        tuple(relative(out) for stage in stages for out in stage.outs))
    except DvcException as error:  # no dvc.yaml, a broken one, not a DVC project: what `dvc repro` would say
        raise UserError(f"DVC cannot plan the run in {root}: {error}") from None


def check(params: Params, root, planned: Plan) -> None:
    """UserError listing every problem (see the module's docstring); None when there is none."""
    root = Path(root)
    found = [*_model(params, root, planned), *_device(params), *_task(params, root), *_files(params, root),
             *_missing_deps(params, root, planned)]
    if found:
        raise UserError(f"preflight: {len(found)} problem{'s' * (len(found) > 1)} found before any stage ran "
                        f"(nothing was run or deleted):\n  " + "\n  ".join(found))


def _at(root: Path, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else root / path


def _model(params: Params, root: Path, planned: Plan) -> list[str]:
    from iwsft.model.adapters import is_adapter_directory
    from iwsft.model.tokenizer import resolve_model_dir

    base = params.model.base
    if writes(planned, base):
        return []  # a stage of this run makes it (the demo's pi_ref)
    local = _at(root, base)
    try:
        directory = resolve_model_dir(local if local.is_dir() else base)
    except UserError as error:
        return [f"model.base: {error}"]
    shown = base if local.is_dir() else directory  # as params.yaml writes it; a hub id's snapshot in the cache
    if is_adapter_directory(directory):
        return []  # its base is found and hashed when it loads: not cheap, left to the stage
    if not (directory / "config.json").is_file():
        return [f"model.base: {shown} has no config.json (not a Hugging Face model directory)"]
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(directory, trust_remote_code=params.model.trust_remote_code, local_files_only=True)
    except Exception as error:  # noqa: BLE001 - whatever stops the config stops the stage: the user's to fix
        why = str(error).replace(str(directory / "config.json"), "it")
        return [f"model.base: {shown}/config.json does not load ({type(error).__name__}: {why})"]
    return []


def _device(params: Params) -> list[str]:
    if params.runtime.device != "cuda" and params.train.precision != "fp16":
        return []  # auto and cpu are always possible: no torch import
    from iwsft.model.devices import device_and_dtype, training_precision

    try:
        device, dtype = device_and_dtype(params)
        training_precision(params, device, dtype)
    except UserError as error:
        return [str(error)]
    return []


def _task(params: Params, root: Path) -> list[str]:
    if params.task.name != "custom":
        return []
    from iwsft.tasks.custom import load_callable

    found = []
    with contextlib.chdir(root):  # a scoring.py next to params.yaml imports, as it does in the stage
        for key in ("scorer", "extractor"):
            path = getattr(params.task, key)
            if path is None:
                continue
            try:
                load_callable(path, key)
            except UserError as error:
                found.append(str(error))
    return found


def _files(params: Params, root: Path) -> list[str]:
    found = []
    template = params.model.chat_template
    if template not in ("auto", "none") and not _at(root, template).is_file():
        found.append(f"model.chat_template: {template} is not a file (auto, none, or a Jinja file)")
    config_file = params.launch.config_file
    if params.launch.num_processes > 1 and config_file and not _at(root, config_file).is_file():
        found.append(f"launch.config_file: {config_file} does not exist (configs/accelerate/ has examples)")
    return found


def _missing_deps(params: Params, root: Path, planned: Plan) -> list[str]:
    """Each path a planned stage needs that is neither there nor written by a stage of this run,
    named by the param that names it; model.base is _model's."""
    named = {os.path.normpath(_value(params, key)): key for key in PATH_PARAMS}
    needed: dict[str, list[str]] = {}
    for stage, deps in planned.deps.items():
        for dep in deps:
            if named.get(dep) != "model.base" and not writes(planned, dep) and not _at(root, dep).exists():
                needed.setdefault(dep, []).append(stage)
    return [f"{named[dep] + ': ' if dep in named else ''}{dep} does not exist, and no stage of this run writes it "
            f"(needed by {', '.join(stages)})" for dep, stages in needed.items()]


def _value(params: Params, dotted: str) -> str:
    section, key = dotted.split(".")
    return getattr(getattr(params, section), key)
