"""Fixtures that copy this project into a temporary git repository and run real DVC there."""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[2]
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


def environment() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(CI="1", HF_HUB_OFFLINE="1", DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    return env


@dataclass
class Project:
    path: Path

    def run(self, *command, check=True, timeout=900):
        done = subprocess.run(command, cwd=self.path, env=environment(), capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        return done

    def dvc(self, *args, check=True):
        return self.run(str(BIN / "dvc"), *args, check=check)

    def iwsft(self, *args, check=True):
        return self.run(str(BIN / "iwsft"), *args, check=check)


def make_project(path: Path, profile: str | None = "micro") -> Project:
    for name in project_files():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    project = Project(path)
    project.run("git", "init", "-q")
    if profile:
        project.iwsft("profile", profile)
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "project")
    return project


@pytest.fixture(scope="session")
def micro_project(tmp_path_factory) -> Project:
    """The micro DAG, reproduced once per test session; tests read its outputs or copy the project.
    Under pytest-xdist (`make test`) the workers share one build: the first to need it runs it while
    holding a file lock, the others wait on the lock and reuse it (a failed build fails them all)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return reproduced(tmp_path_factory.mktemp("micro"))
    shared = tmp_path_factory.getbasetemp().parent / "micro"
    built, failed = shared.with_name("micro.built"), shared.with_name("micro.failed")
    with FileLock(shared.with_name("micro.lock")):
        if failed.exists():
            raise AssertionError(f"the micro DAG failed in another worker:\n{failed.read_text()}")
        if not built.exists():
            shared.mkdir()
            try:
                reproduced(shared)
            except AssertionError as error:
                failed.write_text(str(error))
                raise
            built.touch()
    return Project(shared)


def reproduced(path: Path) -> Project:
    project = make_project(path)
    project.dvc("repro")
    return project
