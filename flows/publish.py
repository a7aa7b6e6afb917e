"""Prefect artifacts: what a pipeline run produced, readable in the UI without opening the workspace.

Keys (the UI's Artifacts page groups the versions of one key across runs):
- iwsft-params: the effective params of the run (params.yaml + profile + overrides).
- iwsft-stages: one row per stage: ran / up to date / failed / not run, seconds.
- iwsft-report: reports/report.md (the results table).
- iwsft-gate-<boundary>: each data/gates/<boundary>.json (the gate summaries), saying whether this
  run wrote it or it is left from an earlier run.
- iwsft-registry: reports/registry.json (the register stage's decision).
- iwsft-failure: the failed stage, why, and its last lines of output.
- iwsft-mlflow-run: a link per MLflow run, when the stages logged to an http(s) server (MLFLOW_TRACKING_URI).

Artifacts are a report, never a gate: a file that cannot be read or a tracking server that does
not answer is logged as a warning and the run's state is left alone.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

REPORT = Path("reports/report.md")
REGISTRY = Path("reports/registry.json")
GATES = Path("data/gates")
MAX_CHARS = 20_000  # the UI renders big artifacts slowly; the workspace has the whole file


def artifact_key(*parts: str) -> str:
    """Prefect keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower())).strip("-")


def fenced_json(data) -> str:
    text = json.dumps(data, indent=2, sort_keys=False, default=str)
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS] + "\n... (truncated; see the file)"
    return f"```json\n{text}\n```"


# the flag names a gate summary or a registry decision is likely to use, and how to say them
VERDICTS = {"success": ("passed", "FAILED"), "passed": ("passed", "FAILED"), "ok": ("passed", "FAILED"),
            "promoted": ("promoted", "not promoted"), "registered": ("registered", "not registered")}


def verdict(data) -> str:
    """'passed' / 'FAILED' / 'promoted' ... from the first boolean flag found, or '' when none."""
    if isinstance(data, dict):
        for name, (yes, no) in VERDICTS.items():
            if isinstance(data.get(name), bool):
                return yes if data[name] else no
    return ""


def effective_params(params: dict, profile: str | None, overrides: list[str] | None) -> None:
    """The params this run used (params.yaml + profile + overrides), as the file said them (the
    schema's defaults are not filled in)."""
    import yaml

    layers = [f"profile `{profile}`" if profile and profile != "demo" else None,
              f"overrides `{' '.join(overrides)}`" if overrides else None]
    said = " + ".join(filter(None, ["params.yaml", *layers]))
    text = yaml.safe_dump(params, sort_keys=False)[:MAX_CHARS]
    create_markdown_artifact(f"## Effective params\n\n{said} (for this run only; params.yaml is restored after it)"
                             f"\n\n```yaml\n{text}```", key="iwsft-params", description="the params this run used")


def stages_table(rows: list[dict]) -> None:
    create_table_artifact(rows, key="iwsft-stages", description="what each DVC stage did in this run")


def report(root) -> bool:
    path = Path(root) / REPORT
    if not path.is_file():
        return False
    create_markdown_artifact(path.read_text()[:MAX_CHARS], key="iwsft-report", description=str(REPORT))
    return True


def gate_summaries(root, since: float) -> list[str]:
    """One artifact per data/gates/*.json; `since` (a time.time()) tells this run's from older ones."""
    published = []
    for path in sorted((Path(root) / GATES).glob("*.json")):
        data = json.loads(path.read_text())
        fresh = path.stat().st_mtime >= since
        when = "written by this run" if fresh else "left from an earlier run (its stage was up to date or not reached)"
        headline = " ".join(filter(None, [f"Gate `{path.stem}`", verdict(data)]))
        create_markdown_artifact(f"## {headline}\n\n{when}\n\n{fenced_json(data)}",
                                 key=artifact_key("iwsft-gate", path.stem), description=f"{GATES / path.name}")
        published.append(path.stem)
    return published


def registry_decision(root, since: float) -> bool:
    path = Path(root) / REGISTRY
    if not path.is_file():
        return False
    data = json.loads(path.read_text())
    when = "this run" if path.stat().st_mtime >= since else "an earlier run (register was up to date or not reached)"
    headline = " ".join(filter(None, ["Registry decision", verdict(data)]))
    create_markdown_artifact(f"## {headline}\n\nfrom {when}\n\n{fenced_json(data)}", key="iwsft-registry",
                             description=str(REGISTRY))
    return True


def failure(error) -> None:
    """The failed stage's message and its last output lines (error is a flows.stages.StageFailed)."""
    tail = "\n".join(error.result.tail)
    create_markdown_artifact(f"## {error}\n\nRetried: {'yes' if error.retriable else 'no (deterministic)'}"
                             f"\n\nLast lines of output:\n\n```\n{tail}\n```", key="iwsft-failure",
                             description=f"stage {error.result.stage} failed")


def tracking_uri() -> str | None:
    """The server the stages logged to: MLFLOW_TRACKING_URI (iwsft.tracking.runs). params.yaml names
    no URI: without the variable the stages log to the project's local store (mlruns/mlflow.db),
    which has no UI to link to."""
    return os.environ.get("MLFLOW_TRACKING_URI")


def _run_ids(data) -> set[str]:
    """Every value of a key named run_id anywhere in a JSON document."""
    if isinstance(data, dict):
        found = {str(v) for k, v in data.items() if k == "run_id" and v}
        return found.union(*(_run_ids(v) for v in data.values()))
    if isinstance(data, list):
        return set().union(*(_run_ids(v) for v in data))
    return set()


def mlflow_links(root, since: float) -> list[str]:
    """Links to the MLflow runs this run started, plus those the registry decision names.

    Only for an http(s) tracking server: a file or sqlite store has no UI to link to.
    """
    uri = tracking_uri()
    if not uri or not uri.startswith(("http://", "https://")):
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = {r.info.run_id: r for r in client.search_runs(
        experiments, filter_string=f"attributes.start_time >= {int(since * 1000)}", max_results=100)}
    registry = Path(root) / REGISTRY
    for run_id in _run_ids(json.loads(registry.read_text())) if registry.is_file() else ():
        runs.setdefault(run_id, client.get_run(run_id))
    for run_id, run in runs.items():
        name = run.info.run_name or run_id
        create_link_artifact(f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}",
                             link_text=f"MLflow run {name}", key="iwsft-mlflow-run", description=f"MLflow run {run_id}")
    return sorted(runs)
