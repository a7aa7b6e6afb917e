"""The team workflow (README "Share a run"): a run is committed (dvc.lock only: every output is cached and
git-ignored) and pushed to a DVC remote; a teammate's fresh clone pulls it and finds nothing stale but
`register`, whose decision belongs to an MLflow store (always_changed). Reuses the session's micro DAG:
a copy of it, a local remote, push, clone, pull (~20 s on 2 busy cores)."""

import json
import shutil

import pytest

pytestmark = pytest.mark.integration


def without_dvc_tmp(folder, names):
    """.dvc/tmp holds DVC's locks: a copy taken while another test's `dvc repro` runs there must not inherit them."""
    return {"tmp"} if folder.endswith(".dvc") else set()


def test_a_pushed_run_pulled_into_a_fresh_clone_is_up_to_date(micro_project, tmp_path):
    shutil.copytree(micro_project.path, tmp_path / "origin", symlinks=True, ignore=without_dvc_tmp)
    Project = type(micro_project)  # conftest's: .run(), .dvc()
    origin = Project(tmp_path / "origin")

    # a run leaves only the lock files for git: nothing it computed is to be committed, nothing is left out
    left = origin.run("git", "status", "--porcelain", "--untracked-files=all").stdout.splitlines()
    assert sorted(line[3:] for line in left) == ["dvc.lock", "generate/dvc.lock"]

    origin.dvc("remote", "add", "--default", "team", str(tmp_path / "remote"))
    origin.run("git", "add", "dvc.lock", "generate/dvc.lock", ".dvc/config")
    origin.run("git", "commit", "-qm", "a run of the micro DAG")
    origin.dvc("push")

    teammate = Project(tmp_path / "clone")
    origin.run("git", "clone", "-q", str(origin.path), str(teammate.path))
    # the README's command: a plain `dvc pull` exits 1 on the stages that never ran (no hash to check out)
    teammate.dvc("pull", "--with-deps", "register")

    status = json.loads(teammate.dvc("status", "--with-deps", "register", "--json").stdout)
    assert list(status) == ["register"], status
    # register: always changed, and its registry.json (the pushing side's MLflow store's decision) is not shared
    not_shared = {"changed outs": {"reports/registry.json": "deleted"}}
    assert all(entry in ("always changed", not_shared) for entry in status["register"]), status
    for path in ("data/evaluate/iwsft/metrics.json", "data/quality/summary.json", "reports/report.md"):
        assert (teammate.path / path).read_bytes() == (origin.path / path).read_bytes(), path
    # a plain `dvc status` adds only the stages that never ran: the control pipeline and the unused generator
    never_ran = {name for name in json.loads(teammate.dvc("status", "--json").stdout) if name != "register"}
    unused = {"generate/dvc.yaml:prompts", "generate/dvc.yaml:prepare_teacher", "generate/dvc.yaml:solutions"}
    assert never_ran and all(name.startswith("control/dvc.yaml:") or name in unused
                             for name in never_ran), never_ran
