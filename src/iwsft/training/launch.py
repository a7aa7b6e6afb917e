"""Several training processes (params.yaml `launch:`): `iwsft train --method M` starts itself again under
accelerate's launcher (on GPUs, or with an accelerate config) or torch's (CPU processes over gloo), so
that dvc.yaml's stage command stays the same for 1 or N processes.

Each process trains on its own `train.batch_size` rows of every global batch (global batch =
batch_size x gradient_accumulation x num_processes); IwSftTrainer normalises the loss over the whole
global batch, so N processes take the step one process takes on the same global batch (tested).
Only the main process writes the stage's outputs. Sharded set-ups (FSDP, DeepSpeed ZeRO-3, from
`launch.config_file`) are refused when the method holds a second copy of the model that would not be
sharded with it: the EMA copy (train.q_mode: ema) or the online reference of a model without adapters.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from iwsft.errors import UserError

if TYPE_CHECKING:
    from iwsft.config.schema import Params

SHARDED = ("FSDP", "DEEPSPEED")  # accelerate config `distributed_type` values that shard the weights


def launched() -> bool:
    """True inside a process that a launcher started (accelerate and torchrun both set LOCAL_RANK)."""
    return "LOCAL_RANK" in os.environ


def command(params: Params, method: str, params_path: str) -> list[str] | None:
    """The accelerate launch command line for this train stage, or None for a single process."""
    processes = params.launch.num_processes
    if processes <= 1 or launched():
        return None
    config_file, port = params.launch.config_file, str(_free_port())
    if config_file:
        refuse_unsharded_copies(params, _distributed_type(Path(config_file)), config_file)
    if _on_cpu(params) and not config_file:
        # CPU processes over gloo: torch's own launcher (accelerate's --cpu starts a single process)
        line = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_addr", "127.0.0.1", "--master_port", port]
    else:
        line = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
                "--num_machines", "1", "--main_process_ip", "127.0.0.1", "--main_process_port", port]
        line += ["--config_file", str(config_file)] if config_file else ["--multi_gpu"]
    return line + ["-m", "iwsft.cli.main", "train", "--method", method, "--params", params_path]


def refuse_unsharded_copies(params: Params, distributed_type: str, source: str) -> None:
    train, peft = params.train, params.peft.enabled
    if distributed_type not in SHARDED:
        return
    if train.q_mode == "ema":
        raise UserError(f"{source}: distributed_type {distributed_type} shards the model, but train.q_mode: ema keeps "
                        "a whole EMA copy on every process: use q_mode: current, or DDP (configs/accelerate/ddp.yaml)")
    if train.reference_source == "online" and not peft:
        raise UserError(f"{source}: distributed_type {distributed_type} shards the model, but train.reference_source: "
                        "online keeps a whole frozen copy on every process: use reference_source: column (the "
                        "reference stage's precomputed log-probs), or LoRA (peft.enabled: its reference is the "
                        "same model with adapters off)")


def _distributed_type(path: Path) -> str:
    import yaml

    if not path.is_file():
        raise UserError(f"params.yaml launch.config_file: {path} does not exist (configs/accelerate/ has DDP, FSDP "
                        "and DeepSpeed ZeRO-3 examples)")
    return str((yaml.safe_load(path.read_text()) or {}).get("distributed_type", "NO")).upper()


def _on_cpu(params: Params) -> bool:
    device = params.runtime.device
    if device != "auto":
        return device == "cpu"
    import torch

    return not torch.cuda.is_available()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
