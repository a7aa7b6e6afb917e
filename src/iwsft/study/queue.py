"""The DVC side of `iwsft study`: what `dvc exp show --json` knows about the planned experiments,
queueing the missing ones (`dvc exp run --queue`), starting the workers (`dvc queue start -j N`)
and waiting until the queue has drained.

Measured with DVC 3.67 (and why the code is shaped so):
- `exp show --json` lists the current commit's experiments with `executor.state` queued, running,
  success or failed, and each finished one's params and metrics. The metrics the study reads are
  DVC-cached outputs (git-ignored), which `exp show` reads from the cache; a `cache: false` file
  that git ignores would be in neither the experiment's commit nor the cache.
- Queueing a name twice runs it twice; a failed name must be removed from the queue
  (`dvc queue remove NAME`) before it is queued again.
- `exp show` can fail while a worker is between files (a missing .run file): it is retried. It can also
  hang: reading a running experiment's branch whose temporary repository the worker has just deleted
  (seen once in CI: pygit2's blob reader waiting forever), so each call is killed after SHOW_TIMEOUT_S.
- Workers are detached processes: interrupting `iwsft study` leaves them running, and the next
  `iwsft study` waits for them.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from iwsft.errors import UserError
from iwsft.study.plan import Experiment

POLL_S = 20.0
SHOW_TIMEOUT_S = 300.0  # `dvc exp show --json` takes seconds; minutes on a loaded 2-core machine
DONE, FAILED, PENDING = "success", "failed", ("queued", "running")


@dataclass
class Found:
    """One experiment of the current commit, as `dvc exp show --json` reports it."""

    name: str
    state: str  # queued | running | success | failed
    params: dict = field(default_factory=dict)  # params.yaml's content
    metrics: dict = field(default_factory=dict)  # metrics file path -> its JSON (files that exist)


def run_dvc(*args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    """`dvc ARGS`; past `timeout` seconds the process is killed and the result reads as a failure (rc -9)."""
    try:
        done = subprocess.run(["dvc", *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        done = subprocess.CompletedProcess(expired.cmd, -9, "", f"no answer in {timeout:g} s (killed)")
    if check and done.returncode != 0:
        raise UserError(f"`dvc {' '.join(args)}` failed:\n{(done.stderr or done.stdout).strip()[-3000:]}")
    return done


def head_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError("a study needs a git repository with a commit: its experiments are based on one")
    return done.stdout.strip()


def require_clean_tree() -> None:
    """The experiments are the committed project plus their overrides; an uncommitted edit would be
    part of some experiments and not of those queued before it."""
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                             text=True).stdout.split("\n")
    changed = [line[3:] for line in changed if line.strip()]
    if changed:
        raise UserError(f"uncommitted changes in {', '.join(changed[:5])}: commit them first (each experiment is "
                        "based on the current commit)")


def parse_show(entries: list, head: str) -> dict[str, Found]:
    """`dvc exp show --json` -> {name: Found} for the experiments of commit `head`."""
    found: dict[str, Found] = {}
    for baseline in entries:
        if baseline.get("rev") != head:
            continue
        for experiment in baseline.get("experiments") or []:
            tip = (experiment.get("revs") or [{}])[0]
            data = tip.get("data") or {}
            executor = experiment.get("executor") or {}
            name = experiment.get("name") or tip.get("name")
            metrics = {path: value["data"] for path, value in (data.get("metrics") or {}).items()
                       if isinstance(value, dict) and "data" in value}
            params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
            found[name] = Found(name, executor.get("state") or DONE, params, metrics)
    return found


def show(attempts: int = 3, timeout_s: float = SHOW_TIMEOUT_S) -> dict[str, Found]:
    head = head_commit()
    for attempt in range(attempts):
        done = run_dvc("exp", "show", "--json", check=False, timeout=timeout_s)
        if done.returncode == 0:
            return parse_show(json.loads(done.stdout), head)
        time.sleep(2.0 * (attempt + 1))  # a worker was between files; ask again
    raise UserError(f"`dvc exp show --json` failed {attempts} times:\n{done.stderr.strip()[-2000:]}")


def queue(experiments: list[Experiment], found: dict[str, Found]) -> list[Experiment]:
    """Queue each planned experiment that is neither finished nor pending; a failed one is taken off
    the queue first. Returns the experiments queued now."""
    queued = []
    for experiment in experiments:
        state = found[experiment.name].state if experiment.name in found else None
        if state == DONE or state in PENDING:
            continue
        if state == FAILED:
            run_dvc("queue", "remove", experiment.name, check=False)
        args = ["exp", "run", "--queue", "--quiet", "-n", experiment.name]
        for assignment in experiment.set_params():
            args += ["-S", assignment]
        run_dvc(*args, *experiment.targets)
        queued.append(experiment)
    return queued


def start(jobs: int) -> None:
    run_dvc("queue", "start", "--jobs", str(jobs))


def wait(experiments: list[Experiment], jobs: int, poll_s: float = POLL_S) -> dict[str, Found]:
    """Poll until none of `experiments` is queued or running; a progress bar counts the finished."""
    names = {e.name for e in experiments}
    with tqdm(total=len(names), desc="study", unit="exp", file=sys.stderr) as bar:
        for poll in itertools.count(1):
            if poll % 15 == 0:
                start(jobs)  # a worker that died (the machine slept, a kill) is replaced; live ones are kept
            found = show()
            finished = sum(found[n].state not in PENDING for n in names if n in found)
            bar.update(finished - bar.n)
            if all(n in found and found[n].state not in PENDING for n in names):
                return found
            time.sleep(poll_s)
