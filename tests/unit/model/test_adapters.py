"""LoRA (iwsft.model.adapters, params `peft:`): a tiny model trains its adapters only; its reference with the
adapters off is the base model; the merged model saves and loads as a plain model with the same outputs."""

import copy
import shutil
from pathlib import Path

import pytest
import torch

from iwsft.model.adapters import merged, with_lora
from iwsft.model.artifacts import load_model, save_model
from iwsft.errors import UserError
from iwsft.training.kernels import token_logprobs
from iwsft.encoding.sequences import CompletionCollator
from iwsft.config.schema import Peft, check
from iwsft.model.tiny_lm import build_char_tokenizer
from iwsft.training.trainer import IwSftConfig
from iwsft.training.arguments import fine_tune

from support import tiny_model, toy_dataset

LORA = Peft(enabled=True, r=4, alpha=8.0, dropout=0.0, target_modules=None)
TRAIN = dict(steps=4, batch_size=2, lr=5e-2, warmup_steps=0, weight_decay=0.0, seed=0, logging_steps=1, device="cpu")


def logprobs(model, dataset, tokenizer=None):
    batch = CompletionCollator((tokenizer or build_char_tokenizer()).pad_token_id)([dataset[i] for i in range(4)])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return token_logprobs(logits, batch["labels"], chunk_size=8)[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tokenizer = build_char_tokenizer()
    base = tiny_model(0, tokenizer)
    dataset = toy_dataset(tokenizer, n=4)
    model = with_lora(copy.deepcopy(base), LORA)
    config = IwSftConfig(method="iwsft", reference_source="online")  # the reference: adapters switched off
    trainer = fine_tune(model, tokenizer, dataset, config, tmp_path_factory.mktemp("lora"), **TRAIN)
    return base, model, trainer, tokenizer, dataset


def test_only_the_adapters_train(trained):
    base, model, trainer, _, _ = trained
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    frozen = dict(model.get_base_model().named_parameters())
    for name, tensor in base.named_parameters():  # the base weights, under peft's wrappers, never moved
        wrapped = frozen[name] if name in frozen else frozen[name.replace(".weight", ".base_layer.weight")]
        assert torch.equal(wrapped, tensor), name
    assert any(not torch.all(p == 0) for name, p in model.named_parameters() if "lora_B" in name)  # B left zero
    assert trainer.ref_model is None  # no copy of the model held for the reference


def test_the_reference_with_adapters_off_is_the_base_model(trained):
    base, model, _, _, dataset = trained
    with model.disable_adapter():
        off = logprobs(model, dataset)
    torch.testing.assert_close(off, logprobs(base, dataset), atol=1e-6, rtol=0)
    assert not torch.allclose(logprobs(model, dataset), off, atol=1e-4)  # and the adapters did change the policy


def test_the_merged_model_saves_and_loads_as_a_plain_model(trained, tmp_path):
    _, model, _, tokenizer, dataset = trained
    save_model(merged(model), tokenizer, tmp_path / "merged")
    assert not list((tmp_path / "merged").glob("adapter_*"))  # a plain HF directory
    loaded, _ = load_model(tmp_path / "merged")
    torch.testing.assert_close(logprobs(loaded, dataset), logprobs(model, dataset), atol=1e-5, rtol=0)
    assert hasattr(model, "disable_adapter")  # merging a copy left the training model as it was


def test_peft_settings_are_checked(tmp_path):
    import yaml
    from pathlib import Path

    params = yaml.safe_load((Path(__file__).resolve().parents[3] / "params.yaml").read_text())
    assert params["peft"]["enabled"] is False  # the demo trains every weight
    with pytest.raises(UserError) as error:
        check({**params, "peft": {**params["peft"], "merge": "no", "rank": 8}})
    assert "peft.merge" in str(error.value) and "peft.rank: unknown key" in str(error.value)
    check({**params, "peft": {**params["peft"], "enabled": True, "merge": False}})  # base + adapter: allowed


def test_an_adapter_directory_loads_as_base_plus_adapter_and_names_a_wrong_base(trained, tmp_path, monkeypatch):
    """peft.merge: false: the adapter alone on disk, with its base's path (relative to the adapter, as
    params' model.base is to the project) and hash; load_model merges it into that base from any working
    directory, and refuses any other base."""
    import json

    from iwsft.model.adapters import BASE_RECORD
    from iwsft.stages.train import save_trained

    base, model, _, tokenizer, dataset = trained
    save_model(base, tokenizer, tmp_path / "data/base")
    settings = LORA.model_copy(update={"merge": False})
    monkeypatch.chdir(tmp_path)  # the stage runs in the project's root, model.base relative to it
    save_trained(model, tokenizer, Path("models/adapter"), settings, base_dir=Path("data/base"), dtype=torch.float32)
    names = {p.name for p in (tmp_path / "models/adapter").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", BASE_RECORD} <= names and "model.safetensors" not in names
    assert json.loads((tmp_path / "models/adapter" / BASE_RECORD).read_text())["path"] == "../../data/base"
    (tmp_path / "moved").mkdir()
    shutil.move(tmp_path / "data", tmp_path / "moved/data")  # the whole project moves (a copy, a clone)
    shutil.move(tmp_path / "models", tmp_path / "moved/models")
    monkeypatch.chdir("/")
    tmp_path = tmp_path / "moved"
    loaded, _ = load_model(tmp_path / "models/adapter")
    assert not hasattr(loaded, "disable_adapter")  # merged: a plain model for sampling and scoring
    torch.testing.assert_close(logprobs(loaded, dataset), logprobs(model, dataset), atol=1e-5, rtol=0)

    save_model(tiny_model(5, tokenizer), tokenizer, tmp_path / "data/base")  # the base moved on since
    with pytest.raises(UserError, match=f"{BASE_RECORD}: .*base is not the base model this adapter was trained on"):
        load_model(tmp_path / "models/adapter")
    record = json.loads((tmp_path / "models/adapter" / BASE_RECORD).read_text())
    (tmp_path / "models/adapter" / BASE_RECORD).write_text(json.dumps({**record, "path": str(tmp_path / "gone")}))
    with pytest.raises(UserError, match="gone is not there"):
        load_model(tmp_path / "models/adapter")
