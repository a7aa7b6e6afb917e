"""`iwsft study`: the DAG over several seeds (and data regimes) and an ablation grid as DVC experiments,
then reports/study.md (iwsft.study.plan plans, iwsft.study.queue runs, iwsft.study.report computes,
iwsft.study.document writes).

    iwsft study                          # configs/study.yaml: 5 seeds x the methods, + ablations
    iwsft study --config configs/study-regimes.yaml   # {on-policy, teacher} x 5 methods x 5 seeds
    iwsft study --seeds 0 1 --no-ablations
    iwsft study --report-only            # the report from what has finished so far
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from iwsft.errors import UserError
from iwsft.io.durable import write_text_atomic
from iwsft.study.plan import CONFIG, StudyConfig, load_config, matches, plan

REPORTS = Path("reports")


def add_commands(subparsers) -> None:
    study = subparsers.add_parser("study", help="run the DAG over seeds and ablations (dvc exp queue); "
                                  "writes reports/study.md")
    study.add_argument("--config", default=str(CONFIG), help=f"the study file (default {CONFIG})")
    study.add_argument("--seeds", type=int, nargs="+", help="these seeds instead of the file's")
    study.add_argument("--jobs", type=int, help="experiments at once instead of the file's (dvc queue start -j)")
    study.add_argument("--no-ablations", action="store_true", help="the seed runs only (of every regime)")
    study.add_argument("--report-only", action="store_true", help="queue nothing: report what has finished")


def _config(args, params, written: dict) -> StudyConfig:
    config = load_config(args.config, params, written)
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        raise UserError(f"--seeds must be distinct, got {args.seeds}")
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    return replace(config, seeds=tuple(args.seeds or config.seeds), jobs=args.jobs or config.jobs,
                   ablations=() if args.no_ablations else config.ablations)


def _run(experiments, config: StudyConfig):
    from iwsft.study import queue as dvc

    dvc.require_clean_tree()
    found = dvc.show()
    stale = [e.name for e in experiments if e.name in found and found[e.name].state == dvc.DONE
             and not matches(e, found[e.name].params)]
    if stale:  # a name reused for another setting (an edited study file): its result is not this plan's
        dvc.run_dvc("exp", "remove", *stale)
        found = {name: f for name, f in found.items() if name not in stale}
    finished = sum(found[e.name].state == dvc.DONE for e in experiments if e.name in found)
    queued = dvc.queue(experiments, found)
    pending = len(experiments) - finished
    print(f"iwsft study: {len(experiments)} experiments: {finished} finished (skipped), {len(queued)} queued now, "
          f"{pending - len(queued)} already queued or running", file=sys.stderr)
    if pending:
        from iwsft.cli import stage_server

        # DVC's queue workers inherit the variable from `dvc queue start`: their stages run in children of
        # this study's resident stage runner (iwsft.cli.stage_server); a worker that outlives it runs them itself
        with stage_server.running(dict(os.environ)) as env:
            os.environ[stage_server.ENV] = env[stage_server.ENV]
            try:
                dvc.start(config.jobs)
                return dvc.wait(experiments, config.jobs)
            finally:
                del os.environ[stage_server.ENV]
    return found


def _interrupted() -> UserError:
    return UserError("interrupted: the queued experiments go on in DVC's workers (`dvc queue status`; "
                     "`dvc queue kill NAME` or `dvc queue stop --kill` stops them). Run `iwsft study` "
                     "again to wait for them and write the report; finished ones are skipped.")


def handle(args) -> bool:
    if args.command != "study":
        return False
    from iwsft.study import document, report
    from iwsft.study import queue as dvc
    from iwsft.config.loading import load_params

    # the stages DVC's workers run call `iwsft`: the one of this interpreter, whatever PATH says
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    params = load_params()
    config = _config(args, params, load_params(check=False))  # as written: what `dvc exp run -S` can set
    experiments = plan(config)
    started = time.monotonic()
    try:
        found = dvc.show() if args.report_only else _run(experiments, config)
    except KeyboardInterrupt:
        raise _interrupted() from None
    commit = dvc.head_commit()
    out = REPORTS / "study.json"
    earlier = json.loads(out.read_text()) if out.is_file() else {}
    same = earlier.get("commit") == commit and earlier.get("source", config.source) == config.source  # this study's
    wall_s = (earlier.get("wall_s", 0.0) if same else 0.0) + time.monotonic() - started
    summary = report.summarize(config, experiments, found, params)
    write_text_atomic(out, json.dumps({"commit": commit, "source": config.source, "wall_s": wall_s, **summary}, indent=1, default=str) + "\n")
    write_text_atomic(REPORTS / "study.md", document.markdown(summary, config, wall_s, commit))
    document.plots(summary, REPORTS / "study")
    print((REPORTS / "study.md").read_text())
    if summary["failed"]:
        raise UserError(f"{len(summary['failed'])} experiments failed ({', '.join(summary['failed'][:5])}): "
                        "`dvc queue logs NAME` shows why; `iwsft study` again retries them")
    return True
