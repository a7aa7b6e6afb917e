"""`iwsft run [--profile NAME]`: `dvc repro` with a profile for this run only, then the report's
table and the registry, read while the profile is still in force (its registry.model_name).

    iwsft run                     # params.yaml as it is (the demo, as committed)
    iwsft run --profile smollm2   # profiles/smollm2.yaml over it, params.yaml restored afterwards

The run holds the workspace lock (iwsft.workspace), as a Prefect flow run does, so a second run
or a stray `iwsft <stage>` cannot read the profiled params.yaml halfway. dvc.lock records the
profiled params: a later plain `dvc repro` re-runs what the profile changed (DVC's run cache
restores stages it has seen, so switching back is quick).
"""

from __future__ import annotations

import subprocess
import sys

from iwsft.errors import UserError

DEMO = "demo"  # params.yaml as committed: no layer


def add_commands(subparsers) -> None:
    run = subparsers.add_parser("run", help="dvc repro (with a profile for this run only), then the report and registry")
    run.add_argument("--profile", default=DEMO, help="a file of profiles/ (default: demo = params.yaml as it is)")
    run.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                     help="wait this long for another run holding the workspace (default: fail at once)")


def _step(*command: str) -> None:
    if subprocess.call(list(command)) != 0:
        raise UserError(f"`{' '.join(command[-3:] if command[0] == sys.executable else command)}` failed: "
                        "its message is above")


def handle(args) -> bool:
    if args.command != "run":
        return False
    from iwsft.config.loading import apply_profile, load_params
    from iwsft.workspace import one_run_params, restore_crashed_run, workspace_lock

    with workspace_lock(".", what=f"iwsft run --profile {args.profile}", wait_s=args.wait):
        for restored in restore_crashed_run("."):
            print(f"iwsft run: restored {restored}, left overridden by a crashed run", file=sys.stderr)
        with one_run_params("."):
            if args.profile == DEMO:
                load_params()  # checked before dvc starts: a bad value is one message, not a failed stage
            else:
                apply_profile(args.profile)
            print(f"iwsft run: profile {args.profile}", file=sys.stderr)
            _step("dvc", "repro")
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
