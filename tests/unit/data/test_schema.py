"""The raw samples schema: every malformed input named in DESIGN.md gives a DataError that names
the file, the line (or row / id) and the field; good files in all their variants pass."""

from __future__ import annotations

import json
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iwsft.data.raw_files import read_raw_samples
from iwsft.data.records import (
    DataError,
    Problem,
    read_jsonl,
    validate_records,
)
from iwsft.io.durable import write_json_atomic, write_jsonl_atomic

GOOD = b'{"prompt": "1+2=", "completion": "3"}\n'
USER, ASSISTANT = {"role": "user", "content": "1+2="}, {"role": "assistant", "content": "3"}


def line(**fields) -> bytes:
    return (json.dumps(fields) + "\n").encode()


def write(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


# (file name, content, fragments the message must contain)
BAD_JSONL = {
    "empty file": ("samples.jsonl", b"", ["samples.jsonl", "no records"]),
    "whitespace only": ("samples.jsonl", b"\n   \r\n\t\n", ["no records"]),
    "invalid utf-8": ("samples.jsonl", GOOD + b'{"prompt": "caf\xe9", "completion": "x"}\n', ["line 2", "UTF-8"]),
    "nul byte": ("samples.jsonl", GOOD + GOOD + b'{"prompt": "a\x00", "completion": "x"}\n', ["line 3", "NUL"]),
    "truncated line": ("samples.jsonl", GOOD + GOOD + b'{"prompt": "1+2=", "compl', ["line 3", "not valid JSON"]),
    "json array": ("samples.jsonl", b'[{"prompt": "a", "completion": "b"}]\n', ["JSON array", "one object per line"]),
    "pretty json array": ("samples.jsonl", b'[\n  {"prompt": "a", "completion": "b"}\n]\n', ["JSON array"]),
    "line not an object": ("samples.jsonl", GOOD + b'"just text"\n', ["line 2", "expected a JSON object", "a string"]),
    "line is an array": ("samples.jsonl", GOOD + b"[1, 2]\n", ["line 2", "expected a JSON object, got an array"]),
    "missing prompt": ("samples.jsonl", line(completion="3"), ["line 1", "field 'prompt' is missing"]),
    "null prompt": ("samples.jsonl", line(prompt=None, completion="3"), ["field 'prompt' is null"]),
    "missing completion": ("samples.jsonl", line(prompt="1+2="), ["field 'completion' is missing"]),
    "empty completion": ("samples.jsonl", line(prompt="1+2=", completion=""), ["field 'completion' is empty"]),
    "whitespace prompt": ("samples.jsonl", line(prompt=" \t\n", completion="3"), ["field 'prompt' is only whitespace"]),
    "number prompt": ("samples.jsonl", line(prompt=42, completion="3"), ["field 'prompt' must be a string or a list of messages, got 42"]),
    "list completion": ("samples.jsonl", line(prompt="a", completion=["3"]), ["field 'completion' message 1 must be an object", "got '3'"]),
    "nul character escape": ("samples.jsonl", line(prompt="a\u0000b", completion="3"), ["'prompt' contains a NUL"]),
    # TRL's conversational format (iwsft.data.conversation); more in tests/data/bad/raw/conversation_*.jsonl
    "empty message list": ("samples.jsonl", line(prompt=[], completion=[ASSISTANT]), ["field 'prompt' is an empty message list"]),
    "prompt ends with assistant": ("samples.jsonl", line(prompt=[USER, ASSISTANT], completion=[ASSISTANT]),
                                   ["field 'prompt' ends with an assistant message (message 2)"]),
    "system message in the middle": ("samples.jsonl", line(prompt=[USER, {"role": "system", "content": "s"}], completion=[ASSISTANT]),
                                     ["message 2 has role 'system' where 'assistant' was expected (system messages may only lead)"]),
    "only system messages": ("samples.jsonl", line(prompt=[{"role": "system", "content": "s"}], completion=[ASSISTANT]),
                             ["field 'prompt' has only system messages"]),
    "unknown role": ("samples.jsonl", line(prompt=[{"role": "tool", "content": "x"}], completion=[ASSISTANT]),
                     ["message 1 has unknown role 'tool'"]),
    "message without content": ("samples.jsonl", line(prompt=[{"role": "user"}], completion=[ASSISTANT]), ["message 1 has no 'content'"]),
    "empty completion list": ("samples.jsonl", line(prompt=[USER], completion=[]), ["field 'completion' holds 0 messages"]),
    "user completion": ("samples.jsonl", line(prompt=[USER], completion=[USER]),
                        ["field 'completion' message 1 has unknown role 'user' (expected 'assistant')"]),
    "whitespace content": ("samples.jsonl", line(prompt=[USER], completion=[{"role": "assistant", "content": " "}]),
                           ["field 'completion' message 1 content is only whitespace"]),
    "string prompt, list completion": ("samples.jsonl", line(prompt="a", completion=[ASSISTANT]),
                                       ["field 'completion' is a message list while 'prompt' is a string"]),
    "lone surrogate": ("samples.jsonl", b'{"prompt": "a\\ud800", "completion": "3"}\n', ["'prompt'", "surrogate"]),
    "reward 2": ("samples.jsonl", line(prompt="a", completion="b", reward=2), ["'reward' must be 0 or 1, got 2"]),
    "reward -1": ("samples.jsonl", line(prompt="a", completion="b", reward=-1), ["'reward'", "got -1"]),
    "reward 0.5": ("samples.jsonl", line(prompt="a", completion="b", reward=0.5), ["'reward'", "got 0.5"]),
    "reward yes": ("samples.jsonl", line(prompt="a", completion="b", reward="yes"), ["'reward'", "'yes' (a string)"]),
    "reward true": ("samples.jsonl", line(prompt="a", completion="b", reward=True), ["'reward'", "true (a boolean)"]),
    "reward NaN": ("samples.jsonl", b'{"prompt": "a", "completion": "b", "reward": NaN}\n', ["'reward'", "NaN"]),
    "score Infinity": ("samples.jsonl", b'{"prompt": "a", "completion": "b", "score": Infinity}\n', ["'score'", "finite", "Infinity"]),
    "score -Infinity": ("samples.jsonl", b'{"prompt": "a", "completion": "b", "score": -Infinity}\n', ["'score'", "-Infinity"]),
    "score NaN": ("samples.jsonl", b'{"prompt": "a", "completion": "b", "score": NaN}\n', ["'score'", "NaN"]),
    "score string": ("samples.jsonl", line(prompt="a", completion="b", score="0.5"), ["'score'", "'0.5' (a string)"]),
    "ref_logprob positive": ("samples.jsonl", GOOD + line(id="r", prompt="a", completion="b", ref_logprob=0.5),
                             ["samples.jsonl line 2 (id 'r'): field 'ref_logprob' must be <= 0 (a log-probability), got 0.5"]),
    "ref_logprob -Infinity": ("samples.jsonl", b'{"id": "r", "prompt": "a", "completion": "b", "ref_logprob": -Infinity}\n',
                              ["line 1 (id 'r')", "'ref_logprob' must be a finite number", "-Infinity"]),
    "ref_logprob NaN": ("samples.jsonl", b'{"prompt": "a", "completion": "b", "ref_logprob": NaN}\n', ["'ref_logprob'", "NaN"]),
    "ref_logprob string": ("samples.jsonl", line(prompt="a", completion="b", ref_logprob="-1"), ["'ref_logprob'", "'-1' (a string)"]),
    "answer list": ("samples.jsonl", line(prompt="a", completion="b", answer=[1]), ["'answer'", "string or a number"]),
    "empty id": ("samples.jsonl", line(id="", prompt="a", completion="b"), ["field 'id' is empty"]),
    "float id": ("samples.jsonl", line(id=1.5, prompt="a", completion="b"), ["field 'id'", "non-empty string"]),
    "duplicate id": (
        "samples.jsonl",
        line(id="a", prompt="p", completion="x") + GOOD + line(id="a", prompt="p", completion="y"),
        ["line 3 (id 'a')", "field 'id'", "line 1"],
    ),
    "repeated key": ("samples.jsonl", b'{"prompt": "a", "completion": "b", "reward": 0, "reward": 1}\n', ["line 1", "'reward' twice"]),
    "parquet bytes named jsonl": ("samples.jsonl", b"PAR1\x00\x00", ["Parquet", ".parquet"]),
    "unsupported .csv": ("samples.csv", b"prompt,completion\na,b\n", ["samples.csv", "unsupported extension '.csv'"]),
    "unsupported .json": ("samples.json", GOOD, ["unsupported extension '.json'"]),
}


@pytest.mark.parametrize("name, content, fragments", BAD_JSONL.values(), ids=BAD_JSONL.keys())
def test_malformed_file_is_a_data_error_naming_where_and_what(tmp_path, name, content, fragments):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError) as error:
        read_raw_samples(path)
    message = str(error.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_message_format_names_file_line_id_and_field(tmp_path):
    content = GOOD * 6 + line(id="a12", prompt="1+2=", completion="3", reward=2)
    path = write(tmp_path, "samples.jsonl", content)
    with pytest.raises(DataError) as error:
        read_raw_samples(path)
    assert str(error.value) == f"{path} line 7 (id 'a12'): field 'reward' must be 0 or 1, got 2"


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_raw_samples(tmp_path / "nowhere.jsonl")
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        read_raw_samples(tmp_path / "folder.jsonl")


def test_every_problem_is_collected_and_counted(tmp_path):
    content = GOOD + line(prompt="a", completion="b", reward=2) + line(prompt=1, completion="b", score="x")
    path = write(tmp_path, "samples.jsonl", content)
    with pytest.raises(DataError) as error:
        read_raw_samples(path)
    message = str(error.value)
    assert "2 of 3 records are invalid (3 problems)" in message
    assert "line 2: field 'reward'" in message
    assert "line 3: field 'prompt'" in message and "line 3: field 'score'" in message


def test_long_problem_lists_are_cut_with_a_count(tmp_path):
    content = GOOD + line(prompt="a", completion="b", reward=5) * 25
    with pytest.raises(DataError) as error:
        read_raw_samples(write(tmp_path, "samples.jsonl", content))
    message = str(error.value)
    assert "25 of 26 records are invalid" in message
    assert "line 21: field 'reward'" in message and "line 22:" not in message
    assert message.endswith("... and 5 more")


def test_invalid_records_can_be_set_aside_up_to_a_fraction(tmp_path):
    content = GOOD + line(id="bad", prompt="a", completion="b", reward=2) + GOOD + b"{oops\n"
    path = write(tmp_path, "samples.jsonl", content)
    samples = read_raw_samples(path, max_invalid_fraction=0.5)
    assert len(samples.records) == 2
    assert [rejection.line for rejection in samples.rejected] == [2, 4]
    assert samples.rejected[0].raw["id"] == "bad"
    assert samples.rejected[0].problems[0].field == "reward"
    assert samples.rejected[1].raw == "{oops"
    with pytest.raises(DataError, match="2 of 4 records are invalid.*max_invalid_fraction=0.4"):
        read_raw_samples(path, max_invalid_fraction=0.4)


def test_a_file_with_no_valid_record_fails_whatever_the_fraction(tmp_path):
    path = write(tmp_path, "samples.jsonl", line(prompt="a", completion="") * 2)
    with pytest.raises(DataError, match="no valid record is left"):
        read_raw_samples(path, max_invalid_fraction=1.0)
    with pytest.raises(ValueError, match="max_invalid_fraction"):
        read_raw_samples(path, max_invalid_fraction=1.5)


def test_good_jsonl_with_unicode_crlf_blank_lines_and_bom(tmp_path):
    records = [
        {"prompt": "Wie viel ist 2+2? 🤔", "completion": "四", "answer": "4", "reward": 1},
        {"prompt": "שלום\u2028next", "completion": "e\u0301 café", "reward": 0},
    ]
    content = b"\xef\xbb\xbf" + b"\r\n\r\n".join(json.dumps(r, ensure_ascii=False).encode() for r in records) + b"\r\n\r\n"
    samples = read_raw_samples(write(tmp_path, "samples.jsonl", content))
    assert [(r["prompt"], r["completion"]) for r in samples.records] == [(r["prompt"], r["completion"]) for r in records]
    assert samples.rejected == []


def test_good_conversational_records_are_kept_as_message_lists(tmp_path):
    system = {"role": "system", "content": "Answer with a number."}
    content = (line(id="c1", prompt=[system, USER], completion=[ASSISTANT], reward=1)
               + line(prompt=[USER, ASSISTANT, USER], completion=[ASSISTANT]) + GOOD)  # plain and conversational mix by record
    first, second, plain = read_raw_samples(write(tmp_path, "samples.jsonl", content)).records
    assert first == {"id": "c1", "prompt": [system, USER], "completion": [ASSISTANT], "reward": 1}
    assert second["prompt"] == [USER, ASSISTANT, USER] and second["id"].startswith("sha-")
    assert plain["prompt"] == "1+2="


def test_optional_fields_absent_get_a_derived_stable_unique_id(tmp_path):
    path = write(tmp_path, "samples.jsonl", GOOD + GOOD)
    first, second = read_raw_samples(path).records
    assert first == {"id": first["id"], "prompt": "1+2=", "completion": "3"}
    assert first["id"].startswith("sha-") and first["id"] != second["id"]  # same pair, other line
    assert [r["id"] for r in read_raw_samples(path).records] == [first["id"], second["id"]]


def test_optional_fields_are_normalised(tmp_path):
    content = (
        line(id=7, prompt="a", completion="b", answer=42, reward=1.0, score=3)
        + line(id="x", prompt="a", completion="c", answer=3.0, reward=0, score=-0.25)
        + line(id="y", prompt="a", completion="d", answer=None, reward=None, score=None, ref_logprob=None, extra="dropped")
        + line(id="z", prompt="a", completion="e", ref_logprob=-2) + line(id="w", prompt="a", completion="f", ref_logprob=0)
    )
    records = read_raw_samples(write(tmp_path, "samples.jsonl", content)).records
    assert records[0] == {"id": "7", "prompt": "a", "completion": "b", "answer": "42", "reward": 1, "score": 3.0}
    assert records[3]["ref_logprob"] == -2.0 and type(records[3]["ref_logprob"]) is float and records[4]["ref_logprob"] == 0.0
    assert type(records[0]["reward"]) is int and type(records[0]["score"]) is float
    assert records[1]["answer"] == "3" and records[1]["reward"] == 0
    assert records[2] == {"id": "y", "prompt": "a", "completion": "d"}


def test_good_parquet_from_pandas(tmp_path):
    frame = pd.DataFrame({
        "id": [1, 2, 3],
        "prompt": pd.Categorical(["1+2=", "1+2=", "2+2="]),
        "completion": ["3", "4", "4"],
        "answer": ["3", "3", "4"],
        "reward": [1, 0, None],  # pandas: float64 with NaN, written as a null
        "score": [0.5, 1.0, 2.0],
        "meta": [{"a": 1}, {"a": 2}, {"a": 3}],  # not in the schema: ignored
    })
    path = tmp_path / "samples.parquet"
    frame.to_parquet(path)
    records = read_raw_samples(path).records
    assert records[0] == {"id": "1", "prompt": "1+2=", "completion": "3", "answer": "3", "reward": 1, "score": 0.5}
    assert "reward" not in records[2] and records[2]["prompt"] == "2+2="


def test_parquet_with_only_required_columns(tmp_path):
    path = tmp_path / "samples.parquet"
    pq.write_table(pa.table({"prompt": ["a"], "completion": ["ü"]}), path)
    assert read_raw_samples(path).records[0]["completion"] == "ü"


BAD_PARQUET = {
    "missing column": (pa.table({"prompt": ["a"], "answer": ["1"]}), ["missing required column 'completion'", "columns found"]),
    "int prompt column": (pa.table({"prompt": [1], "completion": ["a"]}), ["column 'prompt' must be list or string, got integer"]),
    "bool reward column": (pa.table({"prompt": ["a"], "completion": ["b"], "reward": [True]}), ["column 'reward'", "got boolean"]),
    "string score column": (pa.table({"prompt": ["a"], "completion": ["b"], "score": ["1"]}), ["column 'score'", "got string"]),
    "reward 2 in a row": (pa.table({"prompt": ["a", "b"], "completion": ["b", "c"], "reward": [1, 2]}), ["row index 1", "'reward'", "got 2"]),
    "null prompt in a row": (pa.table({"prompt": ["a", None], "completion": ["b", "c"]}), ["row index 1", "'prompt' is null"]),
    "string ref_logprob column": (pa.table({"prompt": ["a"], "completion": ["b"], "ref_logprob": ["-1"]}),
                                  ["column 'ref_logprob' must be float or integer, got string"]),
    "positive ref_logprob in a row": (pa.table({"id": ["a", "b"], "prompt": ["a", "b"], "completion": ["b", "c"], "ref_logprob": [-1.0, 1e-3]}),
                                      ["row index 1 (id 'b')", "'ref_logprob' must be <= 0"]),
    "NaN score in a row": (pa.table({"prompt": ["a"], "completion": ["b"], "score": [float("nan")]}), ["row index 0", "'score'", "NaN"]),
    "no rows": (pa.table({"prompt": pa.array([], pa.string()), "completion": pa.array([], pa.string())}), ["no records"]),
}


@pytest.mark.parametrize("table, fragments", BAD_PARQUET.values(), ids=BAD_PARQUET.keys())
def test_malformed_parquet(tmp_path, table, fragments):
    path = tmp_path / "samples.parquet"
    pq.write_table(table, path)
    with pytest.raises(DataError) as error:
        read_raw_samples(path)
    assert str(path) in str(error.value)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_text_named_parquet_is_unreadable(tmp_path):
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_raw_samples(write(tmp_path, "samples.parquet", GOOD))


def test_validate_records_on_records_already_in_memory():
    records = [{"prompt": "a", "completion": "b", "id": "x"}, {"prompt": "a", "completion": "", "id": "x"}]
    problems = validate_records(records, "gx-batch", lines=[10, 11])
    assert problems == [
        Problem(11, "x", "completion", "is empty", "gx-batch"),
        Problem(11, "x", "id", "repeats the id of line 10", "gx-batch"),
    ]
    assert str(problems[0]) == "gx-batch line 11 (id 'x'): field 'completion' is empty"
    assert validate_records([{"prompt": "a", "completion": "b"}], "ok") == []


def test_jsonl_round_trip_keeps_unicode_and_creates_parents(tmp_path):
    path = tmp_path / "deep" / "er" / "out.jsonl"
    records = [{"prompt": "ß 🤔", "reward": 1}, {"prompt": "b", "score": 0.5}]
    write_jsonl_atomic(path, records)
    assert read_jsonl(path) == records
    assert "🤔" in path.read_text(encoding="utf-8")
    assert os.listdir(path.parent) == ["out.jsonl"]  # no temporary file left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl_atomic(path, [{"a": 1}])

    def records_then_crash():
        yield {"a": 2}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(path, records_then_crash())
    assert read_jsonl(path) == [{"a": 1}]
    assert os.listdir(tmp_path) == ["out.jsonl"]


def test_json_write_handles_numpy_values(tmp_path):
    import numpy as np

    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"accuracy": np.float32(0.5), "counts": np.array([1, 2])})
    assert json.loads(path.read_text()) == {"accuracy": 0.5, "counts": [1, 2]}


def test_read_jsonl_names_a_truncated_line_and_a_missing_file(tmp_path):
    path = write(tmp_path, "train.jsonl", b'{"a": 1}\n{"a": ')
    with pytest.raises(DataError, match="train.jsonl line 2"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_jsonl(tmp_path / "missing.jsonl")
