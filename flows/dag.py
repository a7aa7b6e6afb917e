"""The DAG as DVC sees it: stage order, sub-graphs, staleness, and params overrides.

Everything is asked of DVC (its Python API for the graph, `dvc status` for staleness, its own
`-S` override code for params), so the flows never keep a second copy of dvc.yaml that could drift.
Only one DVC command may touch a workspace at a time (ANCHORS.md §2.10): every function here runs
in the flow's own process, before or between stages, never alongside one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# gate stages are named gate*, *_gate, gates@raw, ...: a whole word "gate(s)" in the stage name
GATE_NAME = re.compile(r"(^|[^a-z])gates?($|[^a-z])", re.IGNORECASE)


def is_gate(stage: str) -> bool:
    return bool(GATE_NAME.search(stage))


def runs_iwsft(root) -> bool:
    """Whether the project's stages are iwsft's (the flows also drive any DVC project, as in the tests)."""
    path = Path(root) / "dvc.yaml"
    return path.is_file() and re.search(r"^\s*cmd:\s*iwsft\s", path.read_text(), re.MULTILINE) is not None


def is_evaluation(stage: str) -> bool:
    """The stages that score a model: `baseline` (pi_ref) and `evaluate@METHOD`."""
    return stage == "baseline" or stage.split("@")[0] == "evaluate"


def dvc_executable() -> str:
    """The dvc next to this interpreter (the project's venv), else whichever is on PATH."""
    candidate = Path(sys.executable).parent / "dvc"
    return str(candidate) if candidate.exists() else "dvc"


def child_environment() -> dict:
    """os.environ with this interpreter's bin first on PATH, since dvc.yaml's commands call `iwsft`."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


@dataclass(frozen=True)
class Dag:
    """The stages `dvc repro [target]` would check, in the order it checks them, and their edges."""

    order: tuple[str, ...]
    upstream: dict[str, frozenset[str]]  # stage -> the stages it depends on directly
    deps: dict[str, tuple[str, ...]]  # stage -> its dependency paths, relative to the project root
    outs: tuple[str, ...] = ()  # every output of these stages, relative to the root (iwsft.config.preflight.Plan)

    def downstream(self, sources) -> list[str]:
        """`sources` and every stage that depends on them, in run order (like `dvc repro --downstream`)."""
        reached = set(sources)
        for stage in self.order:  # run order is topological, so one pass closes the set
            if self.upstream.get(stage, frozenset()) & reached:
                reached.add(stage)
        return [stage for stage in self.order if stage in reached]

    def dependents_of(self, path: str) -> list[str]:
        """Stages that list `path` (or a folder holding it) among their deps."""
        path = os.path.normpath(path)
        return [stage for stage in self.order
                if any(path == dep or path.startswith(dep + os.sep) for dep in self.deps[stage])]


def load_dag(root, target: str | None = None) -> Dag:
    """Plan like `dvc repro [target]`: DVC's own graph and its own post-order walk (plan_repro)."""
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    # DVC resolves targets ("dvc.yaml", "train@sft") against the current directory, as its CLI does
    with contextlib.chdir(root), Repo(str(root)) as repo:
        graph = get_active_graph(repo.index.graph)
        steps = plan_repro(graph, collect_stages(repo, [target or "dvc.yaml"]))
        # .dvc files (data sources) have no command: `dvc repro` only verifies them
        steps = [stage for stage in steps if stage.cmd]
        # DVC's edges point from a stage to the stages whose outputs it uses
        upstream = {s.addressing: frozenset(d.addressing for d in graph.successors(s) if d.cmd) for s in steps}
        deps = {s.addressing: tuple(os.path.relpath(d.fs_path, repo.root_dir) for d in s.deps) for s in steps}
        outs = tuple(os.path.relpath(o.fs_path, repo.root_dir) for s in steps for o in s.outs)
    return Dag(tuple(s.addressing for s in steps), upstream, deps, outs)


def stale(root, stages) -> dict[str, list]:
    """`dvc status --json STAGES`: the stages whose deps, params or outs changed, with what changed."""
    if not stages:
        return {}
    done = subprocess.run([dvc_executable(), "status", "--json", *stages], cwd=root, env=child_environment(),
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"dvc status failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return json.loads(done.stdout or "{}")


def override_files(overrides) -> list[str]:
    """The params files `key=value` overrides touch (`other.yaml:key=1` names another file)."""
    from dvc.utils.cli_parse import to_path_overrides

    return ["params.yaml", *(path for path in to_path_overrides(list(overrides or [])) if path != "params.yaml")]


def apply_overrides(root, overrides) -> dict[str, list[str]]:
    """Rewrite the params files with `key=value` overrides exactly as `dvc exp run -S key=value` does.

    DVC's own code does it (Hydra override grammar: `train.lr=0.1`, `+new.key=1`, `~drop.key`,
    `other.yaml:key=1` for another params file), so a value means what it means to `dvc exp run`.
    Each file is edited as a scratch copy and swapped in atomically. The caller restores the
    user's files afterwards (iwsft.workspace.one_run_params). Returns the overrides grouped by file.
    """
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides as dvc_apply_overrides

    from iwsft.io.durable import write_bytes_atomic

    grouped = to_path_overrides(list(overrides or []))
    for path, patterns in grouped.items():
        target = Path(root) / path
        scratch = target.with_name(f".{target.stem}.override{target.suffix}")  # same suffix: same format
        if target.is_file():
            shutil.copyfile(target, scratch)
        try:
            dvc_apply_overrides(scratch, patterns)
            write_bytes_atomic(target, scratch.read_bytes())
        finally:
            scratch.unlink(missing_ok=True)
    return grouped


def apply_profile(root, profile: str | None) -> str:
    """Layer profiles/NAME.yaml over params.yaml (as `iwsft profile NAME`); None or "demo": leave it.

    params.yaml as committed is the demo, so "demo" means no layer. An own model is a profile you
    write (profiles/own.yaml with model.base, curate.raw, ...) and name here. The name must be a
    file of profiles/ (a path such as `../x` is refused).
    """
    if not profile or profile == "demo":
        return "params.yaml as it is"
    from iwsft.config.loading import apply_profile as layer

    root = Path(root)
    layer(profile, params_path=root / "params.yaml", profiles_dir=root / "profiles")
    return f"profiles/{profile}.yaml over params.yaml"


def curate_raw_path(root) -> str:
    """params.yaml's curate.raw: the raw samples file the retrain flow watches. Read from the file as
    written, not through iwsft's schema: the flows run any DVC project with that key (runs_iwsft)."""
    from iwsft.config.loading import read_yaml

    written = read_yaml(Path(root) / "params.yaml")
    return os.path.normpath(written["curate"]["raw"])
