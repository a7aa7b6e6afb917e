"""dvc.yaml's code deps come from one source of truth: the import closure of each stage's module.

A file a stage imports but dvc.yaml does not list is a stale-output bug: change it and `dvc repro`
calls the old models and metrics up to date. The stages are read from DVC itself (foreach expanded,
${...} resolved), so this checks what `dvc repro` will check.
"""

import os
import re
from pathlib import Path

import pytest

from iwsft.imports import OUTPUT_NEUTRAL, closure, stage_sources

ROOT = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r"^iwsft (\w+)\b")


def dvc_stages() -> dict[str, tuple[str, set[str]]]:
    """stage name -> (the iwsft command it runs, its deps relative to the project root)."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        stages = {}
        for stage in repo.index.stages:
            match = COMMAND.match(stage.cmd or "")
            if match:
                deps = {os.path.relpath(dep.fs_path, repo.root_dir) for dep in stage.deps}
                stages[stage.addressing] = (match.group(1), deps)
    return stages


def covered(path: str, deps: set[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


STAGES = dvc_stages()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_imported_source_file_is_a_dep(stage):
    command, deps = STAGES[stage]
    needed = [f"src/{path}" for path in stage_sources(f"iwsft.stages.{command}")]
    missing = [path for path in needed if not covered(path, deps)]
    assert not missing, f"dvc.yaml stage {stage!r} imports these files but does not depend on them: add\n" + \
        "\n".join(f"      - {path}" for path in missing)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_code_dep_that_the_stage_does_not_import(stage):
    """A stale entry (a module moved or no longer imported) re-runs the stage for nothing."""
    command, deps = STAGES[stage]
    needed = {f"src/{path}" for path in closure(f"iwsft.stages.{command}")}
    extra = [dep for dep in deps if dep.startswith("src/") and not any(covered(path, {dep}) for path in needed)]
    assert not extra, f"dvc.yaml stage {stage!r} depends on code it does not import: {extra}"


def test_the_closure_follows_lazy_and_package_imports():
    files = closure("iwsft.stages.train")
    assert {"iwsft/stages/__init__.py", "iwsft/encoding/sequences.py", "iwsft/training/arguments.py", "iwsft/training/objectives.py"} <= files
    # register imports mlflow-side code lazily inside functions; those count too
    assert "iwsft/tracking/registry.py" in closure("iwsft.stages.register")
    assert "iwsft/tracking/runs.py" in files and "iwsft/tracking/runs.py" not in stage_sources("iwsft.stages.train")


def test_only_training_depends_on_the_loss_family():
    """Editing a loss (training/objectives.py) re-runs the train stages and what follows them, nothing before;
    the log-prob kernels are shared with reference and evaluate, the loss is not."""
    for stage in ("curate", "quality", "reference", "evaluate", "report", "register"):
        assert "iwsft/training/objectives.py" not in closure(f"iwsft.stages.{stage}"), stage
    assert "iwsft/training/objectives.py" in stage_sources("iwsft.stages.train")


def test_output_neutral_files_exist_and_say_why():
    for path, why in OUTPUT_NEUTRAL.items():
        assert (ROOT / "src" / path).is_file(), path
        assert len(why) > 10


def test_every_method_of_params_has_train_and_evaluate_stages():
    import yaml

    from iwsft.methods import METHODS

    methods = yaml.safe_load((ROOT / "params.yaml").read_text())["methods"]
    assert set(methods) <= set(METHODS)
    for method in methods:
        assert f"train@{method}" in STAGES and f"evaluate@{method}" in STAGES
    assert "baseline" in STAGES
