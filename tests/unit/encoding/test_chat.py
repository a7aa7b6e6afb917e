"""Chat templates (iwsft.encoding.chat) with a real BPE chat tokenizer: SmolLM2-135M-Instruct's, which
`make smollm2` (a dependency of `make test`) imports into data/models/."""

from pathlib import Path

import pytest
from datasets import Dataset

from iwsft.encoding.chat import ChatFormat
from iwsft.errors import UserError
from iwsft.encoding.sequences import IGNORE_INDEX, encode_record, tokenize_dataset

SMOLLM2 = Path(__file__).resolve().parents[3] / "data" / "models" / "smollm2-135m-instruct"
pytestmark = pytest.mark.skipif(not (SMOLLM2 / "iwsft_import.json").is_file(),
                                reason="SmolLM2 not imported: run `make smollm2`")


@pytest.fixture(scope="module")
def tokenizer():
    from iwsft.model.artifacts import load_tokenizer

    return load_tokenizer(SMOLLM2)


def test_auto_renders_the_models_own_template_up_to_the_assistant_turn(tokenizer):
    chat = ChatFormat.from_setting("auto", tokenizer)
    text = chat.prompt_text("What is 2+3?")
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
                                                                       "<|im_start|>assistant\n")
    ids = chat.prompt_ids("What is 2+3?")
    assert ids == tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+3?"}],
                                                add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3  # no BOS added on top
    assert chat.end_of_turn_id == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_none_and_a_file(tokenizer, tmp_path):
    plain = ChatFormat.from_setting("none", tokenizer)
    assert not plain.is_chat and plain.prompt_text("2+3=") == "2+3="
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}")
    assert ChatFormat.from_setting(str(template), tokenizer).prompt_text("q") == "[q]>"
    with pytest.raises(UserError, match="model.chat_template: nowhere.jinja is not a file"):
        ChatFormat.from_setting("nowhere.jinja", tokenizer)


def test_reference_scoring_training_and_the_gate_see_the_same_tokens(tokenizer):
    chat = ChatFormat.from_setting("auto", tokenizer)  # the schema's default
    sampled = tokenizer(" 5", add_special_tokens=False)["input_ids"] + [chat.end_of_turn_id]
    records = [{"id": "a", "prompt": "What is 2+3?", "completion": " 5", "completion_ids": sampled, "finished": True},
               {"id": "b", "prompt": "What is 2+3?", "completion": "The answer is 5.", "finished": True},
               {"id": "c", "prompt": "What is 2+3?", "completion": "Let me think", "finished": False}]
    # the reference stage and train both tokenize through tokenize_dataset (train from the parquet copy)
    scored = tokenize_dataset(Dataset.from_list(records), tokenizer, chat=chat)
    again = tokenize_dataset(Dataset.from_list([dict(r) for r in records]), tokenizer, chat=chat)
    gate = [encode_record(tokenizer, r, chat) for r in records]
    assert scored["input_ids"] == again["input_ids"] == [g["input_ids"] for g in gate]
    prompt = chat.prompt_ids("What is 2+3?")
    assert scored["input_ids"][0] == prompt + sampled  # the sampled tokens, verbatim
    assert scored["labels"][0][:len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert scored["input_ids"][1][-1] == chat.end_of_turn_id  # finished text: the end-of-turn token, not a bare EOS
    assert chat.end_of_turn_id not in scored["input_ids"][2][len(prompt):]  # unfinished: nothing appended


def test_generation_is_asked_the_rendered_prompt_and_stops_at_the_end_of_turn(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from iwsft.evaluation.generation import sample_completions

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=0, pad_token_id=0)  # the model knows no <|im_end|>
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    chat = ChatFormat.from_setting("auto", tokenizer)  # the schema's default
    seen = []  # (input_ids, attention_mask) of each forward: the shared prefix, then each prompt's rest
    model.register_forward_pre_hook(lambda _, args, kw: seen.append((kw["input_ids"].tolist(),
                                                                     kw.get("attention_mask"))), with_kwargs=True)
    prompts = ["What is 2+3?", "Name a colour, please."]
    drawn = sample_completions(model, tokenizer, prompts, num_samples=2, max_new_tokens=4, show_progress=False,
                               chat=chat)
    (prefix,), _ = seen[0]
    rests, mask = seen[1]
    unpadded = [prefix + [t for t, m in zip(row, keep[len(prefix):]) if m] for row, keep in zip(rests, mask.tolist())]
    # exactly the prompt ids encode_pair uses, the system prompt pre-filled once for both
    assert sorted(unpadded) == sorted(chat.prompt_ids(p) for p in prompts) and len(prefix) > 20
    assert len(drawn) == 2 and all(len(samples) == 2 for samples in drawn)
    ended = [c for samples in drawn for c in samples if c.finished]
    assert all(c.stop_token_id in {0, chat.end_of_turn_id, tokenizer.eos_token_id} for c in ended)
