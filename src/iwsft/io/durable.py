"""Crash-safe writes: the fsync helpers, the file and directory replacements that outputs go through,
and the pipeline's JSON / JSONL writers built on them (write_json_atomic, write_jsonl_atomic).

Standard library only, so that the data readers, the gate runner and tracking use it without torch.

Why fsync at all: a rename is atomic in the namespace, but after a power loss the disk may hold the
rename and not the data it points to (delayed allocation on ext4 and XFS): a complete-looking file
of zeros, which DVC would then cache. So data is synced before it is renamed into place, and the
directory after, so that the rename itself is on disk before we go on.

atomic_directory(target) writes into a hidden staging sibling `.NAME.staging-*`, syncs every file
and directory in it, renames the old target aside to `.NAME.old-*`, renames the staging directory
onto the target, syncs the parent and only then deletes the old copy. Whenever a crash happens, one
complete copy exists: the old target, the new target, or (between the two renames, the only moment
the target path is empty) the old copy under its hidden name. The next call for the same target
puts that copy back before it starts, then removes every leftover `.NAME.staging-*` / `.NAME.old-*`.
One writer per target at a time (DVC runs each stage once per workspace): a second concurrent
writer of the same target would see the first one's staging directory as a leftover.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

STAGING = "staging"
ASIDE = "old"
# Filesystems that cannot sync a directory say so with these; the files' own syncs still happened.
_NO_DIRECTORY_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EBADF}


def fsync_file(path: str | Path) -> None:
    """Flush a file's data to disk (works on a read-only descriptor on Linux: fsync is per inode)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries, i.e. make the renames and creations inside it durable."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in _NO_DIRECTORY_SYNC:
            raise
    finally:
        os.close(descriptor)


def fsync_tree(root: str | Path) -> None:
    """Every regular file under `root`, then every directory bottom-up (entries before their parent)."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):  # a link's target is not ours to sync
                fsync_file(path)
        fsync_dir(directory)


@contextlib.contextmanager
def atomic_file(path: str | Path, binary: bool = False, exclusive: bool = False) -> Iterator[IO]:
    """A handle (text: UTF-8, "\\n" line ends) on a temporary sibling that becomes `path` once written
    and synced; then the directory is synced (the rename). exclusive=True: FileExistsError, and nothing
    written, if `path` exists (the first writer wins; a link, unlike a rename, never replaces)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with (os.fdopen(descriptor, "wb") if binary else
              os.fdopen(descriptor, "w", encoding="utf-8", newline="\n")) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide outputs from other users (containers)
        if exclusive:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise
            except OSError:  # a filesystem without hard links: check, then rename (a tiny race left)
                if os.path.lexists(path):
                    raise FileExistsError(path) from None
                os.replace(temporary, path)
        else:
            os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)  # after a link or a failure; after a rename it is gone already
    fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_file(path) as handle:
        handle.write(text)


def write_bytes_atomic(path: str | Path, content: bytes) -> None:
    with atomic_file(path, binary=True) as handle:
        handle.write(content)


def _leftovers(target: Path, kind: str) -> list[Path]:
    # glob.escape: a target named "a[1]" must not match other names
    return sorted(target.parent.glob(f".{glob.escape(target.name)}.{kind}-*"))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def recover_directory(target: str | Path) -> None:
    """Undo what a crash inside atomic_directory left behind: if `target` is missing and an old copy
    was moved aside, move it back; then delete every staging and aside leftover of `target`."""
    target = Path(target)
    asides = _leftovers(target, ASIDE)
    if asides and not os.path.lexists(target):
        newest = asides.pop()  # names end in time_ns: sorted last is the most recent
        os.rename(newest, target)
        fsync_dir(target.parent)
    for leftover in asides + _leftovers(target, STAGING):
        _remove(leftover)


@contextlib.contextmanager
def atomic_directory(target: str | Path):
    """Yield an empty staging directory next to `target`; when the block succeeds it becomes `target`
    (see the module docstring for the order of operations). An exception in the block leaves
    `target` as it was and removes the staging directory."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{STAGING}-", dir=target.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the output from other users (containers)
        yield staging
        fsync_tree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap(staging, target)


def _swap(staging: Path, target: Path) -> None:
    aside = target.parent / f".{target.name}.{ASIDE}-{time.time_ns()}" if os.path.lexists(target) else None
    try:
        if aside is not None:
            os.rename(target, aside)  # a non-empty directory cannot be renamed over: move it aside first
        os.rename(staging, target)
    except BaseException:
        if aside is not None and not os.path.lexists(target):
            with contextlib.suppress(OSError):  # if this fails too, the next call puts it back
                os.rename(aside, target)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(target.parent)  # both renames on disk before the old copy goes
    if aside is not None:
        _remove(aside)


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays reach us from metrics code: both have .tolist().
    if not hasattr(value, "tolist"):
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return value.tolist()


def write_jsonl_atomic(path: str | Path, records: Iterable[dict]) -> None:
    """One JSON object per line, UTF-8 (non-ASCII kept readable), all or nothing."""
    with atomic_file(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, default=_json_default) + "\n")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Indented JSON (reports, metrics: read by people and by DVC), all or nothing."""
    with atomic_file(path) as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=2, default=_json_default)
        handle.write("\n")
