"""2 CPU processes (torch.distributed.run, gloo) sample and score exactly what 1 process does
(iwsft.evaluation.sharding: per-prompt seeds; the reference scores by whole batches)."""

import json
import socket
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).parents[1] / "sharding_worker.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(out: Path, processes: int) -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(WORKER), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_two_processes_sample_and_score_what_one_does(tmp_path):
    one, two = run(tmp_path / "one", 1), run(tmp_path / "two", 2)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert len(one["samples"]) == 10 and all(len(s) == 3 for s in one["samples"])
    assert len({tuple(map(tuple, s)) for s in one["samples"]}) > 1  # prompts draw different things
    for key in ("samples", "greedy", "reference"):
        assert two[key] == one[key], key  # bitwise: the same tokens, the same floats
