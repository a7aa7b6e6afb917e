"""Fixtures that copy this project into a temporary git repository and run real DVC there (tests/projects.py)."""

import os
from pathlib import Path

import pytest
from filelock import FileLock

from projects import Project, make_project


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
