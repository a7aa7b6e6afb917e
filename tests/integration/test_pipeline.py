"""The whole DAG with the micro profile: real `dvc repro` in a temporary git repository."""

import json

import pytest

from iwsft.sequences import completion_token_count, encode_pair
from iwsft.artifacts import load_model

pytestmark = pytest.mark.integration


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_micro_pipeline_end_to_end(micro_project):
    project, dvc = micro_project.path, micro_project.dvc

    raw = read_jsonl(project / "data/sample/raw.jsonl")
    summary = json.loads((project / "data/sample/summary.json").read_text())
    assert len(raw) == 500 * 4 - summary["empty_completions_dropped"] > 1900
    assert set(raw[0]) >= {"id", "prompt", "completion", "answer", "reward"}
    assert {r["reward"] for r in raw} == {0, 1}

    curated = read_jsonl(project / "data/curate/train.jsonl")
    report = json.loads((project / "data/curate/report.json").read_text())
    assert 0 < len(curated) < len(raw)
    assert all(r["reward"] == 1 for r in curated)
    assert report["input"] == len(raw) and report["kept"] == len(curated)
    eval_prompts = {r["prompt"] for r in read_jsonl(project / "data/prepare/eval_prompts.jsonl")}
    assert not eval_prompts & {r["prompt"] for r in curated}

    quality = read_jsonl(project / "data/quality/train.jsonl")
    assert {r["multiplicity"] for r in quality} <= {0, 1, 2, 3} and max(r["multiplicity"] for r in quality) > 0

    import pandas as pd

    scored = pd.read_parquet(project / "data/reference/train.parquet")
    _, tokenizer = load_model(project / "data/prepare/base_model")
    for row in scored.itertuples():
        labels = encode_pair(tokenizer, row.prompt, row.completion)["labels"]
        assert len(row.ref_logprobs) == completion_token_count(labels)
        assert all(value <= 0 for value in row.ref_logprobs)

    for method in ("sft", "iwsft", "sftq", "iwsftq"):
        assert (project / "models" / method / "model.safetensors").exists()
        log = json.loads((project / "data/train" / method / "train_log.json").read_text())
        assert any("loss" in entry for entry in log)
    iw_log = json.loads((project / "data/train/iwsft/train_log.json").read_text())
    assert any("ess" in entry for entry in iw_log)

    keys = {"pass_at_1", "pass_at_1_ci_low", "pass_at_1_ci_high", "greedy_accuracy", "maj_at_k",
            "c_ref", "j_importance", "sft_bound", "iw_bound"}
    base = json.loads((project / "data/evaluate/base/metrics.json").read_text())
    assert keys <= set(base)
    assert base["pass_at_1"] > 0.08  # pi_ref is right sometimes (DEMO_FEASIBILITY.md micro: .15-.21)
    for method in ("sft", "iwsft"):
        metrics = json.loads((project / "data/evaluate" / method / "metrics.json").read_text())
        assert keys <= set(metrics)
        assert metrics["sft_bound"] <= metrics["j_importance"] + 1e-9  # x >= 1 + log x, sample-wise

    report_md = (project / "reports/report.md").read_text()
    for label in ("| base (π_ref) |", "| SFT |", "| iw-SFT |", "| SFT(Q) |", "| iw-SFT(Q) |"):
        assert label in report_md
    assert (project / "reports/accuracy.png").stat().st_size > 1900

    shown = dvc("metrics", "show")
    assert "pass_at_1" in shown.stdout

    again = dvc("repro")
    assert "didn't change, skipping" in again.stdout
    assert "Running stage" not in again.stdout
