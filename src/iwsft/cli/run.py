"""`iwsft run [--profile NAME]`: `dvc repro` with a profile for this run only, then the report's
table and the registry, read while the profile is still in force (its registry.model_name, which
reports/last_run.json keeps for later `iwsft registry` commands).

    iwsft run                     # params.yaml as it is (the demo, as committed)
    iwsft run --profile smollm2   # profiles/smollm2.yaml over it, params.yaml restored afterwards

The run holds the workspace lock (iwsft.workspace), as a Prefect flow run does, so a second run
or a stray `iwsft <stage>` cannot read the profiled params.yaml halfway. dvc.lock records the
profiled params: a later plain `dvc repro` re-runs what the profile changed (DVC's run cache
restores stages it has seen, so switching back is quick).

Before `dvc repro`, the preflight (iwsft.config.preflight) checks what a stage would refuse at its
start (the model directory, the device, a custom scorer, the data files no stage writes): one message,
nothing run. When a stage fails anyway, the run names it and says how to get its previous outputs
back: DVC deletes a stage's outputs before running it, and `dvc checkout --force STAGE` restores
them as dvc.lock records them. It does not restore them itself: the failed stage's own reports
(data/gates/<boundary>.json of a failed gate) are among those outputs, and they say what went wrong.

The stages run in children of a resident stage runner (iwsft.cli.stage_server) that made their imports
(torch, transformers, MLflow) once for the run: ~5 s less per stage.

The console shows per stage DVC's two lines and one of outcome (time, key figure, MLflow run, log
file); each stage's whole output is in logs/<stage>.log (iwsft.cli.console; IWSFT_CONSOLE=full: all of
it on the console too).
"""

from __future__ import annotations

import codecs
import os
import re
import subprocess
import sys
from pathlib import Path

from iwsft.errors import UserError

DEMO = "demo"  # params.yaml as committed: no layer
# DVC's last words when a stage fails (dvc.repo.reproduce.ReproductionError), whatever the cause
FAILED_STAGE = re.compile(r"failed to reproduce '([^']+)'")
TAIL_CHARS = 64 * 1024  # of dvc's stderr, kept to find that line


def add_commands(subparsers) -> None:
    run = subparsers.add_parser("run", help="dvc repro (with a profile for this run only), then the report and registry")
    run.add_argument("--profile", default=DEMO, help="a file of profiles/ (default: demo = params.yaml as it is)")
    run.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                     help="wait this long for another run holding the workspace (default: fail at once)")


def _step(*command: str) -> None:
    if subprocess.call(list(command)) != 0:
        raise UserError(f"`{' '.join(command[-3:] if command[0] == sys.executable else command)}` failed: "
                        "its message is above")


def _dvc_environment() -> dict:
    # unbuffered: the stages' lines reach the relay (and a log being followed) as they are printed
    return {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


def _repro(env: dict) -> None:
    """`dvc repro`, its output condensed to a few lines per stage as it comes (iwsft.cli.console: the
    rest in logs/<stage>.log), its tail kept: a failed stage is named, with the command that brings
    back its previous outputs."""
    from iwsft.cli.console import Relay

    full = os.environ.get("IWSFT_CONSOLE", "").lower() == "full"
    decoder, tail = codecs.getincrementaldecoder("utf-8")(errors="replace"), ""
    relay = Relay(sys.stderr, full)
    with subprocess.Popen(["dvc", "repro"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) as process:
        while chunk := process.stdout.read1(4096):  # waits for dvc, even on Ctrl-C
            text = decoder.decode(chunk)
            relay.feed(text)
            tail = (tail + text)[-TAIL_CHARS:]
    relay.feed(decoder.decode(b"", final=True))
    failed = FAILED_STAGE.findall(tail)
    relay.close(failed=bool(failed))
    if process.returncode == 0:
        return
    if not failed:
        raise UserError("`dvc repro` failed: its message is above")
    raise UserError(f"stage {failed[-1]!r} failed: its message is above. {restore_hint(failed[-1])}")


def restore_hint(stage: str, root: Path = Path(".")) -> str:
    """How to get back the outputs DVC deleted before running `stage` (generate/dvc.yaml:sample,
    train@sft, curate), or that it had none."""
    from iwsft.config.loading import read_yaml

    folder, _, name = stage.rpartition(":")
    lock = root / (str(Path(folder).parent / "dvc.lock") if folder else "dvc.lock")
    try:
        recorded = name in (read_yaml(lock).get("stages") or {}) if lock.is_file() else False
    except UserError:
        recorded = False
    if not recorded:
        return f"It had no previous outputs ({lock} does not record it): nothing to restore."
    return (f"DVC deleted its previous outputs before running it; `dvc checkout --force {stage}` brings them back "
            f"as {lock} records them (this replaces what the failed run wrote, its gate reports included).")


def handle(args) -> bool:
    if args.command != "run":
        return False
    from iwsft.cli import stage_server
    from iwsft.cli.registry import record_last_run
    from iwsft.config import preflight
    from iwsft.config.loading import apply_profile, load_params
    from iwsft.workspace import one_run_params, restore_crashed_run, workspace_lock

    with workspace_lock(".", what=f"iwsft run --profile {args.profile}", wait_s=args.wait):
        for restored in restore_crashed_run("."):
            print(f"iwsft run: restored {restored}, left overridden by a crashed run", file=sys.stderr)
        # the stage runner makes its imports while the profile and the preflight are read (iwsft.cli.stage_server)
        with one_run_params("."), stage_server.running(_dvc_environment()) as env:
            # checked before dvc starts: a bad value is one message, not a failed stage
            params = load_params() if args.profile == DEMO else apply_profile(args.profile)
            print(f"iwsft run: profile {args.profile}", file=sys.stderr)
            preflight.check(params, ".", preflight.plan("."))
            # `iwsft registry show` (and promote, rollback) default to this run's registered model
            record_last_run(args.profile, params.registry.model_name)
            _repro(env)
            # DVC copies a directory output into its cache when a stage ends (a file it links); relinking
            # makes each model in models/ and its cached copy one file on disk (.dvc/config cache.type)
            _step("dvc", "checkout", "--relink", "--quiet", "dvc.yaml")
            iwsft = (sys.executable, "-m", "iwsft.cli.main")
            _step(*iwsft, "show-report")
            _step(*iwsft, "registry", "show")
    if args.profile != DEMO:
        print(f"iwsft run: params.yaml restored (dvc.lock holds profile {args.profile}'s params; "
              f"`iwsft profile {args.profile}` keeps them)", file=sys.stderr)
    return True
