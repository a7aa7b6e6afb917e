"""`iwsft control <stage>` (what control/dvc.yaml runs, in control/) and `iwsft control validate FILE --env ENV`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

STAGES = ("data", "curate", "quality", "reference", "train", "evaluate", "report", "register")


def add_commands(commands) -> None:
    control = commands.add_parser("control", help="the continuous-control pipeline (control/dvc.yaml) and its dataset check")
    stages = control.add_subparsers(dest="control_command", required=True)
    for stage in STAGES:
        sub = stages.add_parser(stage, help=f"run control's {stage} stage with control/params.yaml's settings")
        sub.add_argument("--params", default="params.yaml")
        if stage in ("train", "evaluate"):
            sub.add_argument("--method", required=True, choices=("bc", "bc10", "sftq", "iwsftq"))
    validate = stages.add_parser("validate", help="check a dataset .npz (observations, actions, rewards, terminations, "
                                 "truncations) for an env; writes nothing")
    validate.add_argument("file")
    validate.add_argument("--env", required=True)


def load_params(path: str) -> dict:
    import yaml

    from iwsft.errors import UserError

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist (run control's stages in control/, where params.yaml is)")
    params = yaml.safe_load(Path(path).read_text()) or {}
    missing = [key for key in ("envs", "seeds", "workers", "curate", "bc", "finetune", "evaluate") if key not in params]
    if missing:
        raise UserError(f"{path}: missing section(s) {', '.join(missing)}")
    return params


def handle(args) -> bool:
    if args.command != "control":
        return False
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    if args.control_command == "validate":
        from iwsft.control.envs import MAX_STEPS
        from iwsft.control.generate import check_file
        from iwsft.errors import UserError

        if args.env not in MAX_STEPS:
            raise UserError(f"--env {args.env!r}: choose one of {', '.join(MAX_STEPS)}")
        frame = check_file(args.file, args.env, {}, out_dir=None)
        print(f"{args.file}: valid for {args.env}, {len(frame)} episodes, {int(frame['length'].sum())} transitions, "
              f"returns {frame['return'].min():.1f}..{frame['return'].max():.1f}")
        return True
    params = load_params(args.params)
    if args.control_command == "report":
        from iwsft.control.report import run
    elif args.control_command == "register":
        from iwsft.control.register import run
    elif args.control_command == "data":
        from iwsft.control.generate import data as run
    else:
        from iwsft.control import stages

        run = getattr(stages, args.control_command)
    if args.control_command in ("train", "evaluate"):
        run(params, args.method)
    else:
        run(params)
    print(f"iwsft control {args.control_command}: done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return True
