"""The workspace lock and one-run params (iwsft.workspace), with real files and real flocks."""

import os
import subprocess
import sys
import threading
import time

import pytest

from iwsft.workspace import (LOCK, TOKEN_ENV, WorkspaceBusy, one_run_params, refuse_if_locked, restore_crashed_run,
                             workspace_lock)

PARAMS = "# my comment, kept\ntrain:\n  steps: 300   # inline comment\n"


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    with workspace_lock(tmp_path, what="nightly run"):
        with pytest.raises(WorkspaceBusy, match=r"nightly run \(pid \d+, since"):
            with workspace_lock(tmp_path):
                pass
    with workspace_lock(tmp_path):  # released: free again
        pass


def test_a_second_holder_may_wait(tmp_path):
    entered = threading.Event()

    def hold():
        with workspace_lock(tmp_path):
            entered.set()
            time.sleep(1.0)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    started = time.monotonic()
    with workspace_lock(tmp_path, wait_s=10):
        waited = time.monotonic() - started
    holder.join()
    assert 0.3 < waited < 5


def test_stages_started_outside_the_holder_refuse(tmp_path, monkeypatch):
    refuse_if_locked(tmp_path)  # no lock file: fine
    with workspace_lock(tmp_path) as token:
        assert os.environ[TOKEN_ENV] == token
        refuse_if_locked(tmp_path)  # the holder's own children carry the token
        monkeypatch.delenv(TOKEN_ENV)
        with pytest.raises(WorkspaceBusy, match="this workspace is busy"):
            refuse_if_locked(tmp_path)
        # another process, as `dvc repro` started by a user would be
        child = subprocess.run([sys.executable, "-c", "import sys; from iwsft.workspace import refuse_if_locked;"
                                f"refuse_if_locked({str(tmp_path)!r})"], capture_output=True, text=True,
                               env={k: v for k, v in os.environ.items() if k != TOKEN_ENV})
        assert child.returncode != 0 and "WorkspaceBusy" in child.stderr
    refuse_if_locked(tmp_path)
    assert (tmp_path / LOCK).is_file()


def test_the_lock_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; from iwsft.workspace import workspace_lock\n"
                               f"with workspace_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(WorkspaceBusy):
        with workspace_lock(tmp_path):
            pass
    holder.kill()  # as kill -9: the kernel releases the flock
    holder.wait()
    with workspace_lock(tmp_path):
        pass


def test_params_are_byte_identical_after_the_run(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    with one_run_params(tmp_path, ["params.yaml", "extra.yaml"]):
        params.write_text("train:\n  steps: 50\n")
        (tmp_path / "extra.yaml").write_text("x: 1\n")  # an override may create a params file
    assert params.read_text() == PARAMS
    assert not (tmp_path / "extra.yaml").exists()
    with pytest.raises(RuntimeError):
        with one_run_params(tmp_path):
            params.write_text("train:\n  steps: 50\n")
            raise RuntimeError("a stage failed")
    assert params.read_text() == PARAMS


def test_a_crashed_run_is_restored_by_the_next_one(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    crashed = subprocess.run([sys.executable, "-c", "import os; from pathlib import Path\n"
                              "from iwsft.workspace import one_run_params\n"
                              f"with one_run_params({str(tmp_path)!r}):\n"
                              f"    Path({str(params)!r}).write_text('train: {{steps: 50}}\\n'); os._exit(9)"])
    assert crashed.returncode == 9 and "steps: 50" in params.read_text()
    assert restore_crashed_run(tmp_path) == ["params.yaml"]
    assert params.read_text() == PARAMS
    assert restore_crashed_run(tmp_path) == []
