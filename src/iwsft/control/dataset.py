"""Dataset files: write, read and check the npz layout of iwsft.control (its docstring).

`check` names the file, the array and the first offending index of every problem, so that a
user's dataset fails with a message they can act on; `Episodes` is the in-memory view training
samples from (episode starts, lengths, returns, actions in [-1, 1]).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iwsft.errors import DataError

ARRAYS = ("observations", "actions", "rewards", "terminations", "truncations")
BOUNDS_TOLERANCE = 1e-5
NPY = b"\x93NUMPY"  # the magic string np.save writes first
PICKLE = b"\x80"  # pickle protocols 2 and later (what pickle.dump and np.save of objects write) open with PROTO


def write(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """npz (compressed, no pickled objects), written to a temporary name and moved into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        np.savez_compressed(handle, **{name: arrays[name] for name in ARRAYS})
    partial.replace(path)


def read(path: str | Path) -> dict[str, np.ndarray]:
    """The five arrays, unchecked; DataError if the file is missing, not an npz (a single array saved
    by np.save under an .npz name, or a pickle, says so), lacks an array or holds an object array
    (named: pickled objects are never loaded, allow_pickle stays off)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    savez = f"np.savez_compressed(path, {', '.join(f'{name}=...' for name in ARRAYS)})"
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic.startswith(PICKLE):  # np.load would call any file that is not a zip or a .npy a pickle
        raise DataError(f"{path}: a pickle, not an .npz of arrays (pickles are never loaded): save with {savez}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as error:
        if magic == NPY and "allow_pickle" in str(error):  # a .npy of Python objects (np.save of a list of dicts)
            raise DataError(f"{path}: a single .npy array of Python objects under an .npz name (never loaded): "
                            f"save numbers with {savez}") from None
        if magic == NPY:
            raise DataError(f"{path}: a .npy file under an .npz name, and not a readable one ({error})") from None
        raise DataError(f"{path}: not a readable .npz file (neither a zip of arrays nor a .npy)") from None
    except (zipfile.BadZipFile, OSError, EOFError, io.UnsupportedOperation) as error:
        raise DataError(f"{path}: not a readable .npz file ({error.__class__.__name__}: {error})") from None
    if isinstance(loaded, np.ndarray):  # np.load reads a .npy by its content, whatever the file's name
        raise DataError(f"{path}: a single .npy array (shape {loaded.shape}, dtype {loaded.dtype}) under an .npz "
                        f"name; a dataset is an .npz of {len(ARRAYS)} named arrays: {savez}")
    with loaded as archive:
        missing = [name for name in ARRAYS if name not in archive.files]
        if missing:
            raise DataError(f"{path}: missing array(s) {', '.join(missing)} (an npz needs {', '.join(ARRAYS)})")
        return {name: _array(archive, name, path) for name in ARRAYS}


def _array(archive, name: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(archive[name])
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise DataError(f"{path}: array {name!r} holds Python objects (dtype object, stored pickled), which are "
                            f"never loaded: save it as numbers (e.g. np.asarray({name}, dtype=np.float32))") from None
        raise DataError(f"{path}: array {name!r} is not readable ({error.__class__.__name__}: {error})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataError(f"{path}: array {name!r} is not readable ({error.__class__.__name__}: {error})") from None


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def problems(arrays: dict[str, np.ndarray], obs_dim: int, low: np.ndarray, high: np.ndarray) -> list[str]:
    """Every problem of `arrays` for an env with these spaces, as 'array: what, at index i' lines."""
    found = []
    obs, act = arrays["observations"], arrays["actions"]
    n = len(arrays["rewards"]) if arrays["rewards"].ndim == 1 else -1
    if obs.ndim != 2 or obs.shape[1] != obs_dim:
        found.append(f"observations: shape {obs.shape}, expected [N, {obs_dim}] for this env")
    if act.ndim != 2 or act.shape[1] != len(low):
        found.append(f"actions: shape {act.shape}, expected [N, {len(low)}] for this env")
    for name in ("rewards", "terminations", "truncations"):
        if arrays[name].ndim != 1:
            found.append(f"{name}: shape {arrays[name].shape}, expected [N]")
    lengths = {name: len(arrays[name]) for name in ARRAYS}
    if len(set(lengths.values())) > 1:
        found.append("mismatched lengths: " + ", ".join(f"{name} {size}" for name, size in lengths.items()))
    if found:
        return found  # the checks below index rows that may not exist
    if n == 0:
        return ["rewards: the file holds no transitions"]
    for name in ("observations", "actions", "rewards"):
        values = arrays[name]
        if not np.issubdtype(values.dtype, np.number):
            found.append(f"{name}: dtype {values.dtype}, expected numbers")
            continue
        bad = ~np.isfinite(values.reshape(n, -1)).all(axis=1)
        if bad.any():
            found.append(f"{name}: {int(bad.sum())} rows with NaN or infinity, first at index {_first(bad)}")
    if np.issubdtype(act.dtype, np.number):
        outside = ((act < low - BOUNDS_TOLERANCE) | (act > high + BOUNDS_TOLERANCE)).any(axis=1)
        if outside.any():
            i = _first(outside)
            found.append(f"actions: {int(outside.sum())} rows outside the env's bounds [{low.tolist()}, {high.tolist()}], "
                         f"first at index {i}: {act[i].tolist()}")
    for name in ("terminations", "truncations"):
        values = arrays[name]
        if values.dtype != bool and not (np.issubdtype(values.dtype, np.number) and np.isin(values, (0, 1)).all()):
            found.append(f"{name}: values other than true/false (0/1)")
    ends = arrays["terminations"].astype(bool) | arrays["truncations"].astype(bool)
    if not ends[-1]:
        start = int(np.flatnonzero(ends)[-1]) + 1 if ends.any() else 0
        found.append(f"terminations/truncations: the last episode (indices {start}..{n - 1}) has no end flag")
    return found


def check(path: str | Path, arrays: dict[str, np.ndarray], obs_dim: int, low: np.ndarray, high: np.ndarray) -> None:
    found = problems(arrays, obs_dim, low, high)
    if found:
        raise DataError(f"{path}: not a valid dataset ({len(found)} problem{'s' * (len(found) > 1)}):\n"
                        + "\n".join(f"  {line}" for line in found))


@dataclass
class Episodes:
    """One dataset in memory: observations, actions in [-1, 1], episode starts/lengths/returns."""

    observations: np.ndarray
    actions: np.ndarray  # in [-1, 1]
    starts: np.ndarray
    lengths: np.ndarray
    returns: np.ndarray

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], low: np.ndarray, high: np.ndarray) -> Episodes:
        from iwsft.control.envs import to_unit

        ends = np.flatnonzero(arrays["terminations"].astype(bool) | arrays["truncations"].astype(bool))
        starts = np.r_[0, ends[:-1] + 1]
        return cls(arrays["observations"].astype(np.float32), to_unit(arrays["actions"], low, high).astype(np.float32),
                   starts.astype(np.int64), (ends + 1 - starts).astype(np.int64),
                   np.add.reduceat(arrays["rewards"].astype(np.float64), starts))


def episode_bounds(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the episodes of checked arrays."""
    ends = np.flatnonzero(arrays["terminations"].astype(bool) | arrays["truncations"].astype(bool))
    starts = np.r_[0, ends[:-1] + 1]
    return starts.astype(np.int64), (ends + 1 - starts).astype(np.int64)
