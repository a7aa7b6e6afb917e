"""The hash of a model directory: which model a metrics file was computed for.

evaluate writes it into metrics.json (`model_sha256`), register recomputes it before registering
anything, and the registry's content hash (iwsft.tracking.registry.Registry.find_model) is built on the same walk,
so the three always agree on what "the same model files" means. Standard library only: register
checks hashes before it imports MLflow or torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 20  # 1 MiB: weights files may be gigabytes; never read one whole


def update_with_directory(digest, directory: str | Path):
    """Feed every file under `directory` into `digest`: its relative path, a newline, then its bytes,
    in sorted path order (so the hash does not depend on the file system's listing order).

    The relative path is part of the hash, so renaming a file (e.g. two shards swapped) changes it.
    Returns `digest` for chaining.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a model directory")
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(directory)}\n".encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(BLOCK), b""):
                digest.update(block)
    return digest


def directory_sha256(directory: str | Path) -> str:
    """sha256 hex digest of a model directory's files (see update_with_directory)."""
    return update_with_directory(hashlib.sha256(), directory).hexdigest()
