"""control/dvc.yaml's code deps cover each stage's import closure (the language DAG's
test_dvc_deps.py, for the control stages: their commands are `OMP_NUM_THREADS=1 iwsft control X`,
whose code is iwsft.control.stages.X), and its per-method stages run iwsft.methods.CONTROL_METHODS."""

import os
import re
from pathlib import Path

import pytest

from iwsft.imports import stage_sources

ROOT = Path(__file__).resolve().parents[3]
COMMAND = re.compile(r"iwsft control (\w+)\b")


def control_stages() -> dict[str, tuple[str, set[str]]]:
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        stages = {}
        for stage in repo.index.stages:
            match = COMMAND.search(stage.cmd or "")
            if match and os.path.relpath(stage.path, repo.root_dir) == os.path.join("control", "dvc.yaml"):
                stages[stage.addressing] = (match.group(1), {os.path.relpath(dep.fs_path, repo.root_dir) for dep in stage.deps})
    return stages


STAGES = control_stages()


def tracked() -> set[str]:
    """Files git knows: a module another engineer has not committed yet is their work in progress."""
    import subprocess

    return set(subprocess.run(["git", "ls-files", "src"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split())


def test_every_control_stage_is_found():
    assert {"data", "curate", "quality", "reference", "report"} <= {name.split(":")[-1].split("@")[0] for name in STAGES}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_imported_source_file_is_a_dep(stage):
    command, deps = STAGES[stage]
    known = tracked()
    needed = [f"src/{path}" for path in stage_sources(f"iwsft.control.stages.{command}") if f"src/{path}" in known]
    missing = [path for path in needed if not any(path == dep or path.startswith(dep + "/") for dep in deps)]
    assert not missing, f"control/dvc.yaml stage {stage!r} imports these files but does not depend on them: {missing}"


def test_every_control_command_has_its_stage_module():
    from importlib import import_module

    from iwsft.cli.control import STAGES as COMMANDS

    for command in COMMANDS:
        assert callable(import_module(f"iwsft.control.stages.{command}").run), command


def test_the_per_method_stages_run_the_declared_control_methods():
    import yaml

    from iwsft.methods import CONTROL_METHODS

    stages = yaml.safe_load((ROOT / "control" / "dvc.yaml").read_text())["stages"]
    for name in ("train", "evaluate"):
        assert stages[name]["foreach"] == list(CONTROL_METHODS), name
    assert all(f'"models/{method}"' in (ROOT / "control" / "dvc.yaml").read_text() for method in CONTROL_METHODS)
