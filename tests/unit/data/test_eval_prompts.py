"""The held-out prompts schema (iwsft.data.eval_prompts): every bad file of the corpus
(tests/data/bad/cases.yaml `eval`, files under tests/data/bad/eval/) gives a DataError naming the
file, the line (and id) and the field, both from read_eval_prompts and from `iwsft validate eval
FILE` (exit 1, no traceback, nothing written); the good file passes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from iwsft.errors import DataError
from iwsft.data.eval_prompts import read_eval_prompts

DATA = Path(__file__).resolve().parents[2] / "data"
BAD = DATA / "bad" / "eval"
GOOD = DATA / "good" / "eval_prompts.jsonl"
CASES = yaml.safe_load((DATA / "bad" / "cases.yaml").read_text())["eval"]
IDS = [case["file"] for case in CASES]
TRACEBACK = "Traceback (most recent call last)"


def validate(capsys, *args) -> tuple[int, str, str]:
    """`iwsft validate eval ...` through the CLI's own main(), in-process."""
    from iwsft.cli.main import main

    code = main(["validate", "eval", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_bad_eval_file_is_a_case_and_each_case_a_file():
    assert {path.name for path in BAD.iterdir()} == set(IDS)
    assert len(IDS) == len(set(IDS))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_eval_file_is_a_data_error_naming_file_line_and_field(case):
    path = BAD / case["file"]
    with pytest.raises(DataError) as error:
        read_eval_prompts(path)
    message = str(error.value)
    assert message.startswith(str(path))
    for fragment in case["expect"]:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_eval_file_is_rejected_by_validate(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # an empty folder: no params.yaml (defaults), and nothing may appear
    path = BAD / case["file"]
    code, out, err = validate(capsys, str(path))
    assert code == 1 and out == "", err
    assert err.startswith("iwsft validate: error: data gate 'eval' failed") and TRACEBACK not in err
    # the file and the line, then each case's id and field; a whole-file mistake (gzip, UTF-16) names no line
    assert f"{path} line " in err or f"{path}: is " in err or f"{path}: has " in err
    for fragment in case["expect"]:
        assert fragment in err, f"{fragment!r} not in:\n{err}"
    assert list(tmp_path.iterdir()) == []  # validate writes nothing


def test_several_files_one_line_each_and_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = validate(capsys, str(BAD / "no_answer.jsonl"), str(BAD / "duplicate_ids.jsonl"))
    assert code == 1 and out == "" and TRACEBACK not in err
    assert "no_answer.jsonl line 3 (id 'e3'): field 'answer' is missing" in err
    assert "duplicate_ids.jsonl line 3 (id 'e1'): field 'id' repeats the id of line 1" in err
    assert err.rstrip().endswith("iwsft validate: error: 2 of 2 files are not valid")


@pytest.mark.parametrize("name, content, fragments", [
    ("missing.jsonl", None, ["missing.jsonl", "file does not exist"]),
    ("eval.jsonl", b"", ["eval.jsonl", "no records"]),
    ("eval.parquet", b"PAR1", ["must be a .jsonl file", "'.parquet'"]),
    ("eval.jsonl", b'{"id": "e1", "prompt": "1+1=", "answer": "2"}\n{"id": "e2", "pro', ["line 2", "not valid JSON"]),
    ("eval.jsonl", b'{"id": 7.5, "prompt": "1+1=", "answer": "2"}\n', ["line 1", "field 'id' must be a non-empty string or an integer, got 7.5"]),
    ("eval.jsonl", b'{"id": "e1", "prompt": "1+1=", "answer": [2]}\n', ["field 'answer' must be a string or a number"]),
    ("eval.jsonl", b'{"id": "e1", "prompt": "1+1=", "answer": NaN}\n', ["field 'answer' must be a finite number, got NaN"]),
], ids=["missing file", "empty file", "not jsonl", "truncated line", "float id", "list answer", "NaN answer"])
def test_other_unreadable_files(tmp_path, name, content, fragments):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as error:
        read_eval_prompts(path)
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)


def test_good_file_is_read_and_normalised():
    prompts = read_eval_prompts(GOOD)
    assert prompts.source == str(GOOD) and prompts.lines == [1, 2, 3, 4]
    assert [record["id"] for record in prompts.records] == ["e1", "e2", "e3", "e4"]
    assert [record["answer"] for record in prompts.records] == ["42", "-2", "10", "3/4"]  # numbers as their text
    conversational = prompts.records[2]
    assert conversational["prompt"][-1] == {"role": "user", "content": "What is 5+5?"}
    assert conversational["metadata"] == {"stratum": "2t1d"}
    assert prompts.records[3] == {"id": "e4", "prompt": "1/2+1/4=", "answer": "3/4"}  # other fields dropped


def test_good_file_passes_validate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = validate(capsys, str(GOOD))
    assert code == 0, err
    assert out == f"{GOOD}: valid, 4 prompts (1 conversational, 1 with metadata)\n"
    assert list(tmp_path.iterdir()) == []
