"""`iwsft run --profile NAME` (iwsft.cli.run): the profile lasts one run, whatever happens to it; the
preflight runs before dvc; a failed stage is named with the command that restores its outputs.

dvc here is a stand-in script on PATH (this is a unit test; tests/integration/test_smollm2_pipeline.py
runs the real DAG with a profile): it records the params.yaml it saw, then succeeds or fails. The
preflight's own cases are tests/unit/config/test_preflight.py's; here it sees no DAG (no dvc.yaml)."""

import os
import shutil
from pathlib import Path

import pytest

from iwsft.cli import main as cli
from iwsft.config import preflight

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(preflight, "plan", lambda root, target=None: preflight.Plan({}, ()))
    return tmp_path


@pytest.fixture
def model_there(workspace, monkeypatch):
    """The preflight passes (what it finds is test_preflight.py's and the test below's)."""
    monkeypatch.setattr(preflight, "check", lambda params, root, planned: None)


def fake_dvc(workspace: Path, monkeypatch, exit_code: int, stderr: str = "") -> None:
    bin_dir = workspace / "bin"
    bin_dir.mkdir()
    script = bin_dir / "dvc"
    (bin_dir / "stderr.txt").write_text(stderr)
    script.write_text(f"#!/bin/sh\ncp params.yaml seen-params.yaml\ncat '{bin_dir / 'stderr.txt'}' >&2\nexit {exit_code}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_a_failed_dvc_repro_is_one_message_and_params_are_restored(workspace, model_there, monkeypatch, capsys):
    fake_dvc(workspace, monkeypatch, exit_code=3)
    before = (workspace / "params.yaml").read_bytes()
    assert cli.main(["run", "--profile", "smollm2"]) == 1
    err = capsys.readouterr().err
    assert "iwsft run: error: `dvc repro` failed" in err and "Traceback" not in err
    assert "data/models/smollm2-135m-instruct" in (workspace / "seen-params.yaml").read_text()  # dvc saw the profile
    assert (workspace / "params.yaml").read_bytes() == before  # ... and params.yaml is as it was


def test_an_unknown_profile_stops_before_dvc(workspace, monkeypatch, capsys):
    fake_dvc(workspace, monkeypatch, exit_code=0)
    assert cli.main(["run", "--profile", "nope"]) == 1
    assert "no profile 'nope'; known profiles: micro" in capsys.readouterr().err
    assert not (workspace / "seen-params.yaml").exists()


def test_the_preflight_stops_the_run_before_dvc_starts(workspace, monkeypatch, capsys):
    fake_dvc(workspace, monkeypatch, exit_code=0)
    before = (workspace / "params.yaml").read_bytes()
    assert cli.main(["run", "--profile", "smollm2"]) == 1  # its model is not in this workspace
    err = capsys.readouterr().err
    assert "iwsft run: error: preflight: 1 problem found before any stage ran" in err and "Traceback" not in err
    assert "model.base: model directory data/models/smollm2-135m-instruct does not exist" in err
    assert not (workspace / "seen-params.yaml").exists()  # dvc never ran: nothing deleted
    assert (workspace / "params.yaml").read_bytes() == before


DVC_FAILED = "ERROR: failed to reproduce '{}': failed to run: iwsft curate, exited with 1\n"


def test_a_failed_stage_is_named_with_the_command_that_restores_its_outputs(workspace, model_there, monkeypatch, capsys):
    (workspace / "dvc.lock").write_text("schema: '2.0'\nstages:\n  curate:\n    cmd: iwsft curate\n")
    fake_dvc(workspace, monkeypatch, exit_code=255, stderr=DVC_FAILED.format("curate"))
    assert cli.main(["run"]) == 1
    err = capsys.readouterr().err
    assert DVC_FAILED.format("curate") in err  # dvc's own words, passed through
    assert ("iwsft run: error: stage 'curate' failed: its message is above. DVC deleted its previous outputs before "
            "running it; `dvc checkout --force curate` brings them back as dvc.lock records them") in err


def test_a_failed_stage_that_never_ran_before_has_nothing_to_restore(workspace, model_there, monkeypatch, capsys):
    fake_dvc(workspace, monkeypatch, exit_code=255, stderr=DVC_FAILED.format("generate/dvc.yaml:prepare"))
    assert cli.main(["run"]) == 1
    err = capsys.readouterr().err
    assert ("stage 'generate/dvc.yaml:prepare' failed: its message is above. It had no previous outputs "
            "(generate/dvc.lock does not record it): nothing to restore.") in err
