"""`iwsft run --profile NAME` (iwsft.cli.run): the profile lasts one run, whatever happens to it.

dvc here is a stand-in script on PATH (this is a unit test; tests/integration/test_smollm2_pipeline.py
runs the real DAG with a profile): it records the params.yaml it saw, then succeeds or fails."""

import os
import shutil
from pathlib import Path

import pytest

from iwsft.cli import main as cli

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fake_dvc(workspace: Path, monkeypatch, exit_code: int) -> None:
    bin_dir = workspace / "bin"
    bin_dir.mkdir()
    script = bin_dir / "dvc"
    script.write_text(f"#!/bin/sh\ncp params.yaml seen-params.yaml\nexit {exit_code}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_a_failed_dvc_repro_is_one_message_and_params_are_restored(workspace, monkeypatch, capsys):
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
