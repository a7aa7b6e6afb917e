"""The Prefect flows: the stages of dvc.yaml in DAG order, one task per stage, one at a time.

Flows (prefect.yaml deploys them):
- `pipeline`: every stage `dvc repro [target]` would check, in DVC's own order.
- `evaluate_and_promote`: the evaluate stages and everything downstream of them (report, gates,
  register), on the models as they are.
- `retrain_on_new_data`: if `dvc status` says the stages that read `curate.raw` are stale, those
  stages and everything downstream; otherwise it says so and finishes at once.

Each task runs `dvc repro --single-item STAGE`, so DVC still skips what is up to date and `dvc repro`
alone does the same work. What the flows add: per-stage retries with exponential backoff (never for
a failed data gate or a user error: those fail the same way every time), per-stage timeouts, the
stage output in the run's logs, and artifacts (flows/publish.py). A failing stage fails its task
and the flow run, its message goes to the logs and to the `iwsft-failure` artifact, and no later
stage runs; the run's message names the stage and how to restore its previous outputs (`dvc
checkout --force STAGE`: DVC deletes them before it runs a stage). Before any stage, every flow runs
iwsft's preflight (iwsft.config.preflight) on an iwsft project: a missing model directory, an absent
GPU, a scorer that does not import or a data file no stage writes stop the run with one message,
before anything is run or deleted.

Per-stage settings are dicts of stage name or glob pattern -> value; the exact name wins, then the
longest matching pattern: `retries={"*": 1, "train@*": 2}`, `timeouts_s={"evaluate@*": 600}`.

Run one locally (an ephemeral Prefect server starts; `make serve` runs them on a real one):
    python -m flows.pipeline                       # the whole pipeline
    python -m flows.pipeline --target curate -S curate.decontaminate=false
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.states import Failed, State
from prefect.tasks import exponential_backoff

from flows import dag, publish
from flows.dag import child_environment
from flows.stages import StageFailed, repro_stage
from iwsft.cli import stage_server

DEFAULT_RETRIES = {"*": 1}  # one retry for crashes and timeouts; gates and user errors never
DEFAULT_TIMEOUTS_S = {"*": 6 * 3600, "train@*": 48 * 3600}  # generous: they catch hangs, not slow runs
RETRY_DELAY_S = 30.0  # first retry after 30 s, then 60, 120, ...


def pick(policy: dict, stage: str, default=None):
    """The value for `stage`: its exact name, else the longest glob pattern that matches it."""
    if stage in policy:
        return policy[stage]
    matches = [pattern for pattern in policy if fnmatch.fnmatchcase(stage, pattern)]
    return policy[max(matches, key=len)] if matches else default


@dataclass
class Policy:
    retries: dict = field(default_factory=lambda: dict(DEFAULT_RETRIES))
    timeouts_s: dict = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS_S))
    retry_delay_s: float = RETRY_DELAY_S

    @classmethod
    def of(cls, retries=None, timeouts_s=None, retry_delay_s=RETRY_DELAY_S) -> "Policy":
        """Given dicts are layered over the defaults, so `{"train@*": 3}` keeps `"*": 1`."""
        return cls({**DEFAULT_RETRIES, **(retries or {})}, {**DEFAULT_TIMEOUTS_S, **(timeouts_s or {})}, retry_delay_s)


def _logger():
    """The run's logger inside Prefect, a plain one for `.fn()` calls in tests and scripts."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("iwsft.flows")


def retry_unless_deterministic(task, task_run, state) -> bool:
    """Asked by Prefect before each retry: a gate or a user error would fail the same way again."""
    try:
        state.result()
    except StageFailed as error:
        return error.retriable
    except Exception:
        return True
    return True


@task(name="dvc-stage", task_run_name="{stage}", cache_policy=NO_CACHE)
def run_stage(stage: str, project_dir: str, timeout_s: float | None = None, server: str | None = None) -> dict:
    """`dvc repro --single-item STAGE`, its output streamed into the run's logs (server: the flow run's
    resident stage runner, iwsft.cli.stage_server)."""
    logger = _logger()
    try:
        result = repro_stage(stage, project_dir, timeout_s, logger.info, server)
    except StageFailed as error:
        logger.error("%s", "\n".join(filter(None, [str(error), error.details])))
        raise
    logger.info("stage %s: %s in %.1f s", stage, result.outcome, result.seconds)
    return {"stage": stage, "result": result.outcome, "seconds": round(result.seconds, 1)}


def run_stages(root: Path, stages: list[str], policy: Policy) -> list[dict] | State:
    """The stages in order, serially (one DVC command per workspace at a time); artifacts at the end."""
    logger = _logger()
    logger.info("stages, in order: %s", ", ".join(stages) or "none")
    rows = {stage: {"stage": stage, "result": "not run", "seconds": None} for stage in stages}
    started, failure = time.time(), None
    # an iwsft project's stages run in children of one resident stage runner, which imported torch,
    # transformers and MLflow once for the whole flow run (~5 s less per stage); other projects as they are
    with (stage_server.running(child_environment(), log=root / "logs" / "stage-server.log") if stages and
          dag.runs_iwsft(root) else contextlib.nullcontext({})) as env:
        for stage in stages:
            retries = int(pick(policy.retries, stage, 0))
            options = run_stage.with_options(
                retries=retries, retry_delay_seconds=exponential_backoff(policy.retry_delay_s) if retries else 0,
                retry_condition_fn=retry_unless_deterministic)
            state = options(stage, str(root), pick(policy.timeouts_s, stage), env.get(stage_server.ENV),
                            return_state=True)
            if not state.is_completed():  # failed, crashed or cancelled: no later stage runs
                failure = state.result(raise_on_failure=False)
                rows[stage]["result"] = f"failed ({failure.kind})" if isinstance(failure, StageFailed) else "failed"
                break
            rows[stage] = state.result()
    _publish(root, list(rows.values()), started, failure)
    if failure is not None:
        # a Failed state, not a raise: the run ends Failed with the stage's message, without a
        # second traceback (the task's failure already logged one)
        message = str(failure)
        if isinstance(failure, StageFailed):
            from iwsft.cli.run import restore_hint

            message += f". {restore_hint(failure.result.stage, root)}"
            logger.error("%s", message)
        return Failed(message=message)
    return list(rows.values())


def _publish(root: Path, rows: list[dict], started: float, failure) -> None:
    """Every artifact this run has something for; a broken one is a warning, never the run's state."""
    logger = _logger()
    steps = [("stages", lambda: publish.stages_table(rows)),
             ("report", lambda: failure is None and publish.report(root)),
             ("gate summaries", lambda: publish.gate_summaries(root, started)),
             ("registry decision", lambda: publish.registry_decision(root, started)),
             ("failure", lambda: isinstance(failure, StageFailed) and publish.failure(failure)),
             ("MLflow links", lambda: publish.mlflow_links(root, started))]
    for name, step in steps:
        try:
            step()
        except Exception as error:  # noqa: BLE001 - an artifact must not change the run's outcome
            logger.warning("artifact %s not published: %s", name, error)


@contextlib.contextmanager
def _workspace(project_dir: str, profile: str | None, overrides: list[str] | None, lock_wait_s: float):
    """The workspace for this run only: its lock held, profile and overrides applied, then undone.

    Like `dvc exp run -S`, the run sees the overridden params; unlike it, the user's params.yaml is
    byte-identical afterwards (comments and all), so a one-off `train.steps=50` never becomes the
    setting of the next nightly run. dvc.lock keeps what this run computed with, so a later plain
    `dvc repro` re-runs what the overrides changed. Effective params: MLflow (every stage logs its
    sections, the pipeline run the whole file) and the `iwsft-params` artifact.
    """
    from iwsft.config.loading import load_params
    from iwsft.config.schema import check
    from iwsft.workspace import one_run_params, restore_crashed_run, workspace_lock

    root = Path(project_dir).resolve()
    logger = _logger()
    with workspace_lock(root, what="a Prefect flow run", wait_s=lock_wait_s):
        if restored := restore_crashed_run(root):
            logger.warning("restored %s left overridden by a crashed run", ", ".join(restored))
        with one_run_params(root, dag.override_files(overrides)):
            logger.info("project %s; params: %s", root, dag.apply_profile(root, profile))
            if overrides:
                logger.info("overrides for this run only, as `dvc exp run -S` reads them: %s",
                            dag.apply_overrides(root, overrides))
            written = load_params(root / "params.yaml", check=False)  # published as the file says them
            if dag.runs_iwsft(root):  # an iwsft project's params are checked here: a bad override stops before any stage
                check(written, str(root / "params.yaml"))
            _publish_params(written, profile, overrides)
            yield root


def _preflight(root: Path, graph: dag.Dag) -> None:
    """What a stage would refuse at its start (iwsft.config.preflight), for the stages of `graph`;
    UserError listing every problem. Only for an iwsft project (the flows also drive other DVC projects)."""
    if dag.runs_iwsft(root):
        from iwsft.config import preflight
        from iwsft.config.loading import load_params

        preflight.check(load_params(root / "params.yaml"), root, graph)
        _logger().info("preflight: model, device, task and data files OK for %d stages", len(graph.order))


def _publish_params(effective: dict, profile: str | None, overrides: list[str] | None) -> None:
    try:
        publish.effective_params(effective, profile, overrides)
    except Exception as error:  # noqa: BLE001 - an artifact must not change the run's outcome
        _logger().warning("artifact effective params not published: %s", error)


@flow(name="iwsft-pipeline")
def pipeline(target: str | None = None, overrides: list[str] | None = None, profile: str | None = None,
             retries: dict[str, int] | None = None, timeouts_s: dict[str, float] | None = None,
             retry_delay_s: float = RETRY_DELAY_S, project_dir: str = ".",
             lock_wait_s: float = 0.0) -> list[dict] | State:
    """The whole DAG (or up to `target`), like `dvc repro [target]`.

    overrides: `key=value` strings, as `dvc exp run -S` takes them (for this run only).
    profile: None or "demo" (params.yaml as it is), "micro", or your own profiles/NAME.yaml.
    lock_wait_s: how long to wait for another run on the same workspace before refusing.
    """
    with _workspace(project_dir, profile, overrides, lock_wait_s) as root:
        graph = dag.load_dag(root, target)
        _preflight(root, graph)
        return run_stages(root, list(graph.order), Policy.of(retries, timeouts_s, retry_delay_s))


@flow(name="iwsft-evaluate-and-promote")
def evaluate_and_promote(overrides: list[str] | None = None, retries: dict[str, int] | None = None,
                         timeouts_s: dict[str, float] | None = None, retry_delay_s: float = RETRY_DELAY_S,
                         project_dir: str = ".", lock_wait_s: float = 0.0) -> list[dict] | State:
    """Evaluate the models as they are, then report, gates and register (everything downstream)."""
    with _workspace(project_dir, None, overrides, lock_wait_s) as root:
        graph = dag.load_dag(root)
        stages = graph.downstream([stage for stage in graph.order if dag.is_evaluation(stage)])
        if not stages:
            raise ValueError("dvc.yaml has no evaluate stage")
        _preflight(root, graph)  # the whole DAG: what it writes counts as there (the models); model, device, task
        upstream = [stage for stage in graph.order if stage not in stages]
        if stale := dag.stale(root, upstream):
            _logger().warning("upstream stages are stale and will not be re-run here: %s (the models are evaluated "
                              "as they are; the pipeline flow would retrain)", ", ".join(stale))
        return run_stages(root, stages, Policy.of(retries, timeouts_s, retry_delay_s))


@flow(name="iwsft-retrain-on-new-data")
def retrain_on_new_data(retries: dict[str, int] | None = None, timeouts_s: dict[str, float] | None = None,
                        retry_delay_s: float = RETRY_DELAY_S, project_dir: str = ".",
                        lock_wait_s: float = 0.0) -> list[dict] | State:
    """Re-curate and retrain when the raw samples file (curate.raw) changed; otherwise do nothing."""
    with _workspace(project_dir, None, None, lock_wait_s) as root:
        raw = dag.curate_raw_path(root)
        graph = dag.load_dag(root)
        readers = graph.dependents_of(raw)
        changed = dag.stale(root, readers)
        if not changed:
            _logger().info("raw data %s unchanged (dvc status: %s up to date): nothing to do", raw, ", ".join(readers))
            return []
        _logger().info("raw data or its readers changed: %s", changed)
        _preflight(root, graph)
        return run_stages(root, graph.downstream(readers), Policy.of(retries, timeouts_s, retry_delay_s))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="run a flow once, outside any deployment")
    parser.add_argument("flow", nargs="?", default="pipeline", choices=["pipeline", "evaluate", "retrain"])
    parser.add_argument("--target")
    parser.add_argument("--profile")
    parser.add_argument("-S", "--set-param", action="append", dest="overrides", default=[])
    parser.add_argument("--project-dir", default=".")
    parser.add_argument("--lock-wait-s", type=float, default=0.0,
                        help="wait this long for another run on the same workspace (default: refuse at once)")
    args = parser.parse_args(argv)
    options = dict(project_dir=args.project_dir, lock_wait_s=args.lock_wait_s)
    if args.flow == "pipeline":
        state = pipeline(args.target, args.overrides, args.profile, return_state=True, **options)
    elif args.flow == "evaluate":
        state = evaluate_and_promote(args.overrides, return_state=True, **options)
    else:
        state = retrain_on_new_data(return_state=True, **options)
    if not state.is_completed():
        sys.exit(f"flow run {state.name}: {state.message}")


if __name__ == "__main__":
    main()
