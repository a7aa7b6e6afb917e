"""`iwsft`: one subcommand per pipeline stage (what dvc.yaml calls) plus a few user tools.

Errors a user can fix (bad data, a stale reference column, a wrong param, a missing file) are
printed as one clear message with exit status 1, never as a traceback; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from iwsft.errors import UserError

STAGES = ("prepare", "sample", "curate", "quality", "reference", "train", "evaluate", "report")
TRAIN_METHODS = ("sft", "iwsft", "sftq", "iwsftq")
EVAL_MODELS = ("base",) + TRAIN_METHODS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iwsft", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        sub = commands.add_parser(stage, help=f"run the {stage} stage with params.yaml's settings")
        sub.add_argument("--params", default="params.yaml")
        if stage == "train":
            sub.add_argument("--method", required=True, choices=TRAIN_METHODS)
        if stage == "evaluate":
            sub.add_argument("--model", required=True, choices=EVAL_MODELS)
    validate = commands.add_parser("validate", help="check a file against a stage boundary's schema")
    validate.add_argument("boundary", choices=["raw"])
    validate.add_argument("file")
    profile = commands.add_parser("profile", help="layer profiles/NAME.yaml over params.yaml")
    profile.add_argument("name")
    commands.add_parser("show-report", help="print reports/report.md's table")
    return parser


def _run_stage(args) -> None:
    from iwsft.params import load_params

    params = load_params(args.params)
    import torch

    torch.set_num_threads(int(params.get("threads", 1)))
    started = time.perf_counter()
    module = importlib.import_module(f"iwsft.stages.{args.command}")
    if args.command == "train":
        module.run(params, args.method)
    elif args.command == "evaluate":
        module.run(params, args.model)
    else:
        module.run(params)
    print(f"iwsft {args.command}: done in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def _validate(args) -> None:
    from iwsft.schema import read_raw_samples

    samples = read_raw_samples(args.file)
    records = samples.records
    rewarded = sum(1 for r in records if r.get("reward") is not None)
    print(f"{args.file}: {len(records)} valid records ({rewarded} with a reward)")


def _show_report() -> None:
    from pathlib import Path

    report = Path("reports/report.md")
    if not report.exists():
        raise FileNotFoundError("reports/report.md does not exist yet: run `dvc repro` (or `make run`)")
    print(report.read_text())


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        if args.command in STAGES:
            _run_stage(args)
        elif args.command == "validate":
            _validate(args)
        elif args.command == "profile":
            from iwsft.params import apply_profile

            apply_profile(args.name)
            print(f"params.yaml now uses profile {args.name!r}")
        elif args.command == "show-report":
            _show_report()
    except (UserError, FileNotFoundError) as error:
        print(f"iwsft {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
