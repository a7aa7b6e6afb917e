"""Devices, dtypes and model locations (iwsft.runtime, iwsft.model.artifacts), on this CPU machine."""

from pathlib import Path

import pytest
import torch

from iwsft.config.loading import read_yaml
from iwsft.config.schema import check
from iwsft.model.artifacts import load_model, resolve_model_dir, save_model
from iwsft.errors import UserError
from iwsft.training.reference import fingerprint
from iwsft.model.devices import device_and_dtype
from iwsft.encoding.sequences import tokenize_dataset

from support import PAIRS, tiny_model

ROOT = Path(__file__).resolve().parents[2]


def with_runtime(runtime: dict | None):
    """The project's params.yaml, typed, with this `runtime:` section (None: the section left out)."""
    params = {key: value for key, value in read_yaml(ROOT / "params.yaml").items() if key != "runtime"}
    return check(params if runtime is None else {**params, "runtime": runtime})


def test_auto_is_the_gpu_in_bf16_when_there_is_one_else_the_cpu_in_fp32():
    device, dtype = device_and_dtype(with_runtime({"device": "auto", "dtype": "auto"}))
    if torch.cuda.is_available():
        assert device == "cuda" and dtype in (torch.bfloat16, torch.float32)
    else:
        assert (device, dtype) == ("cpu", torch.float32)
    assert device_and_dtype(with_runtime(None)) == (device, dtype)  # no runtime section: auto
    assert device_and_dtype(with_runtime({"device": "cpu", "dtype": "bfloat16"})) == ("cpu", torch.bfloat16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_that_is_not_there_is_an_error_not_a_slow_run():
    with pytest.raises(UserError, match="runtime.device is cuda, but torch sees no CUDA device"):
        device_and_dtype(with_runtime({"device": "cuda"}))


def test_a_missing_model_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(UserError, match=r"huggingface-cli download HuggingFaceTB/SmolLM2-135M-Instruct"):
        resolve_model_dir("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(UserError, match="does not exist .*iwsft import-model"):
        resolve_model_dir(tmp_path / "nowhere")


def test_a_column_scored_in_bf16_is_recognised_from_fp32_weights(tmp_path):
    from datasets import Dataset

    from iwsft.model.tiny_lm import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    save_model(tiny_model(0, tokenizer), tokenizer, tmp_path / "model")
    data = tokenize_dataset(Dataset.from_dict({"prompt": [p for p, _ in PAIRS], "completion": [c for _, c in PAIRS]}),
                            tokenizer)
    scored_in_bf16, _ = load_model(tmp_path / "model", dtype=torch.bfloat16)
    training_copy, _ = load_model(tmp_path / "model")  # fp32 master weights
    stored = fingerprint(data, scored_in_bf16, tokenizer)
    assert stored["model_dtype"] == "bfloat16"
    assert fingerprint(data, training_copy, tokenizer, weights_dtype="bfloat16") == stored
    assert fingerprint(data, training_copy, tokenizer)["model_sha256"] != stored["model_sha256"]


def test_stage_threads_apply_whether_or_not_torch_is_loaded_yet():
    """params.threads reaches torch in a stage that imports it later (the variables torch reads at
    import) and in a process that has it already (set_num_threads)."""
    import os
    import subprocess
    import sys

    later = "from iwsft.cli import main as cli; cli._set_threads(1); import torch; print(torch.get_num_threads())"
    done = subprocess.run([sys.executable, "-c", later], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")})
    assert done.stdout.split() == ["1"], done.stderr
    import torch

    from iwsft.cli import main as cli

    before = torch.get_num_threads()
    try:
        cli._set_threads(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_machine_description_names_the_vector_isa_that_changes_results():
    from iwsft.runtime import machine_description

    avx512 = "model name\t: Intel(R) Xeon(R) Platinum\nflags\t\t: fpu sse2 avx2 avx512f fma\n"
    described = machine_description(1, cpuinfo=avx512)
    assert "Intel(R) Xeon(R) Platinum, avx512, torch " in described and described.endswith(", threads=1")
    assert ", avx2, " in machine_description(2, cpuinfo="flags : sse2 avx2\n")
    plain = machine_description(2, cpuinfo="")
    assert "avx" not in plain and plain.endswith("threads=2")
