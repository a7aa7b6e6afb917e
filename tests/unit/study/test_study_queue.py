"""`dvc exp show --json` that never answers (iwsft.study.queue.show): killed after its timeout and asked
again, then a UserError that says so, instead of a study (or CI) that waits forever."""

import os
import subprocess

import pytest

from iwsft.errors import UserError
from iwsft.study import queue


def test_an_exp_show_that_hangs_is_killed_and_named(tmp_path, monkeypatch):
    stub = tmp_path / "bin" / "dvc"  # a dvc that hangs, as pygit2's blob reader did once in CI
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexec sleep 60\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub.parent}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    monkeypatch.chdir(tmp_path / "repo")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "c"],
                   check=True)
    monkeypatch.setattr(queue.time, "sleep", lambda seconds: None)
    with pytest.raises(UserError, match=r"failed 2 times:\nno answer in 0.5 s \(killed\)"):
        queue.show(attempts=2, timeout_s=0.5)
