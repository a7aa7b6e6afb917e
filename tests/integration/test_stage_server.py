"""The resident stage runner of `iwsft run` (iwsft.cli.stage_server): a real server process, real clients
(`iwsft` commands started as DVC starts them), real file descriptors, signals and exit statuses. The
whole path under DVC is tested by tests/integration/test_mlflow.py's `iwsft run` test."""

import os
import signal
import subprocess
import sys
import time

import pytest

from iwsft.cli import stage_server
from iwsft.workspace import workspace_lock
from projects import BIN, environment


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "stage-server.log"
    with stage_server.running(environment(served=False), log=log) as env:
        deadline = time.monotonic() + 120
        while not os.path.exists(env[stage_server.ENV]):  # it binds once its imports are done
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield env, log


def client(env, cwd, *argv, **popen):
    """`iwsft ARGV` through the server, as a stage's command line is (run_remotely, whatever the command)."""
    code = "import sys; from iwsft.cli.stage_server import run_remotely; sys.exit(run_remotely(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, "iwsft", *argv], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def test_a_command_runs_in_a_child_with_the_clients_directory_streams_and_status(server, tmp_path):
    env, log = server
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/report.md").write_text("| method | pass@1 |\n")
    shown = client(env, tmp_path, "show-report")
    out, err = shown.communicate(timeout=60)
    assert (shown.returncode, out.strip(), err) == (0, "| method | pass@1 |", "")
    missing = client(env, tmp_path / "reports", "show-report")  # another directory: no reports/ there
    out, err = missing.communicate(timeout=60)
    assert missing.returncode == 1 and "iwsft show-report: error: reports/report.md does not exist" in err
    lines = log.read_text().splitlines()
    assert f"show-report in {tmp_path}" in lines and f"show-report in {tmp_path / 'reports'}" in lines
    assert [line.split(": ")[1] for line in lines if ": exit" in line] == ["exit 0", "exit 1"]


def test_usage_errors_keep_their_status(server, tmp_path):
    env, _ = server
    done = client(env, tmp_path, "train", "--method", "nonsense")
    _, err = done.communicate(timeout=60)
    assert done.returncode == 2 and "invalid choice: 'nonsense'" in err


def test_a_signal_to_the_client_reaches_the_stage(server, tmp_path):
    """A timeout's SIGTERM to DVC's command stops the stage itself, and the status says so."""
    env, log = server
    (tmp_path / ".dvc/tmp").mkdir(parents=True)
    with workspace_lock(tmp_path, what="this test"):
        waiting = client(env, tmp_path, "run", "--wait", "120")  # blocks on the lock this test holds
        deadline = time.monotonic() + 60
        while "pid " not in log.read_text().split(f"run --wait 120 in {tmp_path}")[-1]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1)
        waiting.send_signal(signal.SIGTERM)
        waiting.communicate(timeout=60)
    assert waiting.returncode == 128 + signal.SIGTERM
    assert log.read_text().splitlines()[-1].endswith(f"exit {128 + signal.SIGTERM}")


def test_without_a_server_the_command_runs_in_its_own_process(tmp_path):
    env = {**environment(served=False), stage_server.ENV: str(tmp_path / "no-such-socket")}
    done = subprocess.run([str(BIN / "iwsft"), "report", "--params", "nope.yaml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 1 and "iwsft report: error:" in done.stderr and "nope.yaml" in done.stderr
    assert stage_server.run_remotely(["iwsft", "show-report"]) is None  # nothing in this process's environment


def test_at_the_end_of_its_run_the_server_takes_no_new_stage_and_lets_running_ones_finish(tmp_path):
    """An interrupted `iwsft study`: DVC's workers go on, so a stage already running must not fail for it."""
    (tmp_path / ".dvc/tmp").mkdir(parents=True)
    log = tmp_path / "stage-server.log"
    with workspace_lock(tmp_path, what="this test") as _:
        with stage_server.running(environment(served=False), log=log) as env:
            deadline = time.monotonic() + 120
            while not os.path.exists(env[stage_server.ENV]):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            waiting = client(env, tmp_path, "run", "--wait", "120")  # blocks on the lock this test holds
            while "pid " not in log.read_text():
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert "stopping: 1 stages still running" in log.read_text()
        assert not os.path.exists(env[stage_server.ENV])  # a new client runs its stage itself
        assert waiting.poll() is None
    _, err = waiting.communicate(timeout=60)  # the lock is free: the waiting command goes on, and ends
    assert "ended before the stage did" not in err and f"exit {waiting.returncode}" in log.read_text()
    deadline = time.monotonic() + 30
    while not log.read_text().endswith("stopped\n"):
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def test_a_stage_whose_environment_differs_runs_in_its_own_process(server, tmp_path):
    """HF_HOME, OMP_NUM_THREADS and others are read when a module is imported: the server's imports saw
    its own environment, so a stage with another one is not run there."""
    env, log = server
    done = client({**env, "HF_HOME": str(tmp_path / "hf")}, tmp_path, "show-report")
    _, err = done.communicate(timeout=60)
    assert done.returncode == 0  # run_remotely returned None: the caller (here: sys.exit(None)) runs it itself
    assert log.read_text().splitlines()[-1] == (
        "refused: the environment differs in HF_HOME; the stage runs in its own process")


def test_only_the_variables_dvc_and_the_shell_set_per_command_may_differ():
    own = {"PATH": "/bin", "HF_HOME": "/a", "DVC_ROOT": "/p"}
    assert stage_server.environment_differences(own, {**own, "DVC_STAGE": "train@sft", "PWD": "/p", "SHLVL": "2",
                                                      stage_server.ENV: "/tmp/s"}) == []
    assert stage_server.environment_differences(own, {"PATH": "/bin", "DVC_ROOT": "/p", "OMP_NUM_THREADS": "2"}) == [
        "HF_HOME", "OMP_NUM_THREADS"]


def test_no_server_when_switched_off():
    with stage_server.running({**environment(served=False), stage_server.OFF: "1"}) as env:
        assert stage_server.ENV not in env


def test_the_first_stage_waits_for_a_server_still_importing_and_not_for_a_dead_one(tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/report.md").write_text("table\n")
    log = tmp_path / "stage-server.log"
    with stage_server.running(environment(served=False), log=log) as env:
        assert not os.path.exists(env[stage_server.ENV])  # still importing
        first = client(env, tmp_path, "show-report")
        assert first.communicate(timeout=120)[0].strip() == "table"
    assert f"show-report in {tmp_path}" in log.read_text()  # it waited, and ran in a child of the server

    folder = tmp_path / "dead"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # exited, and not waited for yet: a zombie
    time.sleep(1)
    (folder / "pid").write_text(str(dead.pid))
    started = time.monotonic()
    assert client({**env, stage_server.ENV: str(folder / "socket")}, tmp_path, "show-report").wait(60) == 0
    assert time.monotonic() - started < 30  # not STARTUP_WAIT_S
    dead.wait()
