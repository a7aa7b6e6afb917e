"""iwsft.tracking.chat_pyfunc (the registered model's pyfunc) and model_logging.pyfunc_config, on tiny random
models: it renders and stops as the pipeline does (iwsft.encoding.chat), so its greedy replies are the ones
iwsft's own generation gives; plain models continue plain text; every input shape users send; bad input is a
400-style MlflowException naming what to send. The real log -> register -> serve path:
tests/integration/test_champion_serving.py."""

from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException

from iwsft.encoding.chat import ChatFormat
from iwsft.evaluation.generation import generate_completions
from iwsft.model.tiny_lm import build_char_tokenizer, build_tiny_llama
from iwsft.tracking.chat_pyfunc import ChatLM, ModelInputError
from iwsft.tracking.model_logging import pyfunc_config

SMOLLM2 = Path(__file__).resolve().parents[3] / "data" / "models" / "smollm2-135m-instruct"
needs_smollm2 = pytest.mark.skipif(not (SMOLLM2 / "iwsft_import.json").is_file(),
                                   reason="SmolLM2 not imported: run `make smollm2`")
MAX = 10


def reference(model, tokenizer, prompts, chat=None):
    """What iwsft's own greedy generation writes (evaluate, `iwsft generate`)."""
    return [c[0] for c in generate_completions(model, tokenizer, prompts, greedy=True, max_new_tokens=MAX,
                                               show_progress=False, chat=chat)]


@pytest.fixture(scope="module")
def plain():
    tokenizer = build_char_tokenizer()
    model = build_tiny_llama(len(tokenizer), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, seed=3)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def chat():
    """SmolLM2's tokenizer (ChatML, <|im_end|> ends a turn) on a tiny random Llama of its vocabulary."""
    from iwsft.model.artifacts import load_tokenizer

    tokenizer = load_tokenizer(SMOLLM2)
    model = build_tiny_llama(len(tokenizer), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2,
                             max_positions=256, seed=0, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    # untied: a random tied model repeats its last input token ("\n" after the assistant header) whatever the
    # prompt, so replies would not tell prompts, or renderings, apart
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape,
                                                          generator=torch.Generator().manual_seed(0)))
    return model.eval(), tokenizer


def test_a_plain_model_continues_the_text_as_iwsft_does(plain):
    model, tokenizer = plain
    lm = ChatLM(model, tokenizer, {**pyfunc_config(tokenizer, "auto", False), "max_new_tokens": MAX})
    assert lm.template is None  # the char tokenizer has none: plain completion, as before
    prompts = ["12+7=", "38-57-10="]
    assert lm.predict(prompts) == reference(model, tokenizer, prompts)
    assert lm.predict("12+7=") == reference(model, tokenizer, ["12+7="])
    completion = lm.predict({"prompt": "12+7="})
    assert completion["object"] == "text_completion" and completion["choices"][0]["text"] == lm.predict("12+7=")[0]
    with pytest.raises(ModelInputError, match="without a chat template"):
        lm.predict({"messages": [{"role": "user", "content": "12+7="}]})


@needs_smollm2
def test_a_chat_model_renders_its_template_and_stops_at_the_end_of_turn(chat):
    model, tokenizer = chat
    config = pyfunc_config(tokenizer, "auto", False)
    format_ = ChatFormat.from_setting("auto", tokenizer)
    assert config["chat_template"] == tokenizer.chat_template
    assert config["end_of_turn_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>") == format_.end_of_turn_id
    lm = ChatLM(model, tokenizer, {**config, "max_new_tokens": MAX})
    assert lm.render("Calculate 10 - 8.") == format_.prompt_text("Calculate 10 - 8.")
    assert "<|im_start|>user\nCalculate 10 - 8.<|im_end|>" in lm.render("Calculate 10 - 8.")

    expected = reference(model, tokenizer, ["Calculate 10 - 8.", "Name a colour."], chat=format_)
    assert lm.predict(["Calculate 10 - 8.", "Name a colour."]) == expected  # a string is the user's turn
    assert expected[0] != expected[1] and all(reply.strip() for reply in expected)  # replies that tell prompts apart
    assert expected[0] != reference(model, tokenizer, ["Calculate 10 - 8."])[0]  # the template changes the reply
    messages = [{"role": "user", "content": "Calculate 10 - 8."}]
    response = lm.predict({"messages": messages, "max_tokens": MAX, "temperature": 0})
    assert response["object"] == "chat.completion"
    assert response["choices"][0]["message"] == {"role": "assistant", "content": expected[0]}
    assert response["choices"][0]["finish_reason"] in {"stop", "length"}
    usage = response["usage"]
    assert usage["prompt_tokens"] == len(format_.prompt_ids("Calculate 10 - 8.")) and usage["total_tokens"] > usage["prompt_tokens"]
    # the same conversation as a message list, in a list, and OpenAI's content parts
    assert lm.predict([messages]) == expected[:1] and lm.predict(messages) == expected[:1]
    parts = [{"role": "user", "content": [{"type": "text", "text": "Calculate 10 - 8."}]}]
    assert lm.predict({"messages": parts, "max_tokens": MAX})["choices"][0]["message"]["content"] == expected[0]
    # a one-column table (what `{"dataframe_split": ...}` becomes) and a params dict
    assert lm.predict(pd.DataFrame({"prompt": ["Calculate 10 - 8."]})) == expected[:1]
    assert len(lm.predict(["Calculate 10 - 8."], params={"max_tokens": 2})[0]) <= len(expected[0])


@needs_smollm2
def test_none_turns_the_template_off_as_params_can(chat):
    model, tokenizer = chat
    config = pyfunc_config(tokenizer, "none", False)
    assert config["chat_template"] is None and config["end_of_turn_id"] is None
    lm = ChatLM(model, tokenizer, {**config, "max_new_tokens": MAX})
    assert lm.predict(["Calculate 10 - 8."]) == reference(model, tokenizer, ["Calculate 10 - 8."])


@needs_smollm2
def test_sampling_uses_the_temperature_and_a_seeded_draw_repeats(chat):
    model, tokenizer = chat
    lm = ChatLM(model, tokenizer, {**pyfunc_config(tokenizer, "auto", False), "max_new_tokens": MAX})
    torch.manual_seed(0)
    first = lm.predict({"messages": [{"role": "user", "content": "hi"}], "temperature": 1.0})
    torch.manual_seed(0)
    again = lm.predict({"messages": [{"role": "user", "content": "hi"}], "temperature": 1.0})
    assert first["choices"] == again["choices"]
    greedy = lm.predict({"messages": [{"role": "user", "content": "hi"}]})  # temperature 0 by default
    assert first["choices"][0]["message"]["content"] != greedy["choices"][0]["message"]["content"]


@pytest.mark.parametrize("data, message", [
    ({"messages": "hi"}, "must be a list"),
    ({"messages": [{"content": "no role"}]}, "must be a list"),
    ({"messages": [{"role": "user", "content": 5}]}, "content must be a string"),
    ({"prompt": ["a", "b"]}, "one string"),
    ({"messages": [], "prompt": "x"}, "exactly one"),
    ({"max_tokens": 3}, "exactly one"),
    ({"prompt": "x", "max_tokens": "many"}, "max_tokens must be an integer"),
    ([1, 2], "expected a string"),
    (pd.DataFrame({"a": ["x"], "b": ["y"]}), "one column"),
])
def test_bad_requests_are_400s_that_say_what_to_send(plain, data, message):
    model, tokenizer = plain
    lm = ChatLM(model, tokenizer, {"chat_template": "{{ messages[0]['content'] }}", "max_new_tokens": 2})
    with pytest.raises(MlflowException, match=message) as raised:
        lm.predict(data)
    assert raised.value.get_http_status_code() == 400
