"""MLflow tracking for the DVC stages: one parent run per pipeline run, one nested run per stage.

- Where the runs go is iwsft.tracking.store's choice (one store per pipeline run, checked before a
  stage works; IWSFT_TRACKING=off turns tracking off, said on stderr). Nothing is dropped silently: if
  logging fails after a stage's work is done, the stage still succeeds and prints what was not logged
  and why (`track_stage`).
- The parent run: each stage is a separate process, so the parent is found, not handed over:
  IWSFT_PIPELINE_RUN_ID when an orchestrator sets it (it keys the store record too); otherwise the run
  tagged `iwsft.pipeline_key` (iwsft.tracking.lineage.pipeline_key), created by the first stage that
  logs, with the whole params.yaml. Two pipelines started at the same instant with the same key may
  make two parents (DVC's repo lock prevents that in one workspace); the record is created once.
- Each stage's run is tagged with the git state and, once DVC has written them, its dvc.lock hashes
  (iwsft.tracking.lineage.pending_lock_tags, added by the next stage of the same parent).
- Every MLflow call goes through iwsft.tracking.retry.with_retries.
- One line per stage run on stderr, with the run's address in the MLflow UI (`run_link`); MLflow's own
  "View run" / "View experiment" lines (two per run ended, the parent's too) are turned off.

Cost per stage (measured, see the README): `import mlflow` (~1 s after torch) plus a few ms per call.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from iwsft.tracking.lineage import (data_fingerprint, git_state, params_mapping, pending_lock_tags, pipeline_key,
                                    project_root, sha256_text)
from iwsft.tracking.retry import with_retries
from iwsft.tracking.server import artifact_root, local_store_uri
from iwsft.tracking.store import display_uri, pipeline_store, tracking_off, warn

STARTED = time.time()  # imported with the stage's module, so this is (about) when the stage began
EXPERIMENT = "iwsft"


def run_link(uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI for a server; the store and the run id for a local store."""
    shown = display_uri(uri)
    if shown.startswith(("http://", "https://")):
        return f"{shown.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{shown} run {run_id}"


def flatten(data, prefix: str = "") -> dict:
    """{'train': {'lr': 1e-3}} -> {'train.lr': 1e-3}; lists stay values."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    flat = {}
    for key, value in data.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def numeric(flat: dict) -> dict:
    return {k: float(v) for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@dataclass
class StageRun:
    """A nested run in progress; the methods log through the client with explicit run ids (MLflow's
    fluent "active run" is per thread, and Prefect may run stages in threads)."""

    client: object
    uri: str
    run_id: str
    parent_id: str
    experiment_id: str

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params
            with_retries(self.client.log_batch, self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        self._log_metric_rows([(k, v, step) for k, v in numeric(flatten(metrics)).items()])

    def log_history(self, history: list[dict]) -> None:
        """HF Trainer's log_history: one point per logging step for every number in it."""
        rows = []
        for index, entry in enumerate(history or []):
            step = int(entry.get("step", index))
            rows += [(k, v, step) for k, v in numeric(entry).items() if k != "step"]
        self._log_metric_rows(rows)

    def _log_metric_rows(self, rows: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value, step in rows]
        for i in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics
            with_retries(self.client.log_batch, self.run_id, metrics=metrics[i:i + 1000])

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:8000]) for k, v in tags.items() if v is not None]
        for i in range(0, len(items), 100):
            with_retries(self.client.log_batch, self.run_id, tags=items[i:i + 100])

    def log_artifacts(self, paths, artifact_path: str | None = None) -> None:
        for path in map(Path, paths):
            if path.is_dir():
                with_retries(self.client.log_artifacts, self.run_id, str(path), artifact_path or path.name)
            elif path.is_file():
                with_retries(self.client.log_artifact, self.run_id, str(path), artifact_path)


def _experiment_id(client, uri: str) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    experiment = with_retries(client.get_experiment_by_name, name)
    if experiment is not None:
        return experiment.experiment_id
    # our own store keeps artifacts next to its database; a server decides for itself
    location = str(artifact_root(project_root()) / name) if uri == local_store_uri(project_root()) else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it between the two calls
        return with_retries(client.get_experiment_by_name, name).experiment_id


def _parent_run(client, experiment_id: str, params) -> str:
    explicit = os.environ.get("IWSFT_PIPELINE_RUN_ID")
    if explicit:
        return explicit
    key, commit, dirty = pipeline_key(params)
    config = params_mapping(params)
    found = with_retries(client.search_runs, [experiment_id], max_results=1,
                         filter_string=f"tags.`iwsft.pipeline_key` = '{key}'")
    if found:
        return found[0].info.run_id
    tags = {"iwsft.pipeline_key": key, "mlflow.source.git.commit": commit, "iwsft.git_dirty": str(dirty).lower(),
            "iwsft.params_sha256": sha256_text(json.dumps(config, sort_keys=True, default=str))}
    run = with_retries(client.create_run, experiment_id, tags=tags,
                       run_name=f"pipeline {commit[:8]}{'+changes' if dirty else ''}")
    parent = StageRun(client, "", run.info.run_id, "", experiment_id)
    parent.log_params(config)  # the whole config, once (params are immutable per run)
    with_retries(client.log_dict, run.info.run_id, config, "params.yaml")
    return run.info.run_id


def _backfill_lock_tags(client, experiment_id: str, parent_id: str) -> None:
    """Give the earlier stages' runs of this parent their dvc.lock hashes, now that DVC wrote them."""
    for run_id, tags in pending_lock_tags(client, experiment_id, parent_id).items():
        StageRun(client, "", run_id, parent_id, experiment_id).set_tags({**tags, "iwsft.lock_pending": "false"})


@contextlib.contextmanager
def stage_run(stage: str, params, sections=(), method: str | None = None, tags: dict | None = None):
    """A nested run for `stage` under this pipeline run's parent, in the run's store (ensure_tracking_store:
    TrackingUnavailable before anything is logged when it is down); yields a StageRun (None when off)."""
    if tracking_off():
        warn(f"IWSFT_TRACKING={os.environ['IWSFT_TRACKING']}: {stage} is not tracked")
        yield None
        return
    entered = time.perf_counter()
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # our line below says it once
    uri = pipeline_store(params)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = _experiment_id(client, uri)
    parent_id = _parent_run(client, experiment_id, params)
    _backfill_lock_tags(client, experiment_id, parent_id)
    commit, diff = git_state()
    run = with_retries(client.create_run, experiment_id, start_time=int(STARTED * 1000), run_name=stage, tags={
        "mlflow.parentRunId": parent_id, "mlflow.source.git.commit": commit, "iwsft.git_dirty": str(bool(diff)).lower(),
        "iwsft.stage": stage, "iwsft.lock_pending": "true", **({"iwsft.method": method} if method else {})})
    handle = StageRun(client, uri, run.info.run_id, parent_id, experiment_id)
    status = "FAILED"
    try:
        config = params_mapping(params)
        handle.log_params({name: config[name] for name in sections if name in config})
        handle.set_tags({"iwsft.data_fingerprint": data_fingerprint(), **(tags or {})})
        yield handle
        status = "FINISHED"
    finally:
        with contextlib.suppress(Exception):  # the run's outcome matters more than its end mark
            with_retries(client.set_terminated, run.info.run_id, status)
            with_retries(client.set_terminated, parent_id, "FINISHED")  # the parent ends with its last stage
        print(f"tracking: {stage} -> {run_link(uri, experiment_id, run.info.run_id)} (parent {parent_id}; "
              f"{time.perf_counter() - entered:.1f} s)", file=sys.stderr)


def track_stage(stage: str, params, sections=(), method: str | None = None, metrics: dict | None = None,
                history: list | None = None, artifacts=(), tags: dict | None = None) -> str | None:
    """Log a finished stage in one call (the stage's outputs are already written).

    A tracking failure here does not fail the stage (its outputs are on disk and DVC would otherwise
    redo the work); it is printed with what was not logged. A server that is down before the work is
    ensure_tracking_store's to stop.
    """
    try:
        with stage_run(stage, params, sections, method, tags=tags) as run:
            if run is None:
                return None
            run.log_metrics(metrics or {})
            run.log_history(history or [])
            run.log_artifacts(artifacts)
            return run.run_id
    except Exception as error:  # noqa: BLE001 - see the docstring
        warn(f"could not log {stage} ({type(error).__name__}: {error}); its params, metrics and "
             f"artifacts are only in the stage's output files")
        return None
