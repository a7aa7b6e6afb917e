"""control/dvc.yaml's code deps cover each stage's import closure (the language DAG's
test_dvc_deps.py, for the control stages: their commands are `OMP_NUM_THREADS=1 iwsft control ...`)."""

import os
import re
from pathlib import Path

import pytest

from iwsft.imports import stage_sources

ROOT = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r"iwsft control (\w+)\b")
MODULES = {"data": "iwsft.control.generate", "report": "iwsft.control.report", "register": "iwsft.control.register"}


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
    needed = [f"src/{path}" for path in stage_sources(MODULES.get(command, "iwsft.control.stages")) if f"src/{path}" in known]
    missing = [path for path in needed if not any(path == dep or path.startswith(dep + "/") for dep in deps)]
    assert not missing, f"control/dvc.yaml stage {stage!r} imports these files but does not depend on them: {missing}"
