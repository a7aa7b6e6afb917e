"""The `sources` stage (iwsft.stages.sources): a declared dataset -> data/sources/NAME.jsonl checked by the reader
of the input that names it, and NAME.json with its fingerprint and what was set aside."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset

from hub_datasets import AIME_ROWS, S1K_ROWS
from iwsft.config.loading import load_params, merge
from iwsft.config.schema import check
from iwsft.errors import DataError, UserError
from iwsft.stages import sources as stage

ROOT = Path(__file__).resolve().parents[3]
S1K = {"columns": {"completion": "deepseek_attempt", "answer": "solution"}, "template": "{question}"}


def params(tmp_path, **overrides):
    base = load_params(ROOT / "params.yaml", check=False)
    return check(merge(base, overrides))


def saved(tmp_path, name, rows) -> str:
    Dataset.from_list(rows).save_to_disk(str(tmp_path / name))
    return str(tmp_path / name)


def test_prompts_named_by_eval_prompts_are_checked_as_prompts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = params(tmp_path, sources={"aime": {"path": saved(tmp_path, "aime", AIME_ROWS), "columns": {"prompt": "problem"}}},
                      curate={"eval_prompts": "data/sources/aime.jsonl"})
    stage.run(settings, "aime")
    written = [json.loads(line) for line in Path("data/sources/aime.jsonl").read_text().splitlines()]
    assert written[0] == {"id": "60", "prompt": "Compute 10 + 20.", "answer": "30"} and len(written) == 4
    summary = json.loads(Path("data/sources/aime.json").read_text())
    assert summary["read_as"] == "prompts" and summary["fingerprint"]["kind"] == "datasets folder"


def test_raw_samples_may_set_rows_aside_as_curate_would(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [dict(row) for row in S1K_ROWS]
    rows[1]["deepseek_attempt"] = ""
    spec = {"path": saved(tmp_path, "s1k", rows), **S1K}
    strict = params(tmp_path, sources={"s1k": spec}, curate={"raw": "data/sources/s1k.jsonl"})
    with pytest.raises(DataError, match=r"row index 1: field 'completion' \(column 'deepseek_attempt'\) is empty"):
        stage.run(strict, "s1k")
    assert not Path("data/sources/s1k.jsonl").exists()  # nothing written for a failed check
    lenient = params(tmp_path, sources={"s1k": spec}, curate={"raw": "data/sources/s1k.jsonl"},
                     gates={"max_invalid_fraction": 0.2})
    stage.run(lenient, "s1k")
    summary = json.loads(Path("data/sources/s1k.json").read_text())
    assert summary["read_as"] == "raw samples" and summary["records"] == 7 and summary["set_aside"] == 1
    assert "(column 'deepseek_attempt') is empty" in summary["problems"][0]


def test_an_unknown_name_and_an_undeclared_file(tmp_path):
    with pytest.raises(UserError, match="no dataset named 'x' \\(declared: none\\)"):
        stage.run(params(tmp_path), "x")
    with pytest.raises(UserError, match="no sources.s1k is declared"):
        params(tmp_path, curate={"raw": "data/sources/s1k.jsonl"})
