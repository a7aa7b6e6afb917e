"""The train stage through real `dvc repro` on a copy of the micro DAG: killed with SIGKILL mid-run it
resumes from its last checkpoint and ends with the same bytes as the uninterrupted run (the micro DAG's
own train@iwsft); with LoRA (`peft:`, merge: false) it trains adapters, saves the adapter alone and registers
base + adapter, which `iwsft generate` loads from the registry."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import torch
import yaml

from projects import BIN, Project, environment

pytestmark = pytest.mark.integration


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_kill_9_mid_training_then_dvc_repro_resumes_to_the_same_weights(micro_project, tmp_path):
    project = Project(tmp_path / "project")
    shutil.copytree(micro_project.path, project.path, symlinks=True)
    params = yaml.safe_load((project.path / "params.yaml").read_text())
    steps = params["train"]["steps"]
    params["train"]["save_steps"] = steps // 5  # save_steps only changes how often: same training
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    checkpoints = project.path / "data/checkpoints/iwsft"

    started = time.perf_counter()
    crashed = subprocess.Popen([str(BIN / "dvc"), "repro", "--single-item", "train@iwsft"], cwd=project.path,
                               env=environment(served=False), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # its own process group: dvc and the stage die together
    target = checkpoints / f"checkpoint-{2 * steps // 5}" / "iwsft_state.json"
    while not target.exists():
        assert crashed.poll() is None, "the stage ended before it could be killed"
        assert time.perf_counter() - started < 300, "no checkpoint after 300 s"
        time.sleep(0.1)
    os.killpg(crashed.pid, signal.SIGKILL)
    crashed.wait(30)
    killed_at = time.perf_counter() - started
    assert not (project.path / "models/iwsft/model.safetensors").exists()  # the stage's outs never got written

    started = time.perf_counter()
    resumed = project.dvc("repro", "--single-item", "train@iwsft")
    resumed_in = time.perf_counter() - started
    step = int(re.search(r"checkpoints: resuming from \S+ \(step (\d+)\)", resumed.stderr).group(1))
    assert step >= 2 * steps // 5
    print(f"\nkilled after {killed_at:.1f} s (a checkpoint at step {step} of {steps}); the resumed run took {resumed_in:.1f} s")

    for name in ("model.safetensors",):
        assert sha256(project.path / "models/iwsft" / name) == sha256(micro_project.path / "models/iwsft" / name)
    assert sha256(project.path / "data/train/iwsft/weights.json") == sha256(micro_project.path / "data/train/iwsft/weights.json")
    assert not checkpoints.exists()  # train.keep_checkpoints: 0 removes them once the stage succeeded


def test_lora_trains_through_the_stage_and_base_plus_adapter_registers_and_generates(micro_project, tmp_path):
    from iwsft.model.artifacts import load_model
    from iwsft.evaluation.generation import generate_completions

    project = Project(tmp_path / "project")
    shutil.copytree(micro_project.path, project.path, symlinks=True)
    params = yaml.safe_load((project.path / "params.yaml").read_text())
    params["peft"].update(enabled=True, r=4, alpha=8, target_modules="all-linear", merge=False)
    params["train"]["lr"] = 1e-2  # adapters take a larger step than full fine-tuning
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    for stage in ("train@iwsft", "evaluate@iwsft", "register"):  # the other methods' models stay as they were
        assert f"Running stage '{stage}'" in project.dvc("repro", "--single-item", stage).stdout
    saved = {p.name for p in (project.path / "models/iwsft").iterdir()}
    assert "adapter_model.safetensors" in saved and "model.safetensors" not in saved  # the adapter alone
    lora_model, tokenizer = load_model(project.path / "models/iwsft")
    full_model, _ = load_model(micro_project.path / "models/iwsft")
    assert any(not torch.equal(a, b) for a, b in zip(lora_model.parameters(), full_model.parameters()))

    registered = json.loads((project.path / "reports/registry.json").read_text())
    entry = registered["versions"]["iwsft"]
    assert entry["new"]  # a new model (its content hash differs), registered as a new version
    prompts = ["12+7=", "38-57-10="]
    done = project.iwsft("generate", "--model", f"models:/iwsft/{entry['version']}", "--max-new-tokens", "6",
                         *[arg for p in prompts for arg in ("--prompt", p)])
    local = generate_completions(lora_model, tokenizer, prompts, greedy=True, max_new_tokens=6, show_progress=False)
    assert done.stdout.splitlines()[-2:] == [p + c[0] for p, c in zip(prompts, local)]


def test_two_cpu_processes_through_the_stage_take_the_steps_one_process_takes(micro_project, tmp_path):
    from safetensors.torch import load_file

    project = Project(tmp_path / "project")
    shutil.copytree(micro_project.path, project.path, symlinks=True)
    params = yaml.safe_load((project.path / "params.yaml").read_text())
    params["train"].update(steps=3, logging_steps=1)

    def train(processes, batch_size):
        params["launch"]["num_processes"], params["train"]["batch_size"] = processes, batch_size
        (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        started = time.perf_counter()
        ran = project.dvc("repro", "--single-item", "train@iwsft")
        log = json.loads((project.path / "data/train/iwsft/train_log.json").read_text())
        return load_file(project.path / "models/iwsft/model.safetensors"), log, ran, time.perf_counter() - started

    global_batch = params["train"]["batch_size"]
    one, one_log, _, one_s = train(1, global_batch)
    two, two_log, ran, two_s = train(2, global_batch // 2)  # the same global batch, half on each process
    assert "iwsft train: 2 processes: -m torch.distributed.run" in ran.stderr
    print(f"\n1 process {one_s:.1f} s, 2 processes {two_s:.1f} s (3 steps, with start-up)")
    losses = [entry["loss"] for entry in one_log if "loss" in entry]
    assert [entry["loss"] for entry in two_log if "loss" in entry] == pytest.approx(losses, rel=1e-5)
    for name, tensor in one.items():
        assert (two[name] - tensor).abs().max() < 1e-5, name


def test_q_mode_ema_saves_its_q_and_the_evaluation_bound_uses_it(micro_project, tmp_path):
    """q_mode ema: train saves the EMA copy (the q it trained with) and evaluate's iw bound scores pi_ref's
    samples with it: a bound of its own, not J (as q = theta gives), and J >= iw bound holds."""
    project = Project(tmp_path / "project")
    shutil.copytree(micro_project.path, project.path, symlinks=True)
    params = yaml.safe_load((project.path / "params.yaml").read_text())
    params["train"].update(q_mode="ema", steps=20)
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("train@iwsft", "evaluate@iwsft"):
        assert f"Running stage '{stage}'" in project.dvc("repro", "--single-item", stage).stdout
    assert (project.path / "data/train/iwsft/q_model/model.safetensors").is_file()
    assert not (project.path / "data/train/sft/q_model").exists()  # SFT trains with no q
    metrics = json.loads((project.path / "data/evaluate/iwsft/metrics.json").read_text())
    assert metrics["bound_q"] == "ema"
    assert metrics["iw_bound"] <= metrics["j_importance"] + 1e-9 and metrics["iw_bound"] != metrics["j_importance"]
    before = json.loads((micro_project.path / "data/evaluate/iwsft/metrics.json").read_text())
    assert before["bound_q"] == "theta" and before["iw_bound"] == pytest.approx(before["j_importance"])
