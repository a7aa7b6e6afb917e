"""MLflow tracking for the DVC stages: one parent run per pipeline run, one nested run per stage.

Where the runs go: one store per pipeline run, checked before a stage does its work
- The configured store: MLFLOW_TRACKING_URI when set (`make run` sets it to the local server; any
  server works), else the project's own sqlite:///<project>/mlruns/mlflow.db (iwsft.tracking.server).
- The CLI calls `ensure_tracking_store(params)` at the start of every stage. The first stage of a
  pipeline run chooses the store and records it in .dvc/tmp/iwsft-tracking/<key>.json (the parent's
  key, below); the run's later stages use the recorded store, so no run is split across two stores.
- A configured http(s) server that does not answer stops the stage (TrackingUnavailable: the URI and
  the ways out) unless params.yaml says `tracking.fallback: local`: then the WHOLE run logs to the
  local store, even if the server comes back. A recorded server that is down stops the stage: a run
  never switches stores by itself. A different MLFLOW_TRACKING_URI is a new choice (said on stderr);
  deleting the record makes the next stage choose again.
- IWSFT_TRACKING=off turns tracking off (said on stderr). Nothing is dropped silently: if logging fails
  after a stage's work is done, the stage still succeeds and prints what was not logged and why.

The parent run
- Each stage is a separate process, so the parent is found, not handed over: IWSFT_PIPELINE_RUN_ID when
  an orchestrator sets it (it keys the store record too); otherwise the run tagged `iwsft.pipeline_key`
  = hash(git commit, params, uncommitted changes to src/ and dvc.yaml), created by the first stage that
  logs. One `dvc repro` (or one `dvc exp run -S ...`) therefore gets one parent; re-running unchanged
  code and params adds to the same parent. Two pipelines started at the same instant with the same key
  may make two parents (DVC's repo lock prevents that in one workspace); the record is created once.
- A stage's dvc.lock entry is written by DVC after the stage's process exits, so each stage adds the
  lock hashes (`dvc.deps.<path>`, `dvc.outs.<path>`) to the earlier stages' runs of its parent; the
  last stage of a run gets them when the next one logs.

Cost per stage (measured, see the README): `import mlflow` (~1 s after torch) plus a few ms per call;
the up-front check: one /health request (none for a local store) and a small JSON file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from iwsft.io.durable import atomic_file
from iwsft.errors import UserError
from iwsft.tracking.server import artifact_root, healthy, local_store_uri

STARTED = time.time()  # imported with the stage's module, so this is (about) when the stage began
EXPERIMENT = "iwsft"
TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "INTERNAL_ERROR", "DEADLINE_EXCEEDED"}
# MLflow retries each HTTP request itself (7 times, backoff x2: minutes); we retry whole operations,
# so its own layer stays short. Users may still override these.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


class TrackingUnavailable(UserError):
    """The configured MLflow server does not answer; the message names it and says what to run."""


def warn(message: str) -> None:
    print(f"tracking: {message}", file=sys.stderr)


def project_root() -> Path:
    """The project (where dvc.yaml is); `dvc exp run --temp/--queue` runs stages in .dvc/tmp/exps/*."""
    cwd = Path.cwd().resolve()
    parts = cwd.parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return cwd


def is_transient(error: BaseException) -> bool:
    """Worth retrying: connection trouble, 5xx / 429 answers, a busy SQLite file."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    text = str(error)
    if "database is locked" in text or "Max retries exceeded" in text or "Connection refused" in text:
        return True
    return getattr(error, "error_code", None) in TRANSIENT_CODES


def with_retries(call, *args, attempts: int = 3, first_delay: float = 0.5, **kwargs):
    """call(*args, **kwargs), retried on transient errors with exponential backoff (0.5 s, 1 s, ...)."""
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - is_transient decides, everything else re-raises
            if attempt == attempts - 1 or not is_transient(error):
                raise
            time.sleep(first_delay * 2 ** attempt)


def display_uri(uri: str) -> str:
    """The URI without credentials: user:password@host must not reach logs or reports."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if not (parts.username or parts.password):
        return uri
    return urlunsplit(parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else "")))


def tracking_off() -> bool:
    return os.environ.get("IWSFT_TRACKING", "").lower() in {"off", "0", "false", "no"}


def configured_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or local_store_uri(project_root())


def server_down_message(uri: str, stage: bool = True) -> str:
    """What is down and the ways out; `stage`: said by a pipeline stage, where tracking.fallback applies."""
    local = local_store_uri(project_root())
    fallback = f", set `tracking.fallback: local` in params.yaml (the whole pipeline run then logs to {local})"
    return (f"the MLflow server at {display_uri(uri)} (MLFLOW_TRACKING_URI) is not answering. Start it with "
            f"`make serve`{fallback if stage else ''}, or unset MLFLOW_TRACKING_URI (or point it at a running "
            f"server) to use the project's local store ({local}).")


def resolve_uri() -> str:
    """The configured store, checked now; for tools outside a pipeline run (`iwsft registry`, `generate`).
    TrackingUnavailable when it is a server that does not answer."""
    uri = configured_uri()
    if not _reachable(uri):
        raise TrackingUnavailable(server_down_message(uri, stage=False))
    return uri


def _reachable(uri: str) -> bool:
    """A local store always is; a server must answer /health (retried: it may be restarting)."""
    if not uri.startswith(("http://", "https://")):
        return True
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        with_retries(_answering, uri, attempts=3)
    except ConnectionError:
        return False
    return True


def _answering(uri: str) -> None:
    if not healthy(uri):
        raise ConnectionError(uri)  # transient: with_retries tries again


def fallback_setting(params: dict) -> str:
    value = (params.get("tracking") or {}).get("fallback") or "none"  # YAML null / false: none
    if value not in ("none", "local"):
        raise UserError(f"tracking.fallback must be none or local, got {value!r} (params.yaml)")
    return value


def store_record_path(params: dict) -> Path:
    """Where this pipeline run's store choice is kept: .dvc/tmp/iwsft-tracking/<key>.json (.dvc/tmp is
    gitignored by DVC); .run/iwsft-tracking/ in a project without .dvc, so as not to create one."""
    root, explicit = project_root(), os.environ.get("IWSFT_PIPELINE_RUN_ID")
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", f"run-{explicit}" if explicit else pipeline_key(params)[0])
    return (root / ".dvc" / "tmp" if (root / ".dvc").is_dir() else root / ".run") / "iwsft-tracking" / f"{key}.json"


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:  # written atomically, so only a hand edit gets here
        warn(f"ignoring {path} ({error}); choosing this pipeline run's store again")
        return None
    return record if isinstance(record, dict) and "configured" in record else None


_ANNOUNCED: set[Path] = set()  # records whose choice this process has said on stderr


def ensure_tracking_store(params: dict) -> str | None:
    """The store this stage will log to, checked before the stage works; None when IWSFT_TRACKING=off.
    The CLI calls it at the start of every stage; the rule is in the module docstring. Raises
    TrackingUnavailable when that store is a server that does not answer."""
    return None if tracking_off() else _pipeline_store(params)


def _pipeline_store(params: dict) -> str:
    configured, local, path = configured_uri(), local_store_uri(project_root()), store_record_path(params)
    fallback, record = fallback_setting(params), _read_record(path)
    if record is not None and record["configured"] == display_uri(configured):  # this run chose already
        uri = local if record.get("fallback") else configured
        if not _reachable(uri):
            raise TrackingUnavailable(
                f"this pipeline run logs to the MLflow server at {display_uri(uri)} (chosen by its first stage, "
                f"recorded in {path}) and it is not answering. Start it with `make serve`: a run never "
                f"switches stores by itself. To start this run over in another store, delete {path}.")
        if record.get("fallback") and path not in _ANNOUNCED:  # once per process: check and log both get here
            warn(f"this pipeline run logs to {local}: {record['configured']} did not answer when its first "
                 f"stage ran and tracking.fallback is local (recorded in {path})")
        _ANNOUNCED.add(path)
        return uri
    if record is not None:
        warn(f"this pipeline run's earlier stages logged to {record.get('uri')}; MLFLOW_TRACKING_URI is now "
             f"{display_uri(configured)}, so its stages from here on log there")
    down = not _reachable(configured)
    if down and fallback != "local":
        raise TrackingUnavailable(server_down_message(configured))
    uri = local if down else configured
    choice = json.dumps({"uri": display_uri(uri), "configured": display_uri(configured), "fallback": down,
                         "chosen_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2) + "\n"
    try:
        with atomic_file(path, exclusive=record is None) as handle:  # a changed URI replaces the record
            handle.write(choice)
    except FileExistsError:  # another stage of this run chose at the same moment: its choice stands
        return _pipeline_store(params)
    if down:
        warn(f"{server_down_message(configured)} tracking.fallback is local: this whole pipeline run logs "
             f"to {local} (recorded in {path})")
    _ANNOUNCED.add(path)
    return uri


def git_state() -> tuple[str, str]:
    """(commit or 'unknown', the uncommitted diff of what defines the pipeline: src/, dvc.yaml)."""
    return _git_state(project_root())


@functools.lru_cache(maxsize=4)  # once per process and project: the parent's key and the run's tags need it
def _git_state(root: Path) -> tuple[str, str]:
    return _git(root, "rev-parse", "HEAD").strip() or "unknown", _git(root, "diff", "HEAD", "--", "src", "dvc.yaml")


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=20, cwd=root)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def pipeline_key(params: dict) -> tuple[str, str, bool]:
    commit, diff = git_state()
    key = sha256_text(commit + json.dumps(params, sort_keys=True, default=str) + diff)[:20]
    return key, commit, bool(diff)


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


def _parent_run(client, experiment_id: str, params: dict) -> str:
    explicit = os.environ.get("IWSFT_PIPELINE_RUN_ID")
    if explicit:
        return explicit
    key, commit, dirty = pipeline_key(params)
    found = with_retries(client.search_runs, [experiment_id], max_results=1,
                         filter_string=f"tags.`iwsft.pipeline_key` = '{key}'")
    if found:
        return found[0].info.run_id
    tags = {"iwsft.pipeline_key": key, "mlflow.source.git.commit": commit, "iwsft.git_dirty": str(dirty).lower(),
            "iwsft.params_sha256": sha256_text(json.dumps(params, sort_keys=True, default=str))}
    run = with_retries(client.create_run, experiment_id, tags=tags,
                       run_name=f"pipeline {commit[:8]}{'+changes' if dirty else ''}")
    parent = StageRun(client, "", run.info.run_id, "", experiment_id)
    parent.log_params(params)  # the whole config, once (params are immutable per run)
    with_retries(client.log_dict, run.info.run_id, params, "params.yaml")
    return run.info.run_id


def _lock_tags(entry: dict) -> dict:
    tags = {}
    for kind in ("deps", "outs"):
        for item in entry.get(kind) or []:
            tags[f"dvc.{kind}.{item['path']}"] = item.get("md5") or item.get("etag") or item.get("checksum")
    return tags


def _backfill_lock_tags(client, experiment_id: str, parent_id: str) -> None:
    """Give the earlier stages' runs of this parent their dvc.lock hashes, now that DVC wrote them."""
    import yaml

    lock = project_root() / "dvc.lock"
    if not lock.is_file():
        return
    pending = with_retries(client.search_runs, [experiment_id], max_results=200, filter_string=(
        f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`iwsft.lock_pending` = 'true'"))
    written_ms = lock.stat().st_mtime * 1000
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for run in pending:
        entry = stages.get(run.data.tags.get("iwsft.stage"))
        if entry and run.info.end_time and written_ms > run.info.end_time:
            done = StageRun(client, "", run.info.run_id, parent_id, experiment_id)
            done.set_tags({**_lock_tags(entry), "iwsft.lock_pending": "false"})


def _data_fingerprint() -> str | None:
    """The training data's identity: the reference stage's fingerprint (data, model, tokenizer hashes)."""
    path = project_root() / "data" / "reference" / "fingerprint.json"
    return sha256_text(path.read_text())[:16] if path.is_file() else None


@contextlib.contextmanager
def stage_run(stage: str, params: dict, sections=(), method: str | None = None, tags: dict | None = None):
    """A nested run for `stage` under this pipeline run's parent, in the run's store (ensure_tracking_store:
    TrackingUnavailable before anything is logged when it is down); yields a StageRun (None when off)."""
    if tracking_off():
        warn(f"IWSFT_TRACKING={os.environ['IWSFT_TRACKING']}: {stage} is not tracked")
        yield None
        return
    entered = time.perf_counter()
    uri = _pipeline_store(params)
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
        handle.log_params({name: params[name] for name in sections if name in params})
        handle.set_tags({"iwsft.data_fingerprint": _data_fingerprint(), **(tags or {})})
        yield handle
        status = "FINISHED"
    finally:
        with contextlib.suppress(Exception):  # the run's outcome matters more than its end mark
            with_retries(client.set_terminated, run.info.run_id, status)
            with_retries(client.set_terminated, parent_id, "FINISHED")  # the parent ends with its last stage
        print(f"tracking: {stage} -> {display_uri(uri)} run {run.info.run_id} (parent {parent_id}; "
              f"{time.perf_counter() - entered:.1f} s)", file=sys.stderr)


def track_stage(stage: str, params: dict, sections=(), method: str | None = None, metrics: dict | None = None,
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
