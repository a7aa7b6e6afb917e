"""2 CPU processes (torch.distributed, gloo) take the same step as 1 process on the same global batch."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

WORKER = Path(__file__).parents[1] / "ddp_worker.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# the sequence weight, the token weight (DFT) and self-normalised sequence weights (their mean is the global
# batch's, gathered across the processes); one launch trains all three
METHODS = ("iwsft", "dft", "iwsft_self")


def run(output_dir: Path, processes: int, per_device_batch: int) -> dict[str, tuple[dict, dict]]:
    output_dir.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(WORKER), str(output_dir),
               str(per_device_batch), ",".join(METHODS)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return {method: (json.loads((output_dir / method / "result.json").read_text()),
                     load_file(output_dir / method / "params.safetensors")) for method in METHODS}


def test_two_processes_match_one(tmp_path):
    one, two = run(tmp_path / "one", 1, 4), run(tmp_path / "two", 2, 2)
    for method in METHODS:
        (single, single_params), (double, double_params) = one[method], two[method]
        assert single["world_size"] == 1 and double["world_size"] == 2
        assert double["loss"] == pytest.approx(single["loss"], rel=1e-5), method
        for name, value in single_params.items():
            assert (double_params[name] - value).abs().max() < 1e-6, (method, name)
