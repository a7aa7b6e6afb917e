"""Quality on data that is all successes (a teacher's): the `likelihood` source, and the stage saying when its
score is constant or its thresholds coincide (difficulty on such data: 0 / 0 / 0, multiplicity 3 for all)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from iwsft.config.loading import merge
from iwsft.config.schema import check
from iwsft.data.quality import coinciding_groups, degenerate_scores
from iwsft.errors import DataError
from iwsft.gates.quality import distinct_bins
from iwsft.stages import quality

BASE = yaml.safe_load((Path(__file__).resolve().parents[3] / "params.yaml").read_text())


def teacher(i: int, logprob: float | None, ids=(5, 6), finished=True) -> dict:
    record = {"id": f"t{i}", "prompt": f"{i}+1=", "completion": "x", "reward": 1, "prompt_pass_rate": 1.0,
              "finished": finished}
    if ids is not None:
        record["completion_ids"] = list(ids)
    if logprob is not None:
        record["ref_logprob"] = logprob
    return record


def test_likelihood_is_minus_the_mean_log_prob_per_scored_token():
    """ref_logprob covers completion_ids plus the stop token (not when finished is false): -6 over 2 + 1
    tokens is 2 nats per token; cut off, -6 over its 2 tokens is 3; -1.5 over 0 + 1 (just the stop) is 1.5."""
    records = [teacher(0, -6.0), teacher(1, -6.0, finished=False), teacher(2, -1.5, ids=())]
    assert quality.quality_scores(records, "likelihood") == pytest.approx([2.0, 3.0, 1.5])
    assert quality.per_token_logprobs(records) == pytest.approx([-2.0, -3.0, -1.5])


@pytest.mark.parametrize("broken, field", [(dict(ref_logprob=None), "'ref_logprob'"),
                                           (dict(ref_logprob=float("-inf")), "'ref_logprob'"),
                                           (dict(completion_ids=None), "'completion_ids'"),
                                           (dict(completion_ids=[], finished=False), "'completion_ids'")])
def test_a_record_without_what_likelihood_needs_names_file_ids_field_and_the_other_source(broken, field):
    records = [teacher(0, -2.0)] + [{**teacher(i, -3.0), **broken} for i in (1, 2)]
    with pytest.raises(DataError) as error:
        quality.quality_scores(records, "likelihood", "data/curate/train.jsonl (curated from data/raw/mine.jsonl)")
    message = str(error.value)
    for fragment in ("data/curate/train.jsonl (curated from data/raw/mine.jsonl)", "quality.source=likelihood",
                     f"2 lack {field} (ids 't1', 't2')", "of 3 records", "quality.source to score"):
        assert fragment in message, (fragment, message)


def test_degenerate_scores_by_hand():
    assert coinciding_groups([0.0, 0.0, 0.0]) == [[0, 1, 2]]
    assert coinciding_groups([0.1, 0.5, 0.5]) == [[1, 2]] and coinciding_groups([1, 2, 3]) == []
    assert degenerate_scores([0.0] * 5, [90, 95, 98], [0.0, 0.0, 0.0]) == {
        "constant_score": True, "coinciding_thresholds": [[90, 95, 98]]}
    assert degenerate_scores([0, 1, 1, 1], [90, 95, 98], [1.0, 1.0, 1.0])["constant_score"] is False
    assert degenerate_scores([1, 2, 3], [50, 90], [2.0, 2.8]) == {"constant_score": False, "coinciding_thresholds": []}


def run_stage(tmp_path, monkeypatch, records, source, methods=None):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/curate").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data/curate/train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    overrides = {"quality": {"source": source, "percentiles": [90, 95, 98]}, "curate": {"raw": "data/raw/teacher.jsonl"}}
    if methods:
        overrides["methods"] = methods
    quality.run(check(merge(BASE, overrides)))
    return json.loads((tmp_path / "data/quality/summary.json").read_text())


def test_difficulty_on_teacher_data_is_reported_not_silent(tmp_path, monkeypatch, capsys):
    """Every record a success: difficulty is 0 for all, thresholds 0 / 0 / 0, multiplicity 3 for every
    example. The stage says so in one line and in summary.json, whatever the methods; likelihood ranks them."""
    records = [teacher(i, -1.0 * (i + 1) * 3, ids=(5, 6)) for i in range(20)]  # -1, -2, ... nats per token
    summary = run_stage(tmp_path, monkeypatch, records, "difficulty", methods=["sft", "iwsft"])
    assert summary["thresholds"] == [0.0, 0.0, 0.0] and summary["multiplicity_counts"] == [0, 0, 0, 20]
    assert summary["constant_score"] is True and summary["coinciding_thresholds"] == [[90, 95, 98]]
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("quality: warning:")]
    assert len(lines) == 1 and lines[0] == "quality: warning: " + summary["warning"]
    for fragment in ("every example has the same quality score (0)", "quality.source=difficulty", "quality.source: likelihood"):
        assert fragment in summary["warning"], fragment

    summary = run_stage(tmp_path, monkeypatch, records, "likelihood")
    assert summary["constant_score"] is False and summary["coinciding_thresholds"] == [] and summary["warning"] is None
    assert summary["multiplicity_counts"] == [18, 1, 0, 1]  # the least likely solution per token reaches all three
    assert "warning" not in capsys.readouterr().err
    written = [json.loads(line) for line in (tmp_path / "data/quality/train.jsonl").read_text().splitlines()]
    assert written[19]["quality"] == pytest.approx(20.0) and written[19]["multiplicity"] == 3


def test_with_a_q_method_the_gate_fails_on_the_same_thresholds_and_names_likelihood():
    """The stage warns; the quality gate (run first by reference) fails while a (Q) method is in methods."""
    settings = {"quality_methods": ["sftq", "iwsftq"], "source": "difficulty"}
    (found,) = distinct_bins([90, 95, 98], [0.0, 0.0, 0.0], settings)
    assert not found.success
    for fragment in ("p90 = p95 = p98 = 0", "takes 2 values, not 4", "likelihood", "remove sftq, iwsftq from methods"):
        assert fragment in found.description, fragment
    assert distinct_bins([90, 95, 98], [0.0, 0.0, 0.0], {"quality_methods": [], "source": "difficulty"}) == []
