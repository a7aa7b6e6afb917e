"""Dataset sources (iwsft.data.sources) read through the checked readers: a hub dataset from a local HF cache
built here, a save_to_disk folder, a glob of shards, a file with a columns mapping; the mapping and template
before the checks, messages naming the source, row and column; fingerprints; the params rules."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest
from datasets import Dataset, DatasetDict

from hub_datasets import AIME_ROWS, S1K_ROWS, hub_dataset
from iwsft.config.schema import Source
from iwsft.data.eval_prompts import read_eval_prompts
from iwsft.data.raw_files import read_raw_samples
from iwsft.data.source_paths import input_problems
from iwsft.data.sources import fill, load, template_columns
from iwsft.errors import DataError, UserError

S1K = {"columns": {"completion": "deepseek_attempt", "answer": "solution"},
       "template": "{question}\n\nPut your final answer in \\boxed{}."}
AIME = {"columns": {"prompt": "problem"}}


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty hub cache that huggingface_hub and datasets use for this test (their paths are read at import)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    return cache


def source(path: str, **settings) -> Source:
    return Source(path=path, **settings)


def test_a_hub_dataset_is_read_from_the_cache_mapped_and_templated(hub):
    commit = hub_dataset(hub, "simplescaling/s1K-1.1", {"train": S1K_ROWS})
    samples = read_raw_samples(source("hf://datasets/simplescaling/s1K-1.1", **S1K))
    assert len(samples.records) == len(S1K_ROWS) and samples.unit == "row index"
    first = samples.records[0]
    assert first["prompt"] == "What is 1 + 2?\n\nPut your final answer in \\boxed{}."  # LaTeX braces kept
    assert first["completion"] == "The answer is \\boxed{3}." and first["answer"] == "3"
    assert set(first) == {"id", "prompt", "completion", "answer"}  # other columns are not carried along
    assert samples.fingerprint == {"kind": "hub", "repo": "simplescaling/s1K-1.1", "revision": "main",
                                   "commit": commit, "config": None, "split": None, "rows": len(S1K_ROWS)}


def test_a_new_revision_is_what_main_reads_and_an_old_one_stays_reachable(hub):
    old = hub_dataset(hub, "o/aime", {"train": AIME_ROWS})
    new = hub_dataset(hub, "o/aime", {"train": AIME_ROWS[:2]})
    assert len(read_eval_prompts(source("hf://datasets/o/aime", **AIME)).records) == 2
    pinned = read_eval_prompts(source(f"hf://datasets/o/aime@{old}", **AIME))
    assert len(pinned.records) == 4 and pinned.fingerprint["commit"] == old != new
    assert pinned.records[0] == {"id": "60", "prompt": "Compute 10 + 20.", "answer": "30"}


def test_a_dataset_missing_from_the_cache_gives_the_command_that_downloads_it(hub):
    with pytest.raises(UserError) as error:
        read_eval_prompts("hf://datasets/HuggingFaceH4/aime_2024@v1")
    assert "HF_HUB_OFFLINE=0 hf download HuggingFaceH4/aime_2024 --repo-type dataset --revision v1" in str(error.value)
    with pytest.raises(UserError, match="hf://datasets/OWNER/NAME"):
        read_eval_prompts("hf://datasets/just-a-name")


def test_a_bad_row_is_named_by_source_row_index_field_and_column(hub):
    rows = [dict(row) for row in S1K_ROWS]
    rows[5]["deepseek_attempt"] = "   "
    rows[6]["question"] = None
    hub_dataset(hub, "o/s1k", {"train": rows})
    with pytest.raises(DataError) as error:
        read_raw_samples(source("hf://datasets/o/s1k", split="train", **S1K))
    message = str(error.value)
    assert "hf://datasets/o/s1k (split train): 2 of 8 records are invalid" in message
    assert "hf://datasets/o/s1k (split train) row index 5: field 'completion' (column 'deepseek_attempt') is " in message
    assert ("row index 6: field 'prompt' (template over column 'question') is null" in message)


def test_a_mapped_column_that_is_not_there_is_one_message_listing_the_columns(hub):
    hub_dataset(hub, "o/aime", {"train": AIME_ROWS})
    with pytest.raises(DataError, match=r"no column 'question' \(columns: answer, id, problem, solution, url, year\)"):
        read_eval_prompts(source("hf://datasets/o/aime", columns={"prompt": "question"}))
    with pytest.raises(DataError, match="the template 'Solve: {question}' names no column"):
        read_eval_prompts(source("hf://datasets/o/aime", template="Solve: {question}"))


def test_several_splits_need_one_named(hub):
    hub_dataset(hub, "o/two", {"train": AIME_ROWS, "test": AIME_ROWS[:1]})
    with pytest.raises(DataError, match="has splits .*test.*: set `split`"):
        read_eval_prompts(source("hf://datasets/o/two", **AIME))
    assert len(read_eval_prompts(source("hf://datasets/o/two", split="test", **AIME)).records) == 1


def test_a_save_to_disk_folder_and_its_fingerprint(tmp_path):
    folder = tmp_path / "aime"
    DatasetDict({"test": Dataset.from_list(AIME_ROWS)}).save_to_disk(str(folder))
    prompts = read_eval_prompts(source(str(folder), **AIME))
    assert [record["id"] for record in prompts.records] == ["60", "61", "62", "63"]
    assert prompts.fingerprint["kind"] == "datasets folder" and "dataset_dict.json" in prompts.fingerprint["files"]


def test_rows_without_ids_are_named_by_their_index(tmp_path):
    folder = tmp_path / "gsm"
    Dataset.from_list([{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": "4"}]).save_to_disk(str(folder))
    prompts = read_eval_prompts(source(str(folder), columns={"prompt": "question"}))
    assert [record["id"] for record in prompts.records] == ["0", "1"]


def test_a_glob_of_shards_names_a_bad_record_by_its_own_file_and_line(tmp_path):
    rows = [{"q": row["question"], "a": row["deepseek_attempt"], "reward": 1} for row in S1K_ROWS]
    for index in range(2):
        (tmp_path / f"part-{index}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[index * 4:index * 4 + 4]))
    spec = source(str(tmp_path / "part-*.jsonl"), columns={"prompt": "q", "completion": "a"})
    samples = read_raw_samples(spec)
    assert len(samples.records) == 8 and set(samples.fingerprint["files"]) == {str(tmp_path / "part-0.jsonl"),
                                                                              str(tmp_path / "part-1.jsonl")}
    (tmp_path / "part-1.jsonl").write_text(json.dumps({"q": "x", "a": "y", "reward": 2}) + "\n")
    with pytest.raises(DataError, match=r"part-1\.jsonl line 1: field 'reward' must be 0 or 1, got 2"):
        read_raw_samples(spec)
    with pytest.raises(DataError, match="no file matches"):
        read_raw_samples(str(tmp_path / "none-*.parquet"))


def test_a_local_file_with_a_mapping_keeps_its_line_numbers(tmp_path):
    path = tmp_path / "aime.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in AIME_ROWS[:2]) + json.dumps({"id": 9, "problem": "x"}) + "\n")
    with pytest.raises(DataError, match=r"aime\.jsonl line 3 \(id '9'\): field 'answer' is missing"):
        read_eval_prompts(source(str(path), **AIME))


def test_plain_files_are_read_as_before(tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_text(json.dumps({"prompt": "p", "completion": "c", "reward": 1}) + "\n")
    samples = read_raw_samples(path)
    assert samples.unit == "line" and samples.lines == [1] and samples.fingerprint["kind"] == "file"


def test_template_fills_columns_only():
    names = template_columns("{question} in \\boxed{} or \\frac{a}{b} ({year})", ["question", "year"])
    assert names == ["question", "year"]
    assert fill("{question} \\boxed{} {x}", {"question": "Q"}, ["question"]) == "Q \\boxed{} {x}"
    assert fill("{question}", {"question": None}, ["question"]) is None


def test_params_name_datasets_through_sources_only():
    problems = input_problems({"curate.raw": "hf://datasets/o/n", "curate.eval_prompts": "data/sources/aime.jsonl",
                               "sample.prompts": "data/prompts/train.jsonl"}, {"s1k": "hf://datasets/o/n"})
    assert problems == [
        "curate.raw: hf://datasets/o/n is a dataset, not a file: declare it as `sources: {NAME: hf://datasets/o/n}` "
        "and set curate.raw: data/sources/NAME.jsonl",
        "curate.eval_prompts: data/sources/aime.jsonl is written by the `sources` stage, but no sources.aime is "
        "declared (declared: s1k)"]
    with pytest.raises(ValueError, match="set columns.prompt or template, not both"):
        Source(path="x", columns={"prompt": "q"}, template="{q}")
    with pytest.raises(ValueError, match=r"maps unknown field\(s\) \['question'\]"):
        Source(path="x", columns={"question": "q"})


def test_load_reports_what_was_read(tmp_path):
    path = tmp_path / "a.parquet"
    Dataset.from_list(AIME_ROWS).to_parquet(str(path))
    loaded = load(str(path), checked_columns=False)
    assert loaded.unit == "row index" and loaded.entries[0][1]["problem"] == "Compute 10 + 20."
    assert len(loaded.fingerprint["sha256"]) == 64
