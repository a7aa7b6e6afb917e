"""The one encoding (iwsft.encoding.sequences): the tokens trained on are the tokens pi_ref sampled."""

import pytest

from iwsft.errors import DataError
from iwsft.data.records import record_problems
from iwsft.encoding.sequences import IGNORE_INDEX, encode_pair, encode_record, misdecoded
from iwsft.model.tiny_lm import build_char_tokenizer

TOKENIZER = build_char_tokenizer()


def ids(text: str) -> list[int]:
    return TOKENIZER(text, add_special_tokens=False)["input_ids"]


def test_a_finished_text_completion_gets_eos_an_unfinished_one_does_not():
    finished = encode_pair(TOKENIZER, "1+2=", "3")
    assert finished["input_ids"][-2:] == ids("3") + [TOKENIZER.eos_token_id]
    cut = encode_pair(TOKENIZER, "1+2=", "3", finished=False)
    assert cut["input_ids"][-1] == ids("3")[-1] and TOKENIZER.eos_token_id not in cut["labels"]
    prompt_length = len(TOKENIZER("1+2=")["input_ids"])
    assert cut["labels"][:prompt_length] == [IGNORE_INDEX] * prompt_length


def test_sampled_ids_are_used_verbatim_even_where_the_text_would_tokenize_otherwise():
    sampled = ids("3") + [TOKENIZER.pad_token_id] + ids("4") + [TOKENIZER.eos_token_id]  # a special token mid-way
    encoded = encode_record(TOKENIZER, {"prompt": "1+2=", "completion": "34", "completion_ids": sampled})
    assert encoded["input_ids"][-len(sampled):] == sampled
    assert encode_record(TOKENIZER, {"prompt": "1+2=", "completion": "34"})["input_ids"][-3:] == \
        ids("34") + [TOKENIZER.eos_token_id]  # re-tokenized: another sequence, another weight


def test_ids_that_do_not_decode_to_the_completion_are_refused_by_record():
    good = {"id": "a", "completion": "34", "completion_ids": ids("34") + [TOKENIZER.eos_token_id]}
    misdecoded(TOKENIZER, [good], "train.jsonl")
    bad = {"id": "b", "completion": "35", "completion_ids": ids("34")}
    with pytest.raises(DataError, match=r"train.jsonl: 1 of 2 records have field 'completion_ids' .*id 'b'"):
        misdecoded(TOKENIZER, [good, bad], "train.jsonl")


@pytest.mark.parametrize("field, value, message", [
    ("completion_ids", [], "non-empty list of token ids"),
    ("completion_ids", [1, -2], "non-negative integer token ids, got -2"),
    ("completion_ids", [1, True], "non-negative integer token ids"),
    ("finished", "yes", "must be true or false"),
    ("metadata", [1], "must be an object"),
])
def test_the_raw_schema_checks_the_sampling_fields(field, value, message):
    problems = record_problems({"prompt": "p", "completion": "c", field: value})
    assert [name for name, _ in problems] == [field] and message in problems[0][1]
    assert record_problems({"prompt": "p", "completion": "c", "completion_ids": [4, 5], "finished": False,
                            "metadata": {"k": 1}}) == []
