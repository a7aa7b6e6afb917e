"""The `math` task: the completion's final answer (iwsft.tasks.final_answer: the last `\\boxed{}`,
else "the answer is ...", else the last line's final number or expression), parsed and compared by
math-verify (1/2 = 0.5 = \\frac{1}{2}), time-boxed so that it never hangs.

Only the final answer is compared, never any expression math-verify could find in the text: it read
the restated question `Calculate 3 - 5.` as 3 - 5 and scored it right for -2. With the prompt given,
a final answer that is an expression copied from it (`\\boxed{3 - 5}`) scores 0 and casts no vote
(iwsft.tasks.text.copies_prompt). Unicode minus signs and full-width digits are read as ASCII first.

Why a worker process: math-verify's timeouts are signal.alarm, main-thread only, and Prefect runs
tasks in worker threads; a hung thread cannot be stopped. Each request goes to one long-lived
child process (iwsft/tasks/math_worker.py) with a deadline of `task.timeout_s`; past it the child
is killed and restarted, the check scores 0 and is counted (`stats()`: score_timeouts, reported in
the sample summary and evaluate's metrics). It works from any thread (one lock, one request at a
time) and costs about a second to start, once per stage.

Results are cached per (completion, answer): K samples of a small model often repeat, and a
pathological completion should not cost its timeout twice (it still counts every time).
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from iwsft.errors import UserError
from iwsft.tasks import math_worker
from iwsft.tasks.base import Task
from iwsft.tasks.final_answer import final_answer
from iwsft.tasks.text import ascii_numbers, copies_prompt

if TYPE_CHECKING:
    from iwsft.config.schema import Task as TaskConfig

# Run by its path, as a script; imported here (a few stdlib imports) so that its file is part of
# the stages' import closure, i.e. of their dvc deps: it is code that decides the scores.
WORKER = Path(math_worker.__file__)
START_TIMEOUT_S = 120.0  # importing sympy on a loaded 2-core machine; a start is not a check


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    for stream in (process.stdin, process.stdout):
        stream.close()


class MathTask(Task):
    name = "math"

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s  # seconds per check (params task.timeout_s)
        self.timeouts = self.errors = 0
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._finalizer = None
        self._cache: dict[tuple, tuple] = {}

    @classmethod
    def from_config(cls, config: TaskConfig) -> "MathTask":
        return cls(config.timeout_s)

    # --- the worker process -------------------------------------------------------------
    def _start(self) -> subprocess.Popen:
        # -P: the worker's folder is not put on sys.path (its siblings must not shadow anything)
        process = subprocess.Popen([sys.executable, "-P", str(WORKER)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True, bufsize=1)
        self._finalizer = weakref.finalize(self, _stop, process)  # also at interpreter exit
        if self._read(process, START_TIMEOUT_S) != "ready":
            self._kill()
            raise UserError(f"math task: the math-verify worker ({WORKER}) did not start within "
                            f"{START_TIMEOUT_S:.0f} s; is math-verify installed? (pip install -e .)")
        return process

    def _kill(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # kills and reaps the process (once)
        self._process = self._finalizer = None

    @staticmethod
    def _read(process: subprocess.Popen, timeout_s: float) -> str | None:
        """One reply line; "" when the worker died (end of its output); None when nothing came
        within timeout_s. One request is in flight at a time, so no second line can sit in the
        pipe's buffer unseen by select."""
        ready, _, _ = select.select([process.stdout], [], [], timeout_s)
        return process.stdout.readline().rstrip("\n") if ready else None

    def _call(self, request: dict):
        """(result, timed_out, failed) of one request, never waiting more than timeout_s."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._kill()
                self._process = self._start()
            try:
                self._process.stdin.write(json.dumps(request) + "\n")
                self._process.stdin.flush()
            except BrokenPipeError:  # the worker died between requests: restart, then one retry
                self._kill()
                self._process = self._start()
                self._process.stdin.write(json.dumps(request) + "\n")
                self._process.stdin.flush()
            line = self._read(self._process, self.timeout_s)
            if not line:  # None: still busy, out of time; "": it crashed. Either way a fresh one next
                self._kill()
                return None, line is None, line is not None
            reply = json.loads(line)
            return reply.get("ok"), False, "error" in reply

    def _cached(self, request: dict):
        key = tuple(request.values())
        if key not in self._cache:
            self._cache[key] = self._call(request)
        result, timed_out, failed = self._cache[key]
        self.timeouts += timed_out
        self.errors += failed
        return result

    def close(self) -> None:
        with self._lock:
            self._kill()

    # --- the Task interface -------------------------------------------------------------
    @staticmethod
    def compared_answer(completion, prompt=None) -> str | None:
        """The text compared with the gold answer: the final answer, unless copied from the prompt."""
        found = None if completion is None else final_answer(ascii_numbers(completion))
        return None if found is None or copies_prompt(found.source, prompt) else found.text

    def extract(self, completion, prompt=None):
        answer = self.compared_answer(completion, prompt)
        return None if answer is None else self._cached({"op": "extract", "completion": answer})

    def score(self, completion, answer, metadata=None, prompt=None):
        found = self.compared_answer(completion, prompt)
        if found is None:
            return 0.0
        return float(self._cached({"op": "score", "completion": found, "answer": ascii_numbers(str(answer))}) or 0.0)

    def stats(self):
        return {"score_timeouts": self.timeouts, "score_errors": self.errors}
