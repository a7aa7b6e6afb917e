"""`iwsft generate` renders the prompt as the pipeline does (iwsft.encoding.chat.ChatFormat): the demo's
char tokenizer has no template (the text is continued, as before); SmolLM2's ChatML template is applied
(skipped without `make smollm2`)."""

from pathlib import Path

import pytest

from iwsft.cli.registry import answers, chat_template_setting
from iwsft.evaluation.generation import generate_completions
from iwsft.model.tiny_lm import build_char_tokenizer
from support import tiny_model

SMOLLM2 = Path(__file__).resolve().parents[3] / "data" / "models" / "smollm2-135m-instruct"


def test_a_model_without_a_template_continues_the_raw_text():
    tokenizer = build_char_tokenizer()
    model = tiny_model(0, tokenizer)
    prompts = ["12+7=", "3-5="]
    plain = generate_completions(model, tokenizer, prompts, max_new_tokens=5, greedy=True, show_progress=False)
    assert answers(model, tokenizer, prompts, "auto", max_new_tokens=5) == [p + c[0] for p, c in zip(prompts, plain)]


def test_the_setting_is_params_yaml_s_unless_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert chat_template_setting(None) == "auto"  # no params.yaml: the schema's default
    assert chat_template_setting("none") == "none"


@pytest.mark.skipif(not (SMOLLM2 / "iwsft_import.json").is_file(), reason="SmolLM2 not imported: run `make smollm2`")
def test_a_chat_model_is_asked_through_its_template():
    from iwsft.encoding.chat import ChatFormat
    from iwsft.model.artifacts import load_model

    model, tokenizer = load_model(SMOLLM2)
    seen = []  # the forwards' input ids: the prompt pre-filled (iwsft.evaluation.decoding), then a token a step
    model.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs["input_ids"][0].tolist()),
                                    with_kwargs=True)
    [line] = answers(model, tokenizer, ["What is 2+3?"], "auto", max_new_tokens=8)
    rendered = ChatFormat.from_setting("auto", tokenizer).prompt_ids("What is 2+3?")
    asked = seen[0] + seen[1]  # one prompt: all but its last token as the shared prefix, then the last
    assert asked == rendered  # the ChatML prompt, up to the assistant's turn
    assert tokenizer.decode(asked).endswith("<|im_start|>assistant\n")
    assert line.startswith("What is 2+3? -> ") and "<|im_end|>" not in line
