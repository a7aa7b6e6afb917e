"""2 CPU processes (torch.distributed.run, gloo) sample and score exactly what 1 process does
(iwsft.evaluation.sharding: per-prompt seeds; the reference scores and the trajectory log-probs of sample and
evaluate by whole batches)."""

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from projects import Project

pytestmark = pytest.mark.integration

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
    for key in ("samples", "greedy", "reference", "trajectories"):
        assert two[key] == one[key], key  # bitwise: the same tokens, the same floats


def test_two_processes_through_the_stages_write_what_one_process_wrote(micro_project, tmp_path):
    """`launch.num_processes: 2` on the micro DAG's copy: sample (draws, rewards, pi_ref's log-probs) and
    evaluate (samples, pass@1, the bounds' log-probs, each process scoring its share) write the one-process
    DAG's very files."""
    project = Project(tmp_path / "project")
    shutil.copytree(micro_project.path, project.path, symlinks=True)
    params = yaml.safe_load((project.path / "params.yaml").read_text())
    params["launch"]["num_processes"] = 2
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sampled = project.iwsft("sample")
    assert "iwsft sample: 2 processes" in sampled.stderr
    assert (project.path / "data/sample/raw.jsonl").read_text() == (micro_project.path / "data/sample/raw.jsonl").read_text()
    for model in ("base", "iwsft"):  # the baseline first: its samples carry pi_ref's log-probs for the bounds
        project.iwsft("evaluate", "--model", model)
        for name in ("samples.jsonl", "metrics.json"):
            two, one = (root / "data/evaluate" / model / name for root in (project.path, micro_project.path))
            assert two.read_text() == one.read_text(), (model, name)


def test_the_baselines_stored_log_probs_are_pi_refs_own_scores(micro_project, monkeypatch):
    """evaluate@base stores log pi_ref of each of its samples (`ref_logprob`), which every trained model's
    bounds use instead of loading pi_ref again: they are what scoring the rows with pi_ref gives."""
    from iwsft.config.loading import load_params
    from iwsft.evaluation.scoring import trajectory_logprobs
    from iwsft.model.artifacts import load_model_for

    monkeypatch.chdir(micro_project.path)
    params = load_params()
    rows = [json.loads(line) for line in Path("data/evaluate/base/samples.jsonl").read_text().splitlines()]
    model, tokenizer = load_model_for(params, params.model.base)
    # at the stage's thread count (params `threads`, set by the CLI): MKL's sums for the scorer's small
    # batches depend on how many threads share them, so another count rounds differently
    threads = torch.get_num_threads()
    torch.set_num_threads(params.threads)
    try:
        rescored = trajectory_logprobs(model, tokenizer, params, [{k: v for k, v in r.items() if k != "ref_logprob"}
                                                                  for r in rows])
    finally:
        torch.set_num_threads(threads)
    assert [r["ref_logprob"] for r in rows] == list(rescored)
