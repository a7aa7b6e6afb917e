"""A copy of this project in a temporary git repository, where tests run real DVC and `iwsft` (`Project`,
`make_project`). Imported by the integration tests and their conftest.py: a module of its own, because
`from conftest import ...` reads whichever conftest.py pytest loaded last (tests/unit/training has one too)."""

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from iwsft.cli import stage_server


ROOT = Path(__file__).resolve().parents[1]  # the repository
BIN = Path(sys.executable).parent  # the venv's bin: iwsft and dvc live here


def project_files() -> list[str]:
    """The committed files and new, uncommitted ones (a test sees the code being written), but none of
    what a pipeline run left in this workspace without git ignoring it: the lock files (DVC refuses
    ignored ones) and anything under data/ or reports/."""
    def listed(*flags):
        return subprocess.run(["git", "ls-files", *flags], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout.split("\n")

    untracked = [name for name in listed("-o", "--exclude-standard")
                 if not name.startswith(("data/", "reports/")) and Path(name).name != "dvc.lock"]
    return [name for name in listed("-c") + untracked if name and (ROOT / name).is_file()]


def environment(served: bool = True) -> dict:
    """The environment of the projects' commands. served: with this test process's resident stage runner
    (iwsft.cli.stage_server, as `iwsft run` has one), so that a stage does not import torch, transformers
    and MLflow again (~5 s each). Its stages run the same main() in a forked child; a test whose command
    gets another environment (HF_HOME...) has its stages run in their own processes (the server refuses
    them); served=False for a plain `dvc repro`'s processes (a test that kills a stage, the SmolLM2 DAG)."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(CI="1", HF_HUB_OFFLINE="1", DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env.pop(stage_server.ENV, None)
    if served:
        env[stage_server.ENV] = _server(env)
    return env


_servers = contextlib.ExitStack()  # this test process's stage runner, stopped when the process exits
_sockets: list[str] = []


def _server(env: dict) -> str:
    """Its socket, started at the first served command (a stage that comes while it is still importing
    waits for it)."""
    if not _sockets:
        log = Path(tempfile.mkdtemp(prefix="iwsft-test-stages-")) / "stage-server.log"
        _sockets.append(_servers.enter_context(stage_server.running(env, log=log))[stage_server.ENV])
        atexit.register(_servers.close)
    return _sockets[0]


@dataclass
class Project:
    path: Path
    served: bool = True  # environment(served)

    def run(self, *command, check=True, timeout=900):
        done = subprocess.run(command, cwd=self.path, env=environment(self.served), capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        return done

    def dvc(self, *args, check=True):
        return self.run(str(BIN / "dvc"), *args, check=check)

    def iwsft(self, *args, check=True):
        return self.run(str(BIN / "iwsft"), *args, check=check)


def make_project(path: Path, profile: str | None = "micro", served: bool = True) -> Project:
    for name in project_files():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    project = Project(path, served)
    project.run("git", "init", "-q")
    if profile:
        project.iwsft("profile", profile)
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "project")
    return project
