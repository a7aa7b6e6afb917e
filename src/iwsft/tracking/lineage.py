"""Where a run comes from: the project's root, its git state, the pipeline run's key, the training data's
fingerprint, and the dvc.lock hashes each stage's run is tagged with.

- The parent run of a pipeline run is keyed by hash(git commit, params, uncommitted changes to src/ and
  dvc.yaml): `pipeline_key`. One `dvc repro` (or one `dvc exp run -S ...`) therefore gets one parent;
  re-running unchanged code and params adds to the same parent.
- A stage's dvc.lock entry is written by DVC after the stage's process exits, so each stage adds the
  lock hashes (`dvc.deps.<path>`, `dvc.outs.<path>`) to the earlier stages' runs of its parent
  (`pending_lock_tags`); the last stage of a run gets them when the next one logs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path

from iwsft.tracking.retry import with_retries


def project_root() -> Path:
    """The project (where dvc.yaml is); `dvc exp run --temp/--queue` runs stages in .dvc/tmp/exps/*."""
    cwd = Path.cwd().resolve()
    parts = cwd.parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return cwd


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


def params_mapping(params) -> dict:
    """The typed Params as params.yaml wrote them (without the defaults the schema filled in), as plain
    JSON-like data: what is hashed into the pipeline key and logged to the runs."""
    return params.model_dump(mode="json", exclude_unset=True)


def pipeline_key(params) -> tuple[str, str, bool]:
    """(the key of this pipeline run's parent, the git commit, whether src/ or dvc.yaml has changes)."""
    commit, diff = git_state()
    key = sha256_text(commit + json.dumps(params_mapping(params), sort_keys=True, default=str) + diff)[:20]
    return key, commit, bool(diff)


def data_fingerprint() -> str | None:
    """The training data's identity: the reference stage's fingerprint (data, model, tokenizer hashes)."""
    path = project_root() / "data" / "reference" / "fingerprint.json"
    return sha256_text(path.read_text())[:16] if path.is_file() else None


def lock_tags(entry: dict) -> dict:
    """A dvc.lock stage entry as run tags: `dvc.deps.<path>` / `dvc.outs.<path>` -> its hash."""
    tags = {}
    for kind in ("deps", "outs"):
        for item in entry.get(kind) or []:
            tags[f"dvc.{kind}.{item['path']}"] = item.get("md5") or item.get("etag") or item.get("checksum")
    return tags


def pending_lock_tags(client, experiment_id: str, parent_id: str) -> dict[str, dict]:
    """run id -> its dvc.lock tags, for the earlier stages' runs of this parent whose lock entry DVC has
    written since they ended (tagged `iwsft.lock_pending`)."""
    import yaml

    lock = project_root() / "dvc.lock"
    if not lock.is_file():
        return {}
    pending = with_retries(client.search_runs, [experiment_id], max_results=200, filter_string=(
        f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`iwsft.lock_pending` = 'true'"))
    written_ms = lock.stat().st_mtime * 1000
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    found = {}
    for run in pending:
        entry = stages.get(run.data.tags.get("iwsft.stage"))
        if entry and run.info.end_time and written_ms > run.info.end_time:
            found[run.info.run_id] = lock_tags(entry)
    return found
