"""What users bring besides plain UTF-8 JSONL of small numbers (issue 32): big-integer answers kept exact,
messages with null extra keys (OpenAI exports), conversational Parquet as `datasets` writes it, and files
that are not JSON Lines as written (compressed, UTF-16/32, CR-only line ends), named for what they are."""

from __future__ import annotations

import bz2
import codecs
import gzip
import json
from pathlib import Path

import pytest

from iwsft.data.eval_prompts import read_eval_prompts
from iwsft.data.numbers import NumberLiteral, digit_count, parse_float, parse_int
from iwsft.data.raw_files import read_raw_samples
from iwsft.data.records import validate_records
from iwsft.errors import DataError

GOOD = Path(__file__).resolve().parents[2] / "data" / "good"
BIG = GOOD / "big_numbers_and_null_keys.jsonl"


def test_numbers_python_cannot_hold_stay_their_text():
    assert parse_int("12") == 12 and parse_int("9" * 4300) == int("9" * 4300)
    assert parse_int("-" + "9" * 4301) == NumberLiteral("-" + "9" * 4301)
    assert parse_float("1e400") == NumberLiteral("1e400") and parse_float("1e-400") == 0.0
    assert [digit_count(10**k) for k in (0, 1, 399, 400, 5000)] == [1, 2, 400, 401, 5001]
    assert digit_count(10**400 - 1) == 400 and digit_count(-(10**30)) == 31


def test_big_integer_answers_are_kept_exact_in_raw_and_eval_files():
    raw = read_raw_samples(BIG).records
    assert [r["answer"] for r in raw] == ["9" * 400, "7" * 5000, "4"]
    assert [r["id"] for r in raw] == ["1", "2", "3"]  # integer ids, as their text
    held_out = read_eval_prompts(BIG).records  # the eval reader ignores `completion`
    assert [r["answer"] for r in held_out] == ["9" * 400, "7" * 5000, "4"] and held_out[0]["id"] == "1"


def test_integer_and_string_ids_follow_one_rule_in_raw_and_eval_files(tmp_path):
    path = tmp_path / "ids.jsonl"
    path.write_text('{"id": 7, "prompt": "a", "completion": "b", "answer": "1"}\n'
                    '{"id": "7", "prompt": "c", "completion": "d", "answer": "2"}\n')
    for read in (read_raw_samples, read_eval_prompts):
        with pytest.raises(DataError, match=r"line 2 \(id '7'\): field 'id' repeats the id of line 1"):
            read(path)


def test_null_message_keys_are_accepted_and_dropped_others_refused():
    records = read_raw_samples(BIG).records
    assert records[2]["prompt"] == [{"role": "user", "content": "2+2?"}]
    assert records[2]["completion"] == [{"role": "assistant", "content": "4"}]
    assert read_eval_prompts(BIG).records[2]["prompt"] == [{"role": "user", "content": "2+2?"}]
    refused = {"prompt": [{"role": "user", "content": "hi", "name": "bob"}],
               "completion": [{"role": "assistant", "content": "x", "tool_calls": []}]}
    messages = [str(problem) for problem in validate_records([refused], "f.jsonl")]
    assert any("message 1 has the key 'name'" in m for m in messages)
    assert any("message 1 has the key 'tool_calls'" in m for m in messages)


def test_booleans_for_reward_are_refused_with_the_fix(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"prompt": "a", "completion": "b", "reward": false}\n')
    with pytest.raises(DataError, match=r"field 'reward' must be 0 or 1, got false \(a boolean\): write 1 or 0"):
        read_raw_samples(path)


TRL_RECORDS = [  # TRL's conversational prompt-completion format
    {"prompt": [{"role": "system", "content": "Answer with a number."}, {"role": "user", "content": "What is 2 + 3?"}],
     "completion": [{"role": "assistant", "content": "Answer: 5"}], "answer": "5", "reward": 1},
    {"prompt": [{"role": "user", "content": "What is 7 - 4?"}],
     "completion": [{"role": "assistant", "content": "Answer: 3", "refusal": None}], "answer": "3", "reward": 1},
]


def test_conversational_parquet_written_by_datasets_reads_like_jsonl(tmp_path):
    from datasets import Dataset

    parquet, jsonl = tmp_path / "trl.parquet", tmp_path / "trl.jsonl"
    Dataset.from_list(TRL_RECORDS).to_parquet(str(parquet))
    jsonl.write_text("".join(json.dumps(record) + "\n" for record in TRL_RECORDS))
    from_parquet, from_jsonl = read_raw_samples(parquet), read_raw_samples(jsonl)
    strip_ids = [{k: v for k, v in r.items() if k != "id"} for r in from_parquet.records]
    assert strip_ids == [{k: v for k, v in r.items() if k != "id"} for r in from_jsonl.records]
    assert from_parquet.records[1]["completion"] == [{"role": "assistant", "content": "Answer: 3"}]
    assert from_parquet.unit == "row index"


def test_a_bad_message_in_conversational_parquet_is_named_by_row(tmp_path):
    from datasets import Dataset

    bad = [TRL_RECORDS[0], {**TRL_RECORDS[1], "prompt": [{"role": "assistant", "content": "hi"}]}]
    path = tmp_path / "trl.parquet"
    Dataset.from_list(bad).to_parquet(str(path))
    with pytest.raises(DataError, match=r"row index 1: field 'prompt' message 1 has role 'assistant' where 'user'"):
        read_raw_samples(path)


TEXT = '{"prompt": "1+2=", "completion": "3"}\n{"prompt": "2+2=", "completion": "4"}\n'
WHOLE_FILE_MISTAKES = {
    "gzip": (gzip.compress(TEXT.encode()), "is gzip-compressed: gunzip it first"),
    "bzip2": (bz2.compress(TEXT.encode()), "is bzip2-compressed"),
    "utf-16 bom": (TEXT.encode("utf-16"), "is UTF-16 text (little-endian, with a BOM); save it as UTF-8"),
    "utf-16be bom": (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "is UTF-16 text (big-endian, with a BOM)"),
    "utf-16le": (TEXT.encode("utf-16-le"), "is UTF-16LE text (no BOM)"),
    "utf-16be": (TEXT.encode("utf-16-be"), "is UTF-16BE text (no BOM)"),
    "utf-32 bom": (TEXT.encode("utf-32"), "is UTF-32 text (little-endian, with a BOM)"),
    "utf-32le": (TEXT.encode("utf-32-le"), "is UTF-32LE text (no BOM)"),
    "utf-32be": (TEXT.encode("utf-32-be"), "is UTF-32BE text (no BOM)"),
    "cr only": (TEXT.replace("\n", "\r").encode(), "has old-Mac line ends (CR only)"),
}


@pytest.mark.parametrize("content, message", WHOLE_FILE_MISTAKES.values(), ids=WHOLE_FILE_MISTAKES)
def test_a_file_that_is_not_utf8_json_lines_is_named_for_what_it_is(tmp_path, content, message):
    path = tmp_path / "samples.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        read_raw_samples(path)
    assert str(error.value) == f"{path}: {message}" or str(error.value).startswith(f"{path}: {message}")
    assert "NUL byte" not in str(error.value) and "Extra data" not in str(error.value)


@pytest.mark.parametrize("content", [TEXT.replace("\n", "\r\n"), TEXT.rstrip("\n") + "\r", codecs.BOM_UTF8.decode() + TEXT])
def test_crlf_a_final_cr_and_a_utf8_bom_are_fine(tmp_path, content):
    path = tmp_path / "samples.jsonl"
    path.write_bytes(content.encode())
    assert len(read_raw_samples(path).records) == 2


def test_an_integral_float_answer_loses_its_point_only_where_floats_are_exact():
    from iwsft.data.records import answer_text

    assert [answer_text(value) for value in (3.0, -2.0, 2.0**53, 1e30, 0.5)] == ["3", "-2", str(2**53), "1e+30", "0.5"]
