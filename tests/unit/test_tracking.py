"""Pure helpers of iwsft.tracking: retries, flattening, URIs, where the project is. No MLflow."""

import pytest

from iwsft import tracking


def test_transient_errors_are_retried_then_succeed(monkeypatch):
    sleeps = []
    monkeypatch.setattr(tracking.time, "sleep", sleeps.append)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("refused")
        return "ok"

    assert tracking.with_retries(flaky, attempts=3, first_delay=0.5) == "ok"
    assert sleeps == [0.5, 1.0]  # exponential backoff, bounded by `attempts`


def test_retries_are_bounded_and_permanent_errors_are_not_retried(monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda _: None)
    calls = []

    def down():
        calls.append(1)
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        tracking.with_retries(down, attempts=3)
    assert len(calls) == 3

    class Invalid(Exception):
        error_code = "INVALID_PARAMETER_VALUE"

    def wrong():
        calls.append(1)
        raise Invalid("bad name")

    calls.clear()
    with pytest.raises(Invalid):
        tracking.with_retries(wrong, attempts=3)
    assert len(calls) == 1


def test_mlflow_error_codes_decide_what_is_transient():
    class Coded(Exception):
        def __init__(self, code):
            super().__init__(code)
            self.error_code = code

    assert tracking.is_transient(Coded("TEMPORARILY_UNAVAILABLE"))
    assert tracking.is_transient(Exception("(sqlite3.OperationalError) database is locked"))
    assert not tracking.is_transient(Coded("RESOURCE_DOES_NOT_EXIST"))


def test_flatten_and_numeric_keep_numbers_only():
    flat = tracking.flatten({"seed": 0, "train": {"lr": 1e-3, "token_clip": [0.2, 1.8], "q_mode": "current"}})
    assert flat == {"seed": 0, "train.lr": 1e-3, "train.token_clip": [0.2, 1.8], "train.q_mode": "current"}
    assert tracking.numeric({**flat, "flag": True}) == {"seed": 0.0, "train.lr": 1e-3}


def test_credentials_never_reach_messages():
    assert tracking.display_uri("https://user:secret@mlflow.example:8443/x") == "https://mlflow.example:8443/x"
    assert tracking.display_uri("sqlite:////abs/mlruns/mlflow.db") == "sqlite:////abs/mlruns/mlflow.db"
    assert "secret" not in tracking.server_down_message("http://user:secret@127.0.0.1:1")


def test_dvc_temporary_experiment_workspaces_log_to_the_real_project(tmp_path, monkeypatch):
    workspace = tmp_path / "project" / ".dvc" / "tmp" / "exps" / "tmp123"
    workspace.mkdir(parents=True)
    monkeypatch.chdir(workspace)
    assert tracking.project_root() == (tmp_path / "project").resolve()


def test_tracking_off_is_said_not_silent(monkeypatch, capsys):
    monkeypatch.setenv("IWSFT_TRACKING", "off")
    assert tracking.track_stage("curate", {"curate": {}}) is None
    assert "curate is not tracked" in capsys.readouterr().err
