"""`iwsft`: one subcommand per pipeline stage (what dvc.yaml calls) plus a few user tools.

The stages, gates, validate, profile and show-report are here; every other command belongs to a
family module of this package (FAMILIES: registry, models, tasks, run, study, control), which adds
its subcommands to the parser and runs them.

Errors a user can fix (bad data, a stale reference column, a wrong param, a missing file) are
printed as one clear message with exit status 1, never as a traceback; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
import time

from iwsft.cli import control, models, registry, run, stage_server, study, tasks
from iwsft.data.conversation import is_conversational
from iwsft.errors import UserError
from iwsft.gates import BOUNDARIES
from iwsft.methods import BASE, NAMES
from iwsft.runtime import collect_garbage_from_now_on

STAGES = ("sources", "prepare", "prompts", "sample", "solutions", "curate", "quality", "reference", "train", "evaluate",
          "report", "register")
# command families: each module's add_commands(subparsers) declares its commands, handle(args) runs
# them (True) or says they are not its own (False)
FAMILIES = (registry, models, tasks, run, study, control)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iwsft", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        sub = commands.add_parser(stage, help=f"run the {stage} stage with params.yaml's settings")
        sub.add_argument("--params", default="params.yaml")
        if stage == "train":
            sub.add_argument("--method", required=True, choices=NAMES)
        if stage == "prepare":
            sub.add_argument("--teacher", action="store_true", help="the demo's teacher (params' teacher section)")
        if stage == "evaluate":
            sub.add_argument("--model", required=True, choices=(BASE, *NAMES))
        if stage == "sources":
            sub.add_argument("--name", required=True, help="the dataset's key in params `sources:`")
    gate = commands.add_parser("gate", help="run a data gate on the pipeline's files; writes data/gates/BOUNDARY.json")
    gate.add_argument("boundary", choices=BOUNDARIES)
    gate.add_argument("--params", default="params.yaml")
    validate = commands.add_parser("validate", help="check files against a stage boundary's gate; writes nothing",
                                   description="raw: your samples files (.jsonl or .parquet). eval: held-out "
                                   "prompts files (.jsonl: id, prompt, answer, optional metadata; default: "
                                   "curate.eval_prompts). Other boundaries: a file or folder shaped like the "
                                   "pipeline's (default: the pipeline's own).")
    validate.add_argument("boundary", choices=BOUNDARIES)
    validate.add_argument("files", nargs="*", metavar="FILE")
    validate.add_argument("--params", default="params.yaml",
                          help="thresholds (defaults if the file is absent: raw, and eval given a FILE)")
    profile = commands.add_parser("profile", help="layer profiles/NAME.yaml over params.yaml (rewrites it)")
    profile.add_argument("name")
    commands.add_parser("show-report", help="print reports/report.md's table")
    for family in FAMILIES:
        family.add_commands(commands)
    return parser


def _run_stage(args) -> None:
    from iwsft.config.loading import load_params
    from iwsft.tracking.store import ensure_tracking_store
    from iwsft.workspace import refuse_if_locked

    refuse_if_locked()  # a flow run holds this workspace (and its one-run params): not ours to touch
    params = load_params(args.params)  # checked: every bad value named at once
    ensure_tracking_store(params)  # a configured server that is down stops the stage before its work
    _set_threads(params.threads)
    if args.command == "train":
        _relaunch_if_several_processes(params, args)
    elif args.command in ("sample", "reference", "evaluate"):  # prompts / rows sharded: iwsft.evaluation.sharding
        from iwsft.evaluation.sharding import relaunch_command

        line = relaunch_command(params, sys.argv[1:])
        if line:
            print(f"iwsft {args.command}: {params.launch.num_processes} processes", file=sys.stderr, flush=True)
            os.execv(line[0], line)
    started = time.perf_counter()
    module = importlib.import_module(f"iwsft.stages.{args.command}")
    collect_garbage_from_now_on()
    if args.command == "train":
        module.run(params, args.method)
    elif args.command == "evaluate":
        module.run(params, args.model)
    elif args.command == "sources":
        module.run(params, args.name)
    elif args.command == "prepare" and args.teacher:
        module.run(params, teacher=True)
    else:
        module.run(params)
    print(f"iwsft {args.command}: done in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def _relaunch_if_several_processes(params, args) -> None:
    """launch.num_processes > 1: this process becomes accelerate's launcher of N copies of itself."""
    from iwsft.training.launch import command

    line = command(params, args.method, args.params)
    if line:
        print(f"iwsft train: {params.launch.num_processes} processes: {' '.join(line[1:])}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os.execv(line[0], line)


def _set_threads(threads: int) -> None:
    """torch's intra-op threads, without importing torch (~2 s) in stages that never use it
    (report, register, quality): torch reads these variables when it is first imported."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)


def _gate(args) -> None:
    from iwsft.gates.pipeline import load
    from iwsft.gates.runner import run_gate
    from iwsft.config.loading import load_params

    params = load_params(args.params)
    run_gate(load(args.boundary, params))


# boundaries whose files a user brings (several at once, no pipeline needed)
USER_FILES = ("raw", "eval")


def _validate(args) -> None:
    """One line per valid file on stdout, the gate's message per invalid one; exit 1 if any is invalid."""
    from pathlib import Path

    from iwsft.errors import DataError
    from iwsft.gates.pipeline import load
    from iwsft.gates.runner import run_gate
    from iwsft.config.loading import load_params

    if args.boundary == "raw" and not args.files:
        raise UserError("validate raw needs at least one FILE (.jsonl or .parquet)")
    if args.boundary not in USER_FILES and len(args.files) > 1:
        raise UserError(f"validate {args.boundary} takes one FILE or folder")
    # a user's files are checked before any pipeline exists: without a params.yaml (None), the schema's
    # default thresholds
    standalone = args.boundary in USER_FILES and args.files
    params = load_params(args.params) if not standalone or Path(args.params).is_file() else None
    tokenizer = _raw_tokenizer(params) if args.boundary == "raw" else None
    failed = 0
    for file in args.files or [None]:
        gate = load(args.boundary, params, file) if tokenizer is None else _raw_gate(params, file, tokenizer)
        try:
            run_gate(gate, out_dir=None)
        except DataError as error:
            if len(args.files) <= 1:
                raise
            failed += 1
            print(f"iwsft validate: {error}", file=sys.stderr)
            continue
        print(f"{gate.source}: valid, {_describe(gate)}")
    if failed:
        raise UserError(f"{failed} of {len(args.files)} files are not valid")


def _raw_tokenizer(params):
    """model.base's tokenizer, to check raw files' completion_ids against; None (said per file, by the
    gate's "completion ids" check) without a params.yaml or when the model is not available here."""
    from iwsft.model.tokenizer import load_tokenizer

    if params is None:
        return None
    try:
        return load_tokenizer(params.model.base, params.model.trust_remote_code)
    except (UserError, OSError, ValueError) as error:  # missing, or a directory transformers cannot read
        print(f"iwsft validate: completion_ids are not checked against a tokenizer: {error}", file=sys.stderr)
        return None


def _raw_gate(params, file, tokenizer):
    from iwsft.gates.raw import raw_input
    from iwsft.gates.settings import raw_settings

    return raw_input(file, raw_settings(params.gates), tokenizer=tokenizer, model=f"model.base ({params.model.base})")


def _describe(gate) -> str:
    if gate.boundary == "raw":
        frame = gate.frames["records"]
        rejected = len(gate.payload.rejected)
        conversational = sum(map(is_conversational, gate.payload.records))
        ids = next(check.description for check in gate.checks if check.name == "completion ids")
        return (f"{len(frame)} records ({conversational} conversational, {int(frame['reward'].notna().sum())} with a reward, "
                f"{int(frame['score'].notna().sum())} with a score)" + (f", {rejected} set aside" if rejected else "")
                + f"; completion_ids: {ids}")
    if gate.boundary == "eval":
        frame = gate.frames["prompts"]
        return (f"{len(frame)} prompts ({int(frame['conversational'].sum())} conversational, "
                f"{int(frame['metadata'].sum())} with metadata)")
    return ", ".join(f"{len(frame)} {name}" for name, frame in gate.frames.items())


def _profile(args) -> None:
    from iwsft.config.loading import apply_profile

    apply_profile(args.name)
    print(f"params.yaml now uses profile {args.name!r}")


def _show_report(args) -> None:
    from pathlib import Path

    report = Path("reports/report.md")
    if not report.exists():
        raise FileNotFoundError("reports/report.md does not exist yet: run `dvc repro` (or `make run`)")
    print(report.read_text())


# this module's commands other than the stages
COMMANDS = {"gate": _gate, "validate": _validate, "profile": _profile, "show-report": _show_report}


def set_command_defaults() -> None:
    """Before any import of a command's modules (huggingface_hub reads it once, when imported): offline
    unless HF_HUB_OFFLINE says otherwise."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    set_command_defaults()
    args = build_parser().parse_args(argv)
    if args.command not in STAGES:  # a stage turns the collector back on once its module is imported
        collect_garbage_from_now_on()
    try:
        if args.command in STAGES:
            _run_stage(args)
        elif args.command in COMMANDS:
            COMMANDS[args.command](args)
        else:
            next(family for family in FAMILIES if family.handle(args))
    except (UserError, FileNotFoundError) as error:
        print(f"iwsft {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


def cli() -> None:
    """The `iwsft` command (pyproject's script; `python -m iwsft.cli.main`): main() in a process of its own,
    with Python's cyclic garbage collector set for a short-lived process. A stage spends ~4 s importing
    torch, transformers and MLflow, of which ~1 s went to collections that find no garbage, and ~1.7 s
    at exit in the interpreter's final collection over those objects (measured on the micro DAG's
    evaluate stage, py-spy: gc_collect_main). So: no collection during the imports
    (iwsft.runtime.collect_garbage_from_now_on ends that), and the objects still alive at the end are
    frozen, which the final collection skips; atexit handlers, flushes and file closes run as usual.
    Under `iwsft run`, a stage command is run by its resident stage runner instead (iwsft.cli.stage_server),
    where those imports were made once for the whole run."""
    if len(sys.argv) > 1 and sys.argv[1] in STAGES:  # under `iwsft run`: its resident stage runner
        remote = stage_server.run_remotely(sys.argv)
        if remote is not None:
            sys.exit(remote)
    gc.disable()
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    cli()
