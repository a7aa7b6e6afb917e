"""Jobs over (env, seed) pairs in `workers` spawned processes of one torch thread each: on 2 cores,
torch's threads oversubscribe them; processes do not."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context


def one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


def parallel(function, jobs: list[tuple], workers: int) -> list:
    """function(*job) for every job, in `workers` spawned processes (inline when one suffices)."""
    if workers <= 1 or len(jobs) <= 1:
        one_torch_thread()
        return [function(*job) for job in jobs]
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn"), initializer=one_torch_thread) as pool:
        return list(pool.map(function, *zip(*jobs)))
