"""The torch-free tokenizer (iwsft.model.tokenizer) is AutoTokenizer's: same class, same ids, same chat
renderings, hence the same token counts in curate; and the stages that load no model import no torch."""

import subprocess
import sys
from pathlib import Path

import pytest

from iwsft.encoding.chat import ChatFormat
from iwsft.encoding.token_counts import token_counter
from iwsft.model.tokenizer import is_tokenizers_backend, load_tokenizer

SMOLLM2 = Path(__file__).resolve().parents[3] / "data" / "models" / "smollm2-135m-instruct"
TEXTS = ["What is 2+3?", "  spaces  and\ttabs\nnewlines ", "<|im_end|> inside <bos> text", "é ü 中文 🙂", "",
         "Solve: 17 * 23 = ?\nAnswer with a number."]
PROMPTS = TEXTS[:4] + [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
                       [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": "7*6?"}]]


@pytest.fixture(scope="module")
def char_tokenizer_dir(tmp_path_factory):
    from iwsft.model.tiny_lm import build_char_tokenizer

    directory = tmp_path_factory.mktemp("char")
    build_char_tokenizer().save_pretrained(directory)  # as prepare saves the demo's pi_ref
    return directory


def auto(directory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory, local_files_only=True)


def assert_same(directory, chat_template, prompts):
    light, reference = load_tokenizer(directory), auto(directory)
    assert type(light) is type(reference) and is_tokenizers_backend(Path(directory))
    # the same backend (vocabulary, merges, added tokens, post-processor) and the same settings
    assert light.backend_tokenizer.to_str() == reference.backend_tokenizer.to_str()
    assert light.special_tokens_map == reference.special_tokens_map and light.padding_side == reference.padding_side
    for text in TEXTS:
        for special in (True, False):
            assert light(text, add_special_tokens=special)["input_ids"] == \
                reference(text, add_special_tokens=special)["input_ids"]
    light_chat, reference_chat = ChatFormat.from_setting(chat_template, light), ChatFormat.from_setting(chat_template, reference)
    assert light_chat.template == reference_chat.template
    assert light_chat.end_of_turn_id == reference_chat.end_of_turn_id
    light_count, reference_count = token_counter(light, light_chat), token_counter(reference, reference_chat)
    for prompt in prompts:
        assert light_chat.prompt_text(prompt) == reference_chat.prompt_text(prompt)
        assert light_chat.prompt_ids(prompt) == reference_chat.prompt_ids(prompt)
        assert light_count.prompt(prompt) == reference_count.prompt(prompt)
    for text in TEXTS:
        assert light_count.completion(text) == reference_count.completion(text)
        assert light_count.completion([{"role": "assistant", "content": text}]) == reference_count.completion(text)


def test_the_demo_char_tokenizer_counts_as_autotokenizer_does(char_tokenizer_dir):
    assert_same(char_tokenizer_dir, "none", [t for t in TEXTS if t.isascii() and "\t" not in t])
    assert load_tokenizer(char_tokenizer_dir)("ab")["input_ids"][0] == 1  # <bos> in front, as pi_ref saw it


@pytest.mark.skipif(not (SMOLLM2 / "iwsft_import.json").is_file(), reason="SmolLM2 not imported: run `make smollm2`")
def test_smollm2_counts_and_renders_as_autotokenizer_does():
    assert_same(SMOLLM2, "auto", PROMPTS)
    assert_same(SMOLLM2, "none", TEXTS[:4])


def test_other_classes_and_remote_code_go_through_autotokenizer(char_tokenizer_dir, tmp_path):
    assert not is_tokenizers_backend(char_tokenizer_dir, trust_remote_code=True)
    (tmp_path / "tokenizer.json").write_text((char_tokenizer_dir / "tokenizer.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizer"}')
    assert not is_tokenizers_backend(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "TokenizersBackend", "auto_map": {}}')
    assert not is_tokenizers_backend(tmp_path)


@pytest.mark.parametrize("module", ["iwsft.stages.curate", "iwsft.stages.quality", "iwsft.stages.report"])
def test_a_stage_that_loads_no_model_imports_no_torch(module):
    code = f"import sys, {module}; heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; print(heavy)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", f"{module} imports {done.stdout.strip()}"


def test_curate_loads_its_tokenizer_without_torch(char_tokenizer_dir):
    code = (f"import sys; from iwsft.model.tokenizer import load_tokenizer; load_tokenizer({str(char_tokenizer_dir)!r}); "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
