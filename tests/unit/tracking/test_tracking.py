"""iwsft.tracking (retry, runs, store, lineage) without MLflow: retries, flattening, URIs, where the project is, and which store a
pipeline run logs to (a fake server on 127.0.0.1 answers /health where one must be up)."""

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from iwsft.config.loading import load_params, merge
from iwsft.config.schema import check
from iwsft.errors import UserError
from iwsft.tracking import lineage, retry, runs, store
from iwsft.tracking import server as mlflow_server

ROOT = Path(__file__).resolve().parents[3]


def test_transient_errors_are_retried_then_succeed(monkeypatch):
    sleeps = []
    monkeypatch.setattr(retry.time, "sleep", sleeps.append)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("refused")
        return "ok"

    assert retry.with_retries(flaky, attempts=3, first_delay=0.5) == "ok"
    assert sleeps == [0.5, 1.0]  # exponential backoff, bounded by `attempts`


def test_retries_are_bounded_and_permanent_errors_are_not_retried(monkeypatch):
    monkeypatch.setattr(retry.time, "sleep", lambda _: None)
    calls = []

    def down():
        calls.append(1)
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        retry.with_retries(down, attempts=3)
    assert len(calls) == 3

    class Invalid(Exception):
        error_code = "INVALID_PARAMETER_VALUE"

    def wrong():
        calls.append(1)
        raise Invalid("bad name")

    calls.clear()
    with pytest.raises(Invalid):
        retry.with_retries(wrong, attempts=3)
    assert len(calls) == 1


def test_mlflow_error_codes_decide_what_is_transient():
    class Coded(Exception):
        def __init__(self, code):
            super().__init__(code)
            self.error_code = code

    assert retry.is_transient(Coded("TEMPORARILY_UNAVAILABLE"))
    assert retry.is_transient(Exception("(sqlite3.OperationalError) database is locked"))
    assert not retry.is_transient(Coded("RESOURCE_DOES_NOT_EXIST"))


def test_flatten_and_numeric_keep_numbers_only():
    flat = runs.flatten({"seed": 0, "train": {"lr": 1e-3, "token_clip": [0.2, 1.8], "q_mode": "current"}})
    assert flat == {"seed": 0, "train.lr": 1e-3, "train.token_clip": [0.2, 1.8], "train.q_mode": "current"}
    assert runs.numeric({**flat, "flag": True}) == {"seed": 0.0, "train.lr": 1e-3}


def test_credentials_never_reach_messages():
    assert store.display_uri("https://user:secret@mlflow.example:8443/x") == "https://mlflow.example:8443/x"
    assert store.display_uri("sqlite:////abs/mlruns/mlflow.db") == "sqlite:////abs/mlruns/mlflow.db"
    assert "secret" not in store.server_down_message("http://user:secret@127.0.0.1:1")


def test_dvc_temporary_experiment_workspaces_log_to_the_real_project(tmp_path, monkeypatch):
    workspace = tmp_path / "project" / ".dvc" / "tmp" / "exps" / "tmp123"
    workspace.mkdir(parents=True)
    monkeypatch.chdir(workspace)
    assert lineage.project_root() == (tmp_path / "project").resolve()


def test_tracking_off_is_said_not_silent(monkeypatch, capsys):
    monkeypatch.setenv("IWSFT_TRACKING", "off")
    assert runs.track_stage("curate", params()) is None
    assert "curate is not tracked" in capsys.readouterr().err


# --- which store a pipeline run logs to (no MLflow: only /health is asked) ---

class Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(port):
    """A fake MLflow server on 127.0.0.1:port that answers /health, as the real one does."""
    server = ThreadingHTTPServer(("127.0.0.1", port), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A DVC-looking project dir with a server URI on a port nobody listens on (yet)."""
    root = tmp_path / "project"
    (root / ".dvc").mkdir(parents=True)
    monkeypatch.chdir(root)
    monkeypatch.setattr(retry.time, "sleep", lambda _: None)  # the health check's retries
    for name in ("IWSFT_TRACKING", "IWSFT_PIPELINE_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # urllib must not send 127.0.0.1 through a proxy
    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    return SimpleNamespace(root=root.resolve(), port=port, server=f"http://127.0.0.1:{port}",
                           local=mlflow_server.local_store_uri(root))


def params(fallback="none", seed=0):
    """The project's params.yaml (typed, as the CLI hands it to a stage) with these two settings."""
    raw = load_params(ROOT / "params.yaml", check=False)
    return check(merge(raw, {"seed": seed, "tracking": {"fallback": fallback}}))


def records(project):
    folder = project.root / ".dvc" / "tmp" / "iwsft-tracking"
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def test_a_server_that_is_down_stops_the_stage_before_its_work(project):
    work = []

    def stage(p):  # what the CLI does: the check first, then the work
        store.ensure_tracking_store(p)
        work.append("done")

    with pytest.raises(store.TrackingUnavailable) as error:
        stage(params("none"))
    message = str(error.value)
    assert f"{project.server} (MLFLOW_TRACKING_URI) is not answering" in message
    for way_out in ("`make serve`", "`tracking.fallback: local`", "unset MLFLOW_TRACKING_URI"):
        assert way_out in message
    assert work == [] and records(project) == []  # nothing chosen: starting the server is enough
    assert isinstance(error.value, UserError)  # the CLI prints it without a traceback


def test_fallback_local_sends_the_whole_run_to_the_local_store_even_once_the_server_is_back(project, capsys,
                                                                                           monkeypatch):
    assert store.ensure_tracking_store(params("local")) == project.local
    assert "tracking.fallback is local: this whole pipeline run logs to" in capsys.readouterr().err
    assert store.ensure_tracking_store(params("local")) == project.local
    assert capsys.readouterr().err == ""  # said once per process (the check, then the logging)
    monkeypatch.setattr(store, "_ANNOUNCED", set())  # a later stage: a new process
    [record] = records(project)
    assert (record["uri"], record["configured"], record["fallback"]) == (project.local, project.server, True)
    with serving(project.port):
        assert store._reachable(project.server)
        assert store.ensure_tracking_store(params("local")) == project.local  # same run: same store
        assert f"{project.server} did not answer when its first stage ran" in capsys.readouterr().err
        assert store.ensure_tracking_store(params("local", seed=1)) == project.server  # another run chooses anew
    assert len(records(project)) == 2


def test_a_recorded_server_that_is_down_later_stops_the_stage_even_with_fallback_local(project):
    with serving(project.port):
        assert store.ensure_tracking_store(params("local")) == project.server
    assert records(project)[0]["fallback"] is False
    with pytest.raises(store.TrackingUnavailable) as error:
        store.ensure_tracking_store(params("local"))  # never switches stores in the middle of a run
    message = str(error.value)
    assert f"logs to the MLflow server at {project.server}" in message and "`make serve`" in message
    assert str(project.root / ".dvc" / "tmp" / "iwsft-tracking") in message  # the record, to start over


def test_the_local_store_is_recorded_too_and_a_new_uri_is_a_new_choice(project, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert store.ensure_tracking_store(params()) == project.local
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project.server)
    with serving(project.port):
        assert store.ensure_tracking_store(params()) == project.server  # the user pointed it elsewhere
    assert f"MLFLOW_TRACKING_URI is now {project.server}" in capsys.readouterr().err
    assert [r["uri"] for r in records(project)] == [project.server]


def test_an_orchestrators_parent_run_keys_the_record(project, monkeypatch):
    monkeypatch.setenv("IWSFT_PIPELINE_RUN_ID", "abc/123")
    assert store.ensure_tracking_store(params("local")) == project.local
    assert store.store_record_path(params("local")).name == "run-abc_123.json"
    assert store.ensure_tracking_store(params("local", seed=1)) == project.local  # its run, whatever the params


def test_tracking_off_needs_no_store_and_a_bad_fallback_is_named(project, monkeypatch):
    with pytest.raises(UserError, match="tracking.fallback: .*'none' or 'local'"):  # the schema's check
        params("remote")
    monkeypatch.setenv("IWSFT_TRACKING", "off")
    assert store.ensure_tracking_store(params()) is None


def test_logging_after_the_work_never_fails_the_stage(project, capsys):
    assert runs.track_stage("curate", params("none")) is None  # the server is down: said, not raised
    assert "could not log curate (TrackingUnavailable" in capsys.readouterr().err


def test_tools_outside_a_pipeline_run_check_the_configured_store(project):
    with pytest.raises(store.TrackingUnavailable) as error:
        store.resolve_uri()
    assert "make serve" in str(error.value) and "tracking.fallback" not in str(error.value)
    with serving(project.port):
        assert store.resolve_uri() == project.server
