"""`iwsft control <stage>` (what control/dvc.yaml runs, in control/: iwsft.control.stages.<stage>.run with
the typed control/params.yaml, iwsft.config.control) and `iwsft control validate FILE --env ENV`."""

from __future__ import annotations

import sys
import time

from iwsft.methods import CONTROL_METHODS

STAGES = ("data", "curate", "quality", "reference", "train", "evaluate", "report", "register")
PER_METHOD = ("train", "evaluate")  # control/dvc.yaml's foreach stages, one per method


def add_commands(commands) -> None:
    control = commands.add_parser("control", help="the continuous-control pipeline (control/dvc.yaml) and its dataset check")
    stages = control.add_subparsers(dest="control_command", required=True)
    for stage in STAGES:
        sub = stages.add_parser(stage, help=f"run control's {stage} stage with control/params.yaml's settings")
        sub.add_argument("--params", default="params.yaml")
        if stage in PER_METHOD:
            sub.add_argument("--method", required=True, choices=tuple(CONTROL_METHODS))
    validate = stages.add_parser("validate", help="check a dataset .npz (observations, actions, rewards, terminations, "
                                 "truncations) for an env; writes nothing")
    validate.add_argument("file")
    validate.add_argument("--env", required=True)


def handle(args) -> bool:
    if args.command != "control":
        return False
    import os
    from importlib import import_module

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    if args.control_command == "validate":
        from iwsft.control.envs import MAX_STEPS
        from iwsft.control.stages.data import check_file
        from iwsft.errors import UserError

        if args.env not in MAX_STEPS:
            raise UserError(f"--env {args.env!r}: choose one of {', '.join(MAX_STEPS)}")
        frame = check_file(args.file, args.env, out_dir=None)
        print(f"{args.file}: valid for {args.env}, {len(frame)} episodes, {int(frame['length'].sum())} transitions, "
              f"returns {frame['return'].min():.1f}..{frame['return'].max():.1f}")
        return True
    from iwsft.config.control import load

    params = load(args.params)
    run = import_module(f"iwsft.control.stages.{args.control_command}").run
    if args.control_command in PER_METHOD:
        run(params, args.method)
    else:
        run(params)
    print(f"iwsft control {args.control_command}: done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return True
