"""The bad-input corpus (tests/data/bad/cases.yaml): every case fails with a clear message, exit
status 1, no traceback, nothing written downstream and earlier outputs untouched; good files pass.

- Raw files: `iwsft validate raw FILE` in an empty folder, through the CLI's main() in-process (and
  three as real processes, for the exit status); the schema fails before GX loads, so each is fast.
- Through the DAG: copies of the session's reproduced micro project, then real `dvc repro` (at
  most one stage runs), so no test here pays for another full DAG. The other curate cases run the
  stage's command through main() in-process on such a copy, its outs removed first as dvc does: one
  Great Expectations import for all of them instead of ~15 s of start-up each.
- Nothing registered: the register stage never runs and reports/registry.json (its decision) is in
  the untouched downstream snapshot.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data"
CASES = yaml.safe_load((DATA / "bad" / "cases.yaml").read_text())
LATER = {case["name"]: case["expect"] for case in CASES["later"]}
TRACEBACK = "Traceback (most recent call last)"
BIN = Path(sys.executable).parent
UPSTREAM = ["data/prepare", "data/sample"]
DOWNSTREAM = ["data/quality", "data/reference", "data/train", "models", "data/evaluate", "reports"]


def iwsft(*args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "1", "HF_HUB_OFFLINE": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(BIN / "iwsft"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def snapshot(root: Path, folders: list[str]) -> dict:
    """path -> (mtime_ns, sha256) of every file under `folders`: equal snapshots = untouched."""
    files = [path for folder in folders for path in sorted((root / folder).rglob("*")) if path.is_file()]
    return {str(path.relative_to(root)): (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()) for path in files}


def assert_clean_failure(done: subprocess.CompletedProcess, fragments: list[str]) -> str:
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert TRACEBACK not in output, output[-4000:]
    for fragment in fragments:
        assert fragment in output, f"{fragment!r} not in:\n{output[-3000:]}"
    return output


def test_the_corpus_has_every_case_and_each_file_is_one():
    assert len(CASES["raw"]) + len(CASES["later"]) >= 25
    listed = {case["file"] for case in CASES["raw"]}
    assert {path.name for path in (DATA / "bad" / "raw").iterdir()} == listed - {"no_such_file.jsonl"}


def validate_in_process(capsys, *args) -> subprocess.CompletedProcess:
    """`iwsft validate ...` through the CLI's own main() (no new interpreter: ~0.05 s a case)."""
    from iwsft.cli.main import main

    code = main(["validate", *args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


@pytest.mark.parametrize("case", CASES["raw"], ids=[case["file"] for case in CASES["raw"]])
def test_bad_raw_file_is_rejected_by_validate(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # an empty folder: no params.yaml (defaults), and nothing may appear
    done = validate_in_process(capsys, "raw", str(DATA / "bad" / "raw" / case["file"]))
    output = assert_clean_failure(done, ["data gate 'raw' failed", *case["expect"]])
    assert done.returncode == 1 and done.stdout == "" and output.startswith("iwsft validate: error:")
    assert list(tmp_path.iterdir()) == []  # validate writes nothing


@pytest.mark.parametrize("name", ["one_bad_among_many.jsonl", "no_such_file.jsonl", "a_directory.jsonl"])
def test_validate_exits_1_without_a_traceback_as_a_real_process(name, tmp_path):
    done = iwsft("validate", "raw", str(DATA / "bad" / "raw" / name), cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    case = next(case for case in CASES["raw"] if case["file"] == name)
    assert_clean_failure(done, case["expect"])


def test_good_files_pass_validate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    files = sorted(path for path in (DATA / "good").iterdir() if path.name != "eval_prompts.jsonl")  # eval: test_eval_prompts.py
    done = validate_in_process(capsys, "raw", *map(str, files))
    assert done.returncode == 0, done.stderr
    assert [line.split(": valid, ")[0] for line in done.stdout.splitlines()] == list(map(str, files))
    assert "samples.parquet: valid, 3 records (0 conversational, 2 with a reward, 2 with a score)" in done.stdout
    assert "conversational.jsonl: valid, 3 records (3 conversational, 2 with a reward, 0 with a score)" in done.stdout


@pytest.fixture
def project(micro_project, tmp_path):
    """A private copy of the reproduced micro project (outputs, DVC cache, git) to break things in."""
    shutil.copytree(micro_project.path, tmp_path / "project", symlinks=True)
    return type(micro_project)(tmp_path / "project")


def set_params(project, **sections) -> None:
    path = project.path / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        params[name] = {**params.get(name, {}), **values}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def raw_records(project) -> list[dict]:
    return [json.loads(line) for line in (project.path / "data/sample/raw.jsonl").read_text().splitlines()]


def write_raw(project, records: list[dict], extra: bytes = b"") -> None:
    text = "".join(json.dumps(record) + "\n" for record in records).encode() + extra
    (project.path / "data/raw/samples.jsonl").write_bytes(text)
    set_params(project, curate={"raw": "data/raw/samples.jsonl"})


def repro_fails_at_curate(project, fragments: list[str], gate: str | None, *targets: str) -> str:
    """`gate`: the one whose data/gates/GATE.json must say it failed (None: curate failed outside a gate)."""
    upstream, downstream = snapshot(project.path, UPSTREAM), snapshot(project.path, DOWNSTREAM)
    output = assert_clean_failure(project.dvc("repro", *targets, check=False), fragments)
    assert "Running stage 'curate'" in output and "Running stage 'quality'" not in output
    assert "Running stage 'register'" not in output
    assert not (project.path / "data/curate/train.jsonl").exists()  # no curated set from bad data
    assert snapshot(project.path, UPSTREAM) == upstream and snapshot(project.path, DOWNSTREAM) == downstream
    if gate:
        assert json.loads((project.path / f"data/gates/{gate}.json").read_text())["success"] is False
    return output


def curate_in_process(project, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """The curate stage's command (`iwsft curate`) as `dvc repro curate` runs it, in this process."""
    from iwsft.cli.main import main

    outs = yaml.safe_load((project.path / "dvc.yaml").read_text())["stages"]["curate"]["outs"]
    for out in map(project.path.joinpath, outs):  # dvc removes a stage's outs before running it
        shutil.rmtree(out) if out.is_dir() else out.unlink(missing_ok=True)
    monkeypatch.chdir(project.path)
    monkeypatch.setenv("CI", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the project's own store, as under dvc
    code = main(["curate"])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(["iwsft", "curate"], code, captured.out, captured.err)


def curate_fails(project, monkeypatch, capsys, fragments: list[str], gate: str | None) -> str:
    """repro_fails_at_curate's checks for an in-process curate (dvc's own stop is checked there)."""
    upstream, downstream = snapshot(project.path, UPSTREAM), snapshot(project.path, DOWNSTREAM)
    output = assert_clean_failure(curate_in_process(project, monkeypatch, capsys), fragments)
    assert not (project.path / "data/curate/train.jsonl").exists()
    assert snapshot(project.path, UPSTREAM) == upstream and snapshot(project.path, DOWNSTREAM) == downstream
    if gate:
        assert json.loads((project.path / f"data/gates/{gate}.json").read_text())["success"] is False
    return output


def test_bad_raw_file_stops_dvc_repro_at_the_raw_gate(project):
    shutil.copy(DATA / "bad" / "raw" / "one_bad_among_many.jsonl", project.path / "data/raw/samples.jsonl")
    set_params(project, curate={"raw": "data/raw/samples.jsonl"})
    output = repro_fails_at_curate(project, ["iwsft curate: error: data gate 'raw' failed", "line 137 (id 'r136')"], "raw")
    assert "Great Expectations loaded" not in output  # the schema failed first: no GX import paid


def test_invalid_raw_records_are_quarantined_within_max_invalid_fraction(project, monkeypatch, capsys):
    bad_line = b'{"id": "oops", "prompt": "1+2=", "completion": "3", "reward": "yes"}\n'
    records = raw_records(project)
    write_raw(project, records, extra=bad_line)
    set_params(project, gates={"max_invalid_fraction": 0.01})
    done = curate_in_process(project, monkeypatch, capsys)
    assert done.returncode == 0, done.stderr[-3000:]
    rejects = [json.loads(line) for line in (project.path / "data/curate/rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 1 and rejects[0]["line"] == len(records) + 1 and rejects[0]["record"]["id"] == "oops"
    assert "field 'reward' must be 0 or 1" in rejects[0]["problems"][0]
    assert json.loads((project.path / "data/curate/report.json").read_text())["rejected"] == 1


def test_curated_set_emptied_by_filters_names_the_rule(project):
    write_raw(project, [{"id": f"long{i}", "prompt": f"{i}+1=", "completion": "1" * 20, "reward": 1} for i in range(5)])
    repro_fails_at_curate(project, LATER["curated_emptied_by_filters"], "curated", "curate")


def test_rewards_that_disagree_with_the_verifier_stop_the_raw_gate(project, monkeypatch, capsys):
    records = raw_records(project)
    assert all("answer" in r and "reward" in r for r in records)  # the demo's samples carry both
    write_raw(project, [{**r, "reward": 1 - r["reward"]} if index % 10 == 0 else r for index, r in enumerate(records)])
    output = curate_fails(project, monkeypatch, capsys, LATER["rewards_disagree_with_the_verifier"], "raw")
    assert f"line 1 (id {records[0]['id']!r}): reward={1 - records[0]['reward']}, verifier_reward={records[0]['reward']}" in output


def test_conversational_records_without_a_chat_template_stop_curate(project, monkeypatch, capsys):
    """Valid conversational records (the raw gate passes them), but the demo's char-level tokenizer has
    no chat template: curate names the first record and stops before counting a token."""
    records = raw_records(project)
    write_raw(project, [{"id": r["id"], "prompt": [{"role": "user", "content": r["prompt"]}],
                         "completion": [{"role": "assistant", "content": r["completion"]}],
                         "answer": r["answer"], "reward": r["reward"]} for r in records])
    output = curate_fails(project, monkeypatch, capsys, LATER["conversational_without_chat_template"], None)
    assert f"line 1 (id {records[0]['id']!r}): field 'prompt' is a message list" in output
    assert json.loads((project.path / "data/gates/raw.json").read_text())["success"] is True  # the format itself is valid


def test_eval_prompt_leaked_into_training_fails_the_curated_gate(project, monkeypatch, capsys):
    held_out = [json.loads(line) for line in (project.path / "data/prepare/eval_prompts.jsonl").read_text().splitlines()][:3]
    leaked = [{"id": f"leak{i}", "prompt": p["prompt"], "completion": p["answer"], "reward": 1} for i, p in enumerate(held_out)]
    write_raw(project, raw_records(project) + leaked)
    set_params(project, curate={"decontaminate": False})
    output = curate_fails(project, monkeypatch, capsys, LATER["eval_prompt_leaked_into_training"], "curated")
    assert f"(id 'leak0'): {held_out[0]['prompt']!r}" in output


def test_decreasing_quality_thresholds_stop_the_reference_stage(project):
    summary_path = project.path / "data/quality/summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "thresholds": [0.75, 0.5, 0.75]}))
    models = snapshot(project.path, ["models", "data/train"])
    assert_clean_failure(project.dvc("repro", "--single-item", "reference", check=False), LATER["quality_thresholds_decrease"])
    assert not (project.path / "data/reference").exists() and snapshot(project.path, ["models", "data/train"]) == models


def test_nan_metric_stops_the_report(project):
    path = project.path / "data/evaluate/sft/metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "pass_at_1": math.nan}))
    evaluated = snapshot(project.path, ["data/evaluate", "models"])
    report = project.path / "reports/report.md"
    before = report.read_bytes()
    assert_clean_failure(project.dvc("repro", "--single-item", "report", check=False), LATER["metrics_nan"])
    assert not report.exists() or report.read_bytes() == before  # not rewritten from bad metrics
    assert snapshot(project.path, ["data/evaluate", "models"]) == evaluated


def test_reference_of_another_model_is_refused_by_the_gate_cli(project, monkeypatch, capsys):
    from iwsft.model.artifacts import load_model
    from iwsft.cli.main import main
    from iwsft.training.reference import hash_model_weights

    path = project.path / "data/reference/fingerprint.json"
    other, _ = load_model(project.path / "models/sft")
    path.write_text(json.dumps({**json.loads(path.read_text()), "model_sha256": hash_model_weights(other)}))
    trained = snapshot(project.path, ["models", "data/train"])
    monkeypatch.chdir(project.path)
    code = main(["gate", "reference"])  # in-process: torch and GX are loaded already
    captured = capsys.readouterr()
    assert code == 1 and "iwsft gate: error: data gate 'reference' failed" in captured.err  # after a progress bar
    assert_clean_failure(subprocess.CompletedProcess([], code, captured.out, captured.err), LATER["reference_other_model"])
    assert json.loads((project.path / "data/gates/reference.json").read_text())["failed"] == ["fingerprint"]
    assert snapshot(project.path, ["models", "data/train"]) == trained


@pytest.mark.parametrize("name, row, change", [
    ("reference_wrong_length", 2, lambda values: values[:-1]),
    ("reference_positive", 4, lambda values: [0.5, *values[1:]]),
    ("reference_nan", 6, lambda values: [math.nan, *values[1:]]),
])
def test_broken_reference_column_fails_the_reference_gate(micro_project, tmp_path, name, row, change):
    """The gate runner on a crafted copy of the stage's output (in-process: one GX import for all)."""
    from iwsft.model.artifacts import load_model
    from iwsft.errors import DataError
    from iwsft.config.schema import check
    from iwsft.data.records import read_records
    from iwsft.gates.reference import reference_input
    from iwsft.gates.runner import run_gate

    root = micro_project.path
    shutil.copytree(root / "data/reference", tmp_path / "reference")
    frame = pd.read_parquet(tmp_path / "reference/train.parquet")
    frame.at[row, "ref_logprobs"] = change(list(frame.at[row, "ref_logprobs"]))
    frame.to_parquet(tmp_path / "reference/train.parquet")
    model, tokenizer = load_model(root / "data/prepare/base_model")
    params = check(yaml.safe_load((root / "params.yaml").read_text()))
    gate = reference_input(params, tmp_path / "reference", model, tokenizer, read_records(root / "data/quality/train.jsonl"))
    with pytest.raises(DataError) as error:
        run_gate(gate, out_dir=tmp_path / "gates")
    for fragment in LATER[name]:
        assert fragment in str(error.value)
