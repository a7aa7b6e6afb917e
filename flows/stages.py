"""Run one DVC stage as a subprocess, stream its output, and say why it failed.

Features: `dvc repro --single-item STAGE` (DVC still decides whether the stage is stale; the flow
only fixes the order), every output line handed to a callback as it comes (the Prefect logger),
a timeout that stops the whole process group (dvc and the stage command under it), and a failure
kind that decides whether a retry can help.

Failure kinds:
- "gate": a data gate said no (gate-named stage, or a gate message). Deterministic: never retried.
- "user": the stage printed the CLI's `iwsft <stage>: error: ...` (bad data, missing file, wrong
  param; src/iwsft/cli/main.py exits 1 with it). Deterministic: never retried.
- "timeout": the stage ran past its limit. Retried (a loaded machine is the usual cause).
- "crash": anything else (a traceback, a signal, OOM, DVC's lock). Retried.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from flows.dag import child_environment, dvc_executable, is_gate
from iwsft.cli import stage_server

USER_ERROR = re.compile(r"^iwsft [\w-]+: error: ")
# `dvc repro` itself exits 255 whatever the stage did; its last line has the command's own status
STAGE_EXIT = re.compile(r"failed to run: .*, exited with (-?\d+)")
GATE_MESSAGE = re.compile(r"\bgate\b.*\bfail|\bfail.*\bgate\b", re.IGNORECASE)
NOT_RETRIED = ("gate", "user")
TAIL_LINES = 40
GRACE_S = 15  # after SIGINT, how long DVC gets to clean up its lock before SIGKILL


@dataclass
class StageResult:
    stage: str
    returncode: int
    seconds: float
    outcome: str  # "ran", "restored from run-cache" or "up to date", as DVC's output says
    timed_out: bool = False
    tail: list[str] = field(default_factory=list)

    @property
    def command_returncode(self) -> int:
        """The stage command's exit status, as DVC reports it (else dvc's own)."""
        found = [int(m.group(1)) for line in self.tail if (m := STAGE_EXIT.search(line))]
        return found[-1] if found else self.returncode


class StageFailed(RuntimeError):
    """A stage ended non-zero; str() is the one-paragraph message shown in logs and artifacts."""

    def __init__(self, result: StageResult, kind: str):
        self.result, self.kind = result, kind
        detail = next((line for line in reversed(result.tail) if USER_ERROR.match(line)), None)
        detail = detail or next((line for line in reversed(result.tail) if "ERROR" in line or "Error" in line), None)
        why = "timed out" if result.timed_out else f"exited {result.command_returncode}"
        super().__init__(f"stage {result.stage!r} failed ({kind}): {why}" + (f": {detail}" if detail else ""))

    @property
    def details(self) -> str:
        """The stage's own error block (the CLI's message and its indented lines), if it printed one."""
        tail = self.result.tail
        start = next((i for i, line in enumerate(tail) if USER_ERROR.match(line)), None)
        if start is None:
            return ""
        end = next((i for i in range(start + 1, len(tail)) if tail[i].startswith("ERROR: ")), len(tail))
        return "\n".join(tail[start:end])

    @property
    def retriable(self) -> bool:
        return self.kind not in NOT_RETRIED


def classify(result: StageResult) -> str:
    if is_gate(result.stage) or any(GATE_MESSAGE.search(line) for line in result.tail):
        return "gate"
    if result.timed_out:
        return "timeout"
    if result.command_returncode == 1 and any(USER_ERROR.match(line) for line in result.tail):
        return "user"
    return "crash"


def _stop_group(process: subprocess.Popen) -> None:
    """SIGINT first (DVC then kills its stage and releases its lock), SIGKILL if it lingers."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# A process started in the background (nohup, `cmd &` in a script, some CI runners) has SIGINT ignored,
# and exec keeps it so: DVC would ignore the SIGINT that asks it to stop and be killed GRACE_S later,
# its lock left behind. The child then restores the default before it execs the command.
_WITH_SIGINT = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])"


def run_command(command: list[str], cwd, timeout_s: float | None, on_line: Callable[[str], None],
                extra_env: dict | None = None):
    """Run `command`, feed each output line to on_line; returns (returncode, timed_out, tail)."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        command = [sys.executable, "-c", _WITH_SIGINT, *command]
    # own session: the timeout can stop dvc *and* the stage command it started, nothing else
    process = subprocess.Popen(command, cwd=cwd, env={**child_environment(), **(extra_env or {})},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                               start_new_session=True)
    timed_out = threading.Event()

    def expire():
        timed_out.set()
        _stop_group(process)

    timer = threading.Timer(timeout_s, expire) if timeout_s else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        for line in process.stdout:  # text mode splits on \r too, so progress bars become lines
            line = line.rstrip()
            if line:
                tail.append(line)
                on_line(line)
        returncode = process.wait()
    finally:
        if timer:
            timer.cancel()
        if process.poll() is None:  # the caller was interrupted: leave no stage running
            _stop_group(process)
    return returncode, timed_out.is_set(), list(tail)


def repro_stage(stage: str, root, timeout_s: float | None, on_line: Callable[[str], None],
                server: str | None = None) -> StageResult:
    """`dvc repro --single-item STAGE` in `root`; raises StageFailed (with its kind) on failure. server: the
    socket of the flow run's resident stage runner (iwsft.cli.stage_server), if it has one."""
    started = time.perf_counter()
    outcome = "up to date"

    def watch(line: str) -> None:
        nonlocal outcome
        if line.startswith("Running stage"):
            outcome = "ran"
        elif "is cached - skipping run" in line:
            outcome = "restored from run-cache"
        on_line(line)

    command = [dvc_executable(), "repro", "--single-item", stage]
    returncode, timed_out, tail = run_command(command, root, timeout_s, watch,
                                              {stage_server.ENV: server} if server else {})
    result = StageResult(stage, returncode, time.perf_counter() - started, outcome, timed_out, tail)
    if returncode != 0 or timed_out:
        raise StageFailed(result, classify(result))
    return result
