"""One pipeline run per workspace at a time, and params overrides that last one run only.

DVC's own lock (.dvc/tmp/lock) holds for one `dvc` command; a Prefect flow runs one command per stage,
so between two of them another `dvc repro` (or a second flow run) could slip in and see the first
run's overridden params.yaml. The flow therefore holds a workspace lock for its whole run:

- `workspace_lock(root)`: an exclusive flock on .dvc/tmp/iwsft-workspace.lock, released when the
  holder exits (even on kill -9: the kernel drops it). A second holder waits up to `wait_s`, then
  gets WorkspaceBusy naming the holder. The holder's children (dvc, then `iwsft <stage>`) inherit
  IWSFT_WORKSPACE_TOKEN and may run; any other `iwsft <stage>` refuses (`refuse_if_locked`).
- `one_run_params(root, ...)`: params.yaml (and any other params file an override names) rewritten
  for the run, the user's bytes restored afterwards, comments and all. A copy of the original is
  kept in .dvc/tmp/iwsft-params-backup/ while the run lasts, so a crashed run's file is restored by
  the next holder of the lock.
No heavy imports: the CLI calls refuse_if_locked before every stage.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from pathlib import Path

from iwsft.io.durable import write_bytes_atomic, write_text_atomic
from iwsft.errors import UserError

LOCK = Path(".dvc") / "tmp" / "iwsft-workspace.lock"
BACKUPS = Path(".dvc") / "tmp" / "iwsft-params-backup"
TOKEN_ENV = "IWSFT_WORKSPACE_TOKEN"


class WorkspaceBusy(UserError):
    """Another pipeline run holds this workspace."""


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        return "another pipeline run"
    return f"{info.get('what', 'a pipeline run')} (pid {info.get('pid', '?')}, since {info.get('since', '?')})"


@contextlib.contextmanager
def workspace_lock(root, what: str = "a Prefect flow run", wait_s: float = 0.0):
    """Hold the workspace for this process and its children; WorkspaceBusy after `wait_s` seconds."""
    lock_path = Path(root) / LOCK
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WorkspaceBusy(f"{Path(root).resolve()} is busy: {_holder(lock_path)} is working on it. "
                                        f"Wait for it to finish (or run this one with a lock wait).") from None
                time.sleep(0.5)
        token = uuid.uuid4().hex
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"what": what, "pid": os.getpid(), "token": token,
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        previous = os.environ.get(TOKEN_ENV)
        os.environ[TOKEN_ENV] = token  # children of this process (dvc, iwsft stages) may run
        try:
            yield token
        finally:
            if previous is None:
                os.environ.pop(TOKEN_ENV, None)
            else:
                os.environ[TOKEN_ENV] = previous
            handle.seek(0)
            handle.truncate()
    finally:
        handle.close()  # releases the flock


def refuse_if_locked(root=".") -> None:
    """UserError when someone else's flow run holds the workspace (a stage started outside it)."""
    lock_path = Path(root) / LOCK
    if not lock_path.is_file():
        return
    with open(lock_path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                token = json.loads(lock_path.read_text() or "{}").get("token")
            except ValueError:
                token = None
            if token and os.environ.get(TOKEN_ENV) == token:
                return
            raise WorkspaceBusy(f"this workspace is busy: {_holder(lock_path)} is running the pipeline here; "
                                f"a stage started outside it would read that run's params. Wait for it to finish.")
        fcntl.flock(handle, fcntl.LOCK_UN)


def restore_crashed_run(root) -> list[str]:
    """Put back params files a crashed run left overridden (call while holding the lock)."""
    backups = Path(root) / BACKUPS
    restored = []
    for saved in sorted(backups.glob("*.orig")) if backups.is_dir() else []:
        target = Path(root) / json.loads(saved.with_suffix(".json").read_text())["path"]
        write_bytes_atomic(target, saved.read_bytes())
        restored.append(str(target.relative_to(root)))
    shutil.rmtree(backups, ignore_errors=True)
    return restored


@contextlib.contextmanager
def one_run_params(root, files=("params.yaml",)):
    """Back up `files` (relative to root); the caller rewrites them for the run; restored on exit."""
    root = Path(root)
    backups = root / BACKUPS
    backups.mkdir(parents=True, exist_ok=True)
    originals, absent = {}, []
    for index, name in enumerate(dict.fromkeys(files)):
        path = root / name
        if not path.is_file():
            absent.append(path)  # an override may create a params file: removed afterwards
            continue
        originals[path] = path.read_bytes()
        write_text_atomic(backups / f"{index}.json", json.dumps({"path": str(name)}))  # before its .orig
        write_bytes_atomic(backups / f"{index}.orig", originals[path])
    try:
        yield
    finally:
        for path, content in originals.items():
            if not path.is_file() or path.read_bytes() != content:
                write_bytes_atomic(path, content)
        for path in absent:
            path.unlink(missing_ok=True)
        shutil.rmtree(backups, ignore_errors=True)
