"""Several processes for sample, reference and evaluate (params.yaml `launch.num_processes`).

`iwsft sample|reference|evaluate` with N > 1 starts itself again under torch's launcher (CPU processes
over gloo) or accelerate's (GPUs, or with `launch.config_file`), as train does (iwsft.training.launch):
`relaunch_command` gives that command line; the CLI execs it.

In the N processes, `map_shards(items, work)` gives each process every N-th item (rank, rank + N, ...:
prompts are sorted by length inside each process, so strided shards get equal work; the reference
scores go by whole batches of the one-process run, `whole_batches`, so they are bitwise the same), runs
`work(indices, shard)` there, and hands the results, merged back into item order, to the main process
(None elsewhere: the others stop after their share), or to every process (`everywhere=True`: for work
that all of them go on with, e.g. the log-probs of trajectories, `sequence_logprobs`). The work of a prompt must not depend on which
process does it: sampling seeds each prompt by (seed, its index in the whole list), so N processes
write what one process writes (tested with 2 CPU processes). On GPUs each process uses the GPU of its
LOCAL_RANK (`claim_device`, called before the model is loaded).
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

if TYPE_CHECKING:
    from iwsft.config.schema import Params

T = TypeVar("T")
R = TypeVar("R")
STAGES = ("sample", "reference", "evaluate")


def launched() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def relaunch_command(params: Params, arguments: list[str]) -> list[str] | None:
    """The launcher command line that runs `iwsft ARGUMENTS` in launch.num_processes processes, or None
    (one process, or already one of the N)."""
    from iwsft.training.launch import _free_port, _on_cpu

    processes = params.launch.num_processes
    if processes <= 1 or launched():
        return None
    port, config_file = str(_free_port()), params.launch.config_file
    if _on_cpu(params) and not config_file:
        line = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_addr", "127.0.0.1", "--master_port", port]
    else:  # one copy of the model per process whatever the config says: sampling shards prompts, not weights
        line = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
                "--num_machines", "1", "--main_process_ip", "127.0.0.1", "--main_process_port", port, "--multi_gpu"]
    return line + ["-m", "iwsft.cli.main", *arguments]


def rank_and_size() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def claim_device() -> None:
    """On GPUs, this process's own (LOCAL_RANK); a no-op in one process or on the CPU."""
    if launched():
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))


def strided(count: int, rank: int, size: int) -> list[int]:
    """Every size-th item from rank: prompts, which each process sorts by length itself."""
    return list(range(rank, count, size))


def whole_batches(lengths: Sequence[int], batch_size: int) -> Callable[[int, int, int], list[int]]:
    """A split that gives each process whole batches of the one-process run (items sorted by length,
    stably, cut every batch_size; batches rank, rank + size, ...), in that order: a scorer that sorts and
    cuts its share the same way computes the very same batches, so its numbers are bitwise the same."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    cuts = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return lambda count, rank, size: [i for batch in cuts[rank::size] for i in batch]


def merge(parts: Sequence[tuple[list[int], list[R]]], count: int) -> list[R]:
    """Results of every shard (indices, results), back in item order; every index exactly once."""
    merged: list = [None] * count
    seen = 0
    for indices, results in parts:
        if len(indices) != len(results):
            raise RuntimeError(f"a shard returned {len(results)} results for {len(indices)} items")
        for index, result in zip(indices, results):
            merged[index] = result
        seen += len(indices)
    if seen != count or len(set(i for indices, _ in parts for i in indices)) != count:
        raise RuntimeError(f"the shards covered {seen} of {count} items")
    return merged


def map_shards(items: Sequence[T], work: Callable[[list[int], list[T]], list[R]],
               split: Callable[[int, int, int], list[int]] = strided, everywhere: bool = False) -> list[R] | None:
    """`work(indices, items)` on this process's share of `items` (split(count, rank, size) says which);
    all results in item order on the main process (on every process with `everywhere`), None on the
    others. One process: everything. Every process must call it, in the same order (a collective)."""
    rank, size = rank_and_size()
    if size <= 1 or not launched():
        return list(work(list(range(len(items))), list(items)))
    import torch.distributed as dist

    if not dist.is_initialized():
        # one group for the process's life: a second init_process_group on the same rendezvous store can
        # read the first group's (closed) gloo addresses under load ("Connection refused")
        dist.init_process_group("gloo")  # objects on the CPU, whatever device the work ran on
        atexit.register(dist.destroy_process_group)
    indices = split(len(items), rank, size)
    part = (indices, list(work(indices, [items[i] for i in indices])))
    if everywhere:
        gathered = [None] * size
        dist.all_gather_object(gathered, part)
        return merge(gathered, len(items))
    gathered = [None] * size if rank == 0 else None
    dist.gather_object(part, gathered, dst=0)
    return merge(gathered, len(items)) if rank == 0 else None


def is_main() -> bool:
    """The process that writes the stage's outputs (the only one, unless launched)."""
    return rank_and_size()[0] == 0 or not launched()
