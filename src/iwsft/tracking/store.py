"""Which MLflow store a pipeline run logs to: one store per pipeline run, checked before a stage works.

- The configured store: MLFLOW_TRACKING_URI when set (`make run` sets it to the local server; any
  server works), else the project's own sqlite:///<project>/mlruns/mlflow.db (iwsft.tracking.server).
- The CLI calls `ensure_tracking_store(params)` at the start of every stage. The first stage of a
  pipeline run chooses the store and records it in .dvc/tmp/iwsft-tracking/<key>.json (the parent's
  key, iwsft.tracking.lineage.pipeline_key); the run's later stages use the recorded store, so no run
  is split across two stores.
- A configured http(s) server that does not answer stops the stage (TrackingUnavailable: the URI and
  the ways out) unless params.yaml says `tracking.fallback: local`: then the WHOLE run logs to the
  local store, even if the server comes back. A recorded server that is down stops the stage: a run
  never switches stores by itself. A different MLFLOW_TRACKING_URI is a new choice (said on stderr);
  deleting the record makes the next stage choose again.
- IWSFT_TRACKING=off turns tracking off (said on stderr).
- URIs are shown without credentials (`display_uri`).

Cost: one /health request (none for a local store) and a small JSON file.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

from iwsft.errors import UserError
from iwsft.io.durable import atomic_file
from iwsft.tracking.lineage import pipeline_key, project_root
from iwsft.tracking.retry import with_retries
from iwsft.tracking.server import healthy, local_store_uri

# MLflow retries each HTTP request itself (7 times, backoff x2: minutes); we retry whole operations,
# so its own layer stays short. Users may still override these.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


class TrackingUnavailable(UserError):
    """The configured MLflow server does not answer; the message names it and says what to run."""


def warn(message: str) -> None:
    print(f"tracking: {message}", file=sys.stderr)


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


def store_record_path(params) -> Path:
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


def ensure_tracking_store(params) -> str | None:
    """The store this stage will log to, checked before the stage works; None when IWSFT_TRACKING=off.
    The CLI calls it at the start of every stage; the rule is in the module docstring. Raises
    TrackingUnavailable when that store is a server that does not answer."""
    return None if tracking_off() else pipeline_store(params)


def pipeline_store(params) -> str:
    """This pipeline run's store (chosen now by its first stage, else the recorded choice); see the module docstring."""
    configured, local, path = configured_uri(), local_store_uri(project_root()), store_record_path(params)
    fallback, record = params.tracking.fallback, _read_record(path)
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
        return pipeline_store(params)
    if down:
        warn(f"{server_down_message(configured)} tracking.fallback is local: this whole pipeline run logs "
             f"to {local} (recorded in {path})")
    _ANNOUNCED.add(path)
    return uri
