"""Checkpoint and resume (iwsft.training.checkpoints, IwSftTrainer.save_iw_state): a resumed run ends where an
uninterrupted one does, to the byte on the CPU, EMA copy and weight history included."""

import json
import shutil

import pytest
import torch

from iwsft.training.checkpoints import COMPLETE, Checkpoints
from iwsft.model.tiny_lm import build_char_tokenizer
from iwsft.training.trainer import IwSftConfig
from iwsft.training.arguments import fine_tune

from support import tiny_model, toy_dataset

TRAIN = dict(batch_size=2, lr=1e-2, warmup_steps=1, weight_decay=0.0, seed=0, logging_steps=1, device="cpu")


def run(output_dir, steps, resume_from=None, save_steps=2):
    tokenizer = build_char_tokenizer()
    model = tiny_model(0, tokenizer)
    trainer = fine_tune(model, tokenizer, toy_dataset(tokenizer, n=4), IwSftConfig(method="iwsft", q_mode="ema"),
                        output_dir, resume_from=resume_from, steps=steps, save_steps=save_steps, **TRAIN)
    return model, trainer


@pytest.mark.parametrize("resume_at", [2, 4])  # 2 batches an epoch: the middle of a run, an epoch boundary
def test_a_resumed_run_ends_with_the_same_bytes(tmp_path, resume_at):
    model, trainer = run(tmp_path / "whole", steps=6)
    assert sorted(p.name for p in (tmp_path / "whole").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert all((p / COMPLETE).exists() and (p / "ema.safetensors").exists() for p in (tmp_path / "whole").glob("checkpoint-*"))

    # the "crashed" run's folder: only what existed when it was killed after step resume_at
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "whole" / f"checkpoint-{resume_at}", crashed / f"checkpoint-{resume_at}")
    resumed_model, resumed = run(crashed, steps=6, resume_from=crashed / f"checkpoint-{resume_at}")

    for (name, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(trainer.ema_model.parameters(), resumed.ema_model.parameters()):
        assert torch.equal(a, b)
    assert resumed.weight_history == trainer.weight_history
    losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    assert [(e["step"], e["loss"]) for e in resumed.state.log_history if "loss" in e] == losses


def test_resume_picks_the_newest_complete_checkpoint_of_the_same_run(tmp_path, capsys):
    folder = tmp_path / "checkpoints" / "iwsft"
    identity = {"method": "iwsft", "seed": 0, "train": {"lr": 1e-3}}
    assert Checkpoints(folder, identity).prepare() is None
    for step in (10, 20, 30):
        (folder / f"checkpoint-{step}").mkdir()
        if step < 30:  # checkpoint-30 was cut off mid-save
            (folder / f"checkpoint-{step}" / COMPLETE).write_text("{}")
    assert Checkpoints(folder, identity).prepare() == folder / "checkpoint-20"
    assert not (folder / "checkpoint-30").exists()
    assert "checkpoint-30 was cut off mid-save" in capsys.readouterr().err

    Checkpoints(folder, identity).prune(1)
    assert [p.name for p in folder.glob("checkpoint-*")] == ["checkpoint-20"]

    changed = {**identity, "train": {"lr": 2e-3}}  # another run's checkpoints are never resumed from
    assert Checkpoints(folder, changed).prepare() is None
    assert "changed: train" in capsys.readouterr().err
    assert not list(folder.glob("checkpoint-*")) and json.loads((folder / "run.json").read_text()) == changed


def test_finish_keeps_the_last_n_or_nothing(tmp_path):
    folder = tmp_path / "iwsft"
    checkpoints = Checkpoints(folder, {"method": "iwsft"})
    checkpoints.prepare()
    for step in (1, 2, 3):
        (folder / f"checkpoint-{step}").mkdir()
        (folder / f"checkpoint-{step}" / COMPLETE).write_text("{}")
    checkpoints.finish(keep=2)
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    checkpoints.finish(keep=0)
    assert not folder.exists()


@pytest.mark.parametrize("skip_final", [False, True])
def test_the_last_steps_checkpoint_is_not_written_when_none_is_kept(tmp_path, skip_final):
    """transformers saves at the last step whatever save_steps says; NoFinalCheckpoint (the train stage's,
    with train.keep_checkpoints 0) leaves that one out and keeps the periodic ones."""
    from iwsft.training.arguments import NoFinalCheckpoint

    tokenizer = build_char_tokenizer()
    fine_tune(tiny_model(0, tokenizer), tokenizer, toy_dataset(tokenizer, n=4), IwSftConfig(method="sft"), tmp_path,
              callbacks=[NoFinalCheckpoint()] if skip_final else [], steps=3, save_steps=2, **TRAIN)
    written = sorted(p.name for p in tmp_path.glob("checkpoint-*"))
    assert written == (["checkpoint-2"] if skip_final else ["checkpoint-2", "checkpoint-3"])
