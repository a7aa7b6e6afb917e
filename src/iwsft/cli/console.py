"""`iwsft run`'s console: per stage, DVC's two lines and one line of outcome; everything else in the
stage's log file.

`dvc repro`'s output (its own lines and every stage's stdout and stderr, merged in order) is read as it
comes and cut at DVC's `Running stage 'NAME':` lines. The console gets, per stage that runs:

    Running stage 'evaluate@sft':
    > iwsft evaluate --model sft
      done in 6.1 s: pass@1 0.215 [0.180, 0.250]; run http://127.0.0.1:5000/#/experiments/1/runs/0c3f...;
      log logs/evaluate@sft.log      (one line: cut here to fit this page)

and logs/<stage>.log (git-ignored, rewritten when the stage runs again) every line the stage and DVC
printed for it: the gates' checks, the training losses, the tracking line, DVC's warnings. A stage DVC
skips keeps DVC's one line ("Stage 'x' didn't change, skipping"). A failed stage shows the last lines
of its log (its error is among them), then DVC's error. A progress bar (the stages draw one only for
work that has taken 2 s: TQDM_DELAY, iwsft.runtime) is shown in place on a terminal and erased when the
stage ends: never a line of its own. IWSFT_CONSOLE=full prints everything, as `dvc repro` does.

The key figure of each stage is read from what it wrote (FIGURES); a file that is not there is no
figure, never an error: the console is not where a run fails.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections import deque
from pathlib import Path

LOGS = Path("logs")
STAGE = re.compile(r"Running stage '([^']+)':")
# DVC's own lines between stages: they end the stage before them and stay on the console
DVC_LINE = re.compile(r"(Stage '|Restored stage '|Data and pipelines are up to date|Use `dvc push`"
                      r"|ERROR: failed to reproduce)")
TRACKED = re.compile(r"tracking: \S+ -> (\S+)(?: run (\w+))?")
LOSS = re.compile(r"'train_loss': '?([0-9.e+-]+)")  # the HF Trainer's summary line (prepare's pi_ref)
TAIL_LINES = 25  # of a failed stage's log, on the console


def log_name(stage: str) -> str:
    """generate/dvc.yaml:prepare -> generate-prepare; train@sft stays train@sft."""
    return re.sub(r"[^\w@.-]+", "-", stage.replace("/dvc.yaml:", "-").replace("dvc.yaml:", ""))


def _lines(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def _json(path) -> dict:
    return json.loads(Path(path).read_text())


def _train_loss(method: str) -> str:
    losses = [e["train_loss"] for e in _json(f"data/train/{method}/train_log.json") if "train_loss" in e]
    return f"train loss {losses[-1]:.4f}"


def _pass_at_1(model: str) -> str:
    m = _json(f"data/evaluate/{model}/metrics.json")
    return f"pass@1 {m['pass_at_1']:.3f} [{m['pass_at_1_ci_low']:.3f}, {m['pass_at_1_ci_high']:.3f}]"


def _registered(_) -> str:
    r = _json("reports/registry.json")
    if r.get("promoted"):
        return f"{r['model_name']}: v{r['winner']['version']} ({r['winner']['method']}) promoted to champion"
    if r.get("champion"):
        return f"{r['model_name']}: champion v{r['champion']} kept"
    return f"{r['model_name']}: no champion yet, candidate v{r['candidate']['version']} ({r['candidate']['method']})"


def _sampled(_) -> str:
    s = _json("data/sample/summary.json")
    return f"{s['samples']} samples, sample accuracy {s['sample_accuracy']:.3f}"


def _curated(_) -> str:
    r = _json("data/curate/report.json")
    return f"kept {r['kept']} of {r['input']} samples"


def _quality(_) -> str:
    s = _json("data/quality/summary.json")
    return f"{s['examples']} examples, multiplicity 0/1/2/3: {'/'.join(map(str, s['multiplicity_counts']))}"


def _reference(_) -> str:
    f = _json("data/reference/fingerprint.json")
    return f"pi_ref log-probs of {f['tokens']} completion tokens ({f['examples']} examples)"


def _prompts(_) -> str:
    return f"{_lines(Path('data/prompts/train.jsonl'))} train, {_lines(Path('data/prompts/eval.jsonl'))} eval prompts"


# `iwsft COMMAND` -> its key figure, from its outputs (the argument: --method / --model's value)
FIGURES = {"prompts": _prompts, "sample": _sampled, "curate": _curated, "quality": _quality, "reference": _reference,
           "train": _train_loss, "evaluate": _pass_at_1, "report": lambda _: "reports/report.md",
           "register": _registered}


def key_figure(command: str, log: list[str]) -> str:
    """The figure of the stage run by `command` (DVC's "> iwsft train --method sft" line, without "> ")."""
    words = command.split()
    name = words[1] if len(words) > 1 and Path(words[0]).name == "iwsft" else ""
    target = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--method", "--model")), None)
    try:
        if name in FIGURES:
            return FIGURES[name](target)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass
    loss = next((m.group(1) for line in reversed(log) if (m := LOSS.search(line))), None)
    return f"train loss {float(loss):.4f}" if loss else ""


class Relay:
    """Feed it dvc's output as it comes (text), then close(): see the module docstring."""

    def __init__(self, console, full: bool = False, logs: Path = LOGS):
        self.console, self.full, self.logs = console, full, logs
        self.partial, self.stage, self.shown = "", None, False
        self.live = hasattr(console, "isatty") and console.isatty()

    # --- input ---
    def feed(self, text: str) -> None:
        if self.full:
            self.console.write(text)
            self.console.flush()
        *complete, self.partial = (self.partial + text).split("\n")
        for line in complete:  # a line redrawn with \r (a progress bar) is what it shows last
            self._line(next((part for part in reversed(line.split("\r")) if part.strip()), ""))
        if "\r" in self.partial:  # only what it shows last is kept: a bar redrawn for hours stays one line
            shown = next((part for part in reversed(self.partial.split("\r")) if part.strip()), "")
            self.partial = "\r" + shown + ("\r" if self.partial.endswith("\r") else "")
            if not self.full:
                self._progress(shown)

    def close(self, failed: bool = False) -> None:
        if self.partial:
            self._line(self.partial)
            self.partial = ""
        self._end_stage(failed)

    # --- lines ---
    def _line(self, line: str) -> None:
        started = STAGE.match(line)
        if started or DVC_LINE.match(line):
            self._end_stage(failed=line.startswith("ERROR: failed to reproduce"))
        if started:
            self._start_stage(started.group(1))
        if self.stage is None:  # DVC's own lines, and everything outside a stage
            self._say(line)
            return
        stage = self.stage
        stage["log"].write(line + "\n")
        stage["log"].flush()
        stage["tail"].append(line)
        if started or (stage["command"] is None and line.startswith("> ")):
            if not started:
                stage["command"] = line[2:]
            self._say(line)
        elif found := TRACKED.match(line):
            link, run_id = found.groups()  # a server's page, or a local store (sqlite:///...) and the run's id
            stage["run"] = link if link.startswith("http") else f"{run_id} in {link}"
        elif line.startswith("WARNING"):
            stage["warnings"] += 1

    def _start_stage(self, name: str) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        path = self.logs / f"{log_name(name)}.log"
        self.stage = {"name": name, "path": path, "log": open(path, "w", encoding="utf-8"), "command": None,
                      "started": time.monotonic(), "tail": deque(maxlen=TAIL_LINES), "run": None, "warnings": 0}

    def _end_stage(self, failed: bool) -> None:
        stage, self.stage = self.stage, None
        if stage is None:
            return
        stage["log"].close()
        seconds = time.monotonic() - stage["started"]
        if failed:
            self._say(f"  failed after {seconds:.1f} s; the last lines of {stage['path']}:")
            for line in stage["tail"]:
                self._say(line)
            return
        parts = [key_figure(stage["command"] or "", list(stage["tail"])), stage["run"] and f"run {stage['run']}",
                 f"log {stage['path']}" + (f" ({stage['warnings']} warning{'s' if stage['warnings'] > 1 else ''})"
                                           if stage["warnings"] else "")]
        self._say(f"  done in {seconds:.1f} s: " + "; ".join(part for part in parts if part))

    # --- output ---
    def _say(self, line: str) -> None:
        if self.full:
            return
        self._clear()
        self.console.write(line + "\n")
        self.console.flush()

    def _progress(self, bar: str) -> None:
        """A progress bar in place, on a terminal only (a log or a pipe gets no partial lines)."""
        if not self.live or not bar.strip():
            return
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.console.write("\r" + bar[:width] + "\x1b[K")
        self.console.flush()
        self.shown = True

    def _clear(self) -> None:
        if self.shown:
            self.console.write("\r\x1b[K")
            self.shown = False
