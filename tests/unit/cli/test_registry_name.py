"""Which registered model `iwsft registry show|promote|rollback` mean (iwsft.cli.registry.registered_name):
--name, --profile, a --params file (params.yaml or a profiles/ file), the last `iwsft run`, params.yaml.
No MLflow: the name is resolved before the registry is opened."""

import shutil
from pathlib import Path

import pytest

from iwsft.cli import main as cli
from iwsft.cli.registry import LAST_RUN, last_run, record_last_run, registered_name
from iwsft.config import preflight
from iwsft.errors import UserError

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_without_a_run_it_is_params_yaml_s_name(workspace):
    assert registered_name() == ("iwsft", "params.yaml")
    assert registered_name(name="other") == ("other", "--name")


def test_a_profile_is_layered_as_iwsft_run_layers_it(workspace):
    assert registered_name(profile="smollm2") == ("iwsft-smollm2", "profile smollm2")
    # smollm2-smoke extends smollm2 and uses `replace:`, which params.yaml's schema alone refuses
    assert registered_name(profile="smollm2-smoke")[0] == "iwsft-smollm2-smoke"
    assert registered_name(params="profiles/smollm2-smoke.yaml") == ("iwsft-smollm2-smoke", "profile smollm2-smoke")
    assert registered_name(params="params.yaml") == ("iwsft", "params.yaml")
    assert registered_name(profile="demo") == ("iwsft", "params.yaml")
    with pytest.raises(UserError, match="no profile 'nope'"):
        registered_name(profile="nope")


def test_the_default_is_the_last_run_s_registered_model(workspace):
    assert last_run() is None
    record_last_run("smollm2", "iwsft-smollm2")
    assert last_run() == {"profile": "smollm2", "model_name": "iwsft-smollm2"}
    name, source = registered_name()
    assert name == "iwsft-smollm2" and "the last `iwsft run`, profile smollm2" in source
    assert registered_name(profile="demo")[0] == "iwsft"  # asked for: params.yaml's, whatever ran last
    assert registered_name(name="x")[0] == "x"
    record_last_run("demo", "iwsft")  # a plain run: params.yaml's name, as it is now
    assert registered_name() == ("iwsft", "params.yaml")
    LAST_RUN.write_text("{not json")  # unreadable: ignored
    assert last_run() is None and registered_name() == ("iwsft", "params.yaml")


def test_iwsft_run_records_its_profile_before_dvc_starts(workspace, monkeypatch):
    monkeypatch.setattr(preflight, "plan", lambda root, target=None: preflight.Plan({}, ()))
    monkeypatch.setattr(preflight, "check", lambda params, root, planned: None)
    (workspace / ".dvc").mkdir()
    bin_dir = workspace / "bin"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text("#!/bin/sh\nexit 3\n")  # the run fails: its registered model is still the one
    (bin_dir / "dvc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    assert cli.main(["run", "--profile", "smollm2"]) == 1
    assert last_run() == {"profile": "smollm2", "model_name": "iwsft-smollm2"}
    assert registered_name()[0] == "iwsft-smollm2"


def test_the_registry_commands_take_a_profile():
    from iwsft.cli.main import build_parser

    args = build_parser().parse_args(["registry", "show", "--profile", "smollm2"])
    assert (args.profile, args.params, args.name) == ("smollm2", None, None)
    assert build_parser().parse_args(["registry", "promote", "3", "--params", "profiles/micro.yaml"]).params \
        == "profiles/micro.yaml"
