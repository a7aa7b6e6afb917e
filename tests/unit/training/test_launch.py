"""iwsft.training.launch: the accelerate command a multi-process train stage runs, the shipped configs, and the
set-ups refused before any training (a whole model copy under a sharding config)."""

from pathlib import Path

import pytest

from iwsft.config.loading import merge, read_yaml
from iwsft.config.schema import check
from iwsft.errors import UserError
from iwsft.training import launch

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs" / "accelerate"


def params(processes=2, config_file=None, runtime="cpu", peft=False, **train):
    """The project's params.yaml with these launch / train / peft settings, checked (typed)."""
    overrides = {"runtime": {"device": runtime}, "train": {"q_mode": "current", "reference_source": "column", **train},
                 "peft": {"enabled": peft}, "launch": {"num_processes": processes, "config_file": config_file}}
    return check(merge(read_yaml(ROOT / "params.yaml"), overrides))


def test_one_process_or_an_already_launched_one_runs_as_it_is(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert launch.command(params(processes=1), "iwsft", "params.yaml") is None
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launch.command(params(processes=2), "iwsft", "params.yaml") is None  # no launcher inside the launcher


def test_several_processes_start_the_same_stage_under_a_launcher(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    line = launch.command(params(processes=2), "iwsft", "my-params.yaml")
    assert line[1:3] == ["-m", "torch.distributed.run"]  # accelerate's --cpu would start one process
    assert line[line.index("--nproc_per_node") + 1] == "2" and line[line.index("--master_addr") + 1] == "127.0.0.1"
    gpu = launch.command(params(processes=8, runtime="cuda"), "iwsft", "my-params.yaml")
    assert gpu[1:3] == ["-m", "accelerate.commands.launch"] and "--multi_gpu" in gpu
    assert line[-7:] == ["-m", "iwsft.cli.main", "train", "--method", "iwsft", "--params", "my-params.yaml"]


def test_the_shipped_configs_parse_and_sharded_ones_refuse_whole_copies(monkeypatch):
    from accelerate.commands.config.config_args import load_config_from_file

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    kinds = {path.stem: str(load_config_from_file(str(path)).distributed_type) for path in CONFIGS.glob("*.yaml")}
    assert kinds == {"ddp": "DistributedType.MULTI_GPU", "fsdp": "DistributedType.FSDP", "zero3": "DistributedType.DEEPSPEED"}
    ddp, fsdp, zero3 = (str(CONFIGS / f"{name}.yaml") for name in ("ddp", "fsdp", "zero3"))
    assert "--config_file" in launch.command(params(config_file=ddp, q_mode="ema"), "iwsft", "p.yaml")  # DDP: fine
    assert launch.command(params(config_file=fsdp), "iwsft", "p.yaml")  # q = current, the column: fine
    with pytest.raises(UserError, match="q_mode: ema keeps a whole EMA copy"):
        launch.command(params(config_file=fsdp, q_mode="ema"), "iwsft", "p.yaml")
    with pytest.raises(UserError, match="online keeps a whole frozen copy"):
        launch.command(params(config_file=zero3, reference_source="online"), "iwsft", "p.yaml")
    lora = params(config_file=zero3, reference_source="online", peft=True)
    assert launch.command(lora, "iwsft", "p.yaml")  # adapters off are the reference: no copy
    with pytest.raises(UserError, match="does not exist"):
        launch.command(params(config_file="configs/accelerate/nope.yaml"), "iwsft", "p.yaml")
