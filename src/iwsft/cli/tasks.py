"""`iwsft score`: check a verifier by hand before a run.

    iwsft score --task math --answer 1/2 'so \\boxed{\\frac12}' '0.5' 'one third'

prints, per completion, the answer the task extracts (what maj@k votes on) and its score. With
--prompt, an answer copied from the question is refused as the pipeline refuses it. A scorer that
raises is a message naming task.scorer, the completion and the answer (no traceback). The
task's other settings (reasoning_gym's dataset, custom's scorer, math's timeout) come from
--params's `task:` section when it names the same task, and --dataset / --scorer override them.

Wired into iwsft.cli.main with add_commands(subparsers) and handle(args), like iwsft.cli.registry.
"""

from __future__ import annotations

from pathlib import Path

from iwsft.errors import UserError

COMMANDS = ("score",)


def add_commands(subparsers) -> None:
    from iwsft.tasks import NAMES

    score = subparsers.add_parser("score", help="score completions with a task's verifier (check it by hand)")
    score.add_argument("completions", nargs="+", metavar="COMPLETION")
    score.add_argument("--task", choices=NAMES, help="default: params.yaml's task.name")
    score.add_argument("--answer", help="the reference answer (without it, only the extracted answers)")
    score.add_argument("--prompt", help="the question: an answer copied from it is no answer, as in the pipeline")
    score.add_argument("--params", default="params.yaml", help="the task's settings (read if the file exists)")
    score.add_argument("--dataset", help="reasoning_gym: the dataset name (overrides params)")
    score.add_argument("--scorer", help="custom: module.path:function (overrides params)")


def handle(args) -> bool:
    """Run args.command if it is one of ours; False otherwise (the caller handles it)."""
    if args.command == "score":
        _score(args)
        return True
    return False


def task_config(args):
    """The typed `task:` settings (iwsft.config.schema.Task) for --task: params.yaml's section as
    written, if it is that task, plus the flags; checked as a stage's are, so a setting that works
    here works in the pipeline."""
    from pydantic import ValidationError

    from iwsft.config.loading import read_yaml
    from iwsft.config.base import describe
    from iwsft.config.schema import Task

    # the file as written (not checked whole: `iwsft score` needs only its task)
    written = read_yaml(Path(args.params)) if Path(args.params).is_file() else {}
    task_yaml = written.get("task") or {}
    name = args.task or task_yaml.get("name")
    if name is None:
        raise UserError(f"--task is needed ({args.params} has no task.name)")
    settings = dict(task_yaml) if task_yaml.get("name") == name else {"name": name}
    settings.update({key: value for key, value in (("dataset", args.dataset), ("scorer", args.scorer)) if value})
    try:
        return Task.model_validate(settings)
    except ValidationError as error:
        raise UserError("task settings: " + "; ".join(describe(e) for e in error.errors())) from None


def _score(args) -> None:
    from iwsft.tasks import build
    from iwsft.tasks.base import shorten

    config = task_config(args)
    task = build(config)
    try:
        for index, completion in enumerate(args.completions, 1):
            extracted = task.extract(completion, args.prompt)
            score = "-" if args.answer is None else f"{task.score(completion, args.answer, prompt=args.prompt):.3f}"
            print(f"[{index}] extracted: {extracted!r}  score: {score}  completion: {shorten(completion)!r}")
        stats = task.stats()
        if any(stats.values()):
            print("  " + ", ".join(f"{key}: {value}" for key, value in stats.items()))
    finally:
        task.close()
    if args.answer is None:
        print(f"(no --answer: extraction only; task {config.name})")
