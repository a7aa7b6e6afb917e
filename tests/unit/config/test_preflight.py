"""The preflight (iwsft.config.preflight): what a stage would refuse at its start, found before any
stage runs, every problem in one message. Each case of tests/data/bad/cases.yaml `preflight` is the
demo's params.yaml with the case's `set` over it, in a copy of the project's DAG (dvc.yaml and
generate/dvc.yaml: DVC's own plan, as `iwsft run` asks for it); the demo itself passes."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from iwsft.config import preflight
from iwsft.config.loading import merge, read_yaml
from iwsft.config.schema import check
from iwsft.errors import UserError

ROOT = Path(__file__).resolve().parents[3]
CASES = yaml.safe_load((ROOT / "tests" / "data" / "bad" / "cases.yaml").read_text())["preflight"]


def project(tmp_path: Path, written: dict, files: dict | None = None) -> Path:
    """A DVC project (no git) with the project's DAG and the demo's params.yaml with `written` over it."""
    root = tmp_path / "project"
    (root / "generate").mkdir(parents=True)
    (root / ".dvc").mkdir()
    (root / ".dvc" / "config").write_text("[core]\n    no_scm = True\n")
    (root / "src").symlink_to(ROOT / "src")  # the stages' code deps
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(ROOT / "generate" / "dvc.yaml", root / "generate" / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(merge(read_yaml(ROOT / "params.yaml"), written), sort_keys=False))
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def run_preflight(root: Path, planned: preflight.Plan | None = None) -> None:
    preflight.check(check(read_yaml(root / "params.yaml")), root, planned or preflight.plan(root))


@pytest.fixture(scope="module")
def demo_plan(tmp_path_factory) -> preflight.Plan:
    """DVC's plan of the demo (~0.5 s each): the same for every case that moves no file of the DAG."""
    return preflight.plan(project(tmp_path_factory.mktemp("demo"), {}))


@pytest.fixture
def own_modules(monkeypatch):
    """A custom scorer's module imported from the project is forgotten afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("my_verifier", "my_scoring")):
            del sys.modules[name]


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_what_a_stage_would_refuse_is_found_before_any_stage(case, tmp_path, monkeypatch, own_modules, demo_plan):
    if case.get("gpu") is False:  # as on a machine without a GPU, whatever this one has
        import torch

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root = project(tmp_path, case["set"], case.get("files"))
    moves_dag_files = {"curate", "sample"} & set(case["set"])  # DVC interpolates their paths into the DAG
    with pytest.raises(UserError) as error:
        run_preflight(root, None if moves_dag_files else demo_plan)
    message = str(error.value)
    for fragment in case["expect"]:
        assert fragment in message, message


def test_the_demo_passes_though_its_model_and_samples_are_not_there_yet(tmp_path):
    """model.base and curate.raw are written by generate/dvc.yaml's prepare and sample stages."""
    root = project(tmp_path, {})
    assert not (root / "data").exists()
    run_preflight(root)


def test_files_of_stages_that_do_not_run_are_not_demanded(tmp_path, own_modules):
    """Own samples file (the sample stage does not run, so sample.prompts is not needed), an own
    model directory whose config loads, and a scorer next to params.yaml that imports."""
    files = {"data/raw/samples.jsonl": "", "data/raw/eval.jsonl": "",
             "data/models/mine/config.json": '{"model_type": "llama", "vocab_size": 32}',
             "my_scoring.py": "def score(completion, answer):\n    return 1.0\n"}
    root = project(tmp_path, {"model": {"base": "data/models/mine"}, "task": {"name": "custom", "scorer": "my_scoring:score"},
                              "curate": {"raw": "data/raw/samples.jsonl", "eval_prompts": "data/raw/eval.jsonl"},
                              "sample": {"prompts": "data/raw/no_prompts_here.jsonl"}}, files)
    planned = preflight.plan(root)
    assert "generate/dvc.yaml:sample" not in planned.deps and "generate/dvc.yaml:prepare" not in planned.deps
    run_preflight(root)


def test_a_project_dvc_cannot_plan_is_one_message(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    no_scm = True\n")
    with pytest.raises(UserError, match=r"DVC cannot plan the run in .*: '.*dvc\.yaml' does not exist"):
        preflight.plan(tmp_path)
