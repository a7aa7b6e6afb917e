"""The quality stage's graded_difficulty: -log p(x), p(x) = pi_ref's probability of the distinct
successes seen on prompt x (sum of exp(ref_logprob)), against values computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from iwsft.config.loading import merge
from iwsft.config.schema import check
from iwsft.errors import DataError
from iwsft.stages import quality

BASE = yaml.safe_load((Path(__file__).resolve().parents[3] / "params.yaml").read_text())


def rec(id, prompt, p, reward=1, ids=None, completion="c"):
    record = {"id": id, "prompt": prompt, "completion": completion, "reward": reward, "prompt_pass_rate": 0.5}
    if ids is not None:
        record["completion_ids"] = ids
    if p is not None:
        record["ref_logprob"] = math.log(p) if p > 0 else -math.inf
    return record


RECORDS = [
    rec("a0", "1+2=", 0.5, ids=[1, 2]),
    rec("a1", "1+2=", 0.5, ids=[1, 2]),           # the same success drawn again: counted once
    rec("a2", "1+2=", 0.25, ids=[3, 2]),          # a second, distinct success
    rec("a3", "1+2=", 0.2, reward=0, ids=[4, 2]),  # a failure: not part of p(x)
    rec("b0", "5-7=", 0.1, ids=[9, 2]),
    rec("c0", "3+3=", 1.0, ids=[6, 2]),           # p sums past 1 (inconsistent input): clipped
    rec("c1", "3+3=", 0.6, ids=[6, 6, 2]),
    rec("d0", "2+2=", 0.3, completion="4"),       # no completion_ids: distinct by text
    rec("d1", "2+2=", 0.3, completion="4"),
    rec("d2", "2+2=", 0.2, completion=" 4"),
    rec("e0", "9-9=", None, reward=0, ids=[0, 2]),  # only a failure, no log-prob needed
]


def test_success_probability_sums_distinct_successes():
    log_p = quality.success_log_probabilities(RECORDS)
    assert {k: math.exp(v) for k, v in log_p.items()} == pytest.approx({"1+2=": 0.75, "5-7=": 0.1, "3+3=": 1.0, "2+2=": 0.5})
    scores = dict(zip([r["id"] for r in RECORDS], quality.quality_scores(RECORDS, "graded_difficulty")))
    a, b, d = -math.log(0.75), -math.log(0.1), -math.log(0.5)  # 0.2877, 2.3026, 0.6931 nats
    assert scores == pytest.approx({"a0": a, "a1": a, "a2": a, "a3": a, "b0": b, "c0": 0.0, "c1": 0.0,
                                    "d0": d, "d1": d, "d2": d, "e0": b + 1})  # e: unsolved, above the hardest solved
    # the count-based difficulty of the same records: one value for all (prompt_pass_rate 0.5)
    assert set(quality.quality_scores(RECORDS, "difficulty")) == {0.5}


def test_a_tiny_success_probability_keeps_its_rank():
    """1 - p rounds to exactly 1.0 below p = 1e-16; -log p keeps 40 and 60 nats apart."""
    records = [rec("long", "1=", None, ids=[1]), rec("longer", "2=", None, ids=[2])]
    records[0]["ref_logprob"], records[1]["ref_logprob"] = -40.0, -60.0
    assert 1 - math.exp(-40.0) == 1 - math.exp(-60.0) == 1.0
    assert quality.quality_scores(records, "graded_difficulty") == pytest.approx([40.0, 60.0])


def test_a_success_without_ref_logprob_names_file_ids_field_and_the_other_sources():
    records = RECORDS + [rec("own-1", "7+1=", None), rec("own-2", "7+1=", None, completion="8")]
    with pytest.raises(DataError) as error:
        quality.quality_scores(records, "graded_difficulty", "data/curate/train.jsonl (curated from data/raw/mine.jsonl)")
    message = str(error.value)
    for fragment in ("data/curate/train.jsonl (curated from data/raw/mine.jsonl)", "'ref_logprob'", "2 of 13 records",
                     "'own-1', 'own-2'", "iwsft sample", "quality.source to difficulty", "or score"):
        assert fragment in message, (fragment, message)


def test_an_unknown_source_lists_the_known_ones():
    with pytest.raises(DataError, match="graded_difficulty, difficulty, likelihood, score, got 'rank'"):
        quality.quality_scores(RECORDS, "rank")


def test_the_stage_separates_the_thresholds_the_count_merges(tmp_path, monkeypatch):
    """Twenty prompts, each solved half the time (prompt_pass_rate 0.5) by one success of probability
    0.02, 0.06, ..., 0.78: the success rate gives one threshold; graded_difficulty gives three."""
    monkeypatch.chdir(tmp_path)
    records = [rec(f"p{i}", f"{i}+0=", 0.02 + 0.04 * i, ids=[i, 2]) for i in range(20)]
    (tmp_path / "data/curate").mkdir(parents=True)
    (tmp_path / "data/curate/train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    overrides = {"quality": {"source": "graded_difficulty", "percentiles": [90, 95, 98], "min_multiplicity_examples": 1},
                 "curate": {"raw": "data/sample/raw.jsonl"}}
    params = check(merge(BASE, overrides))
    quality.run(params)
    summary = json.loads((tmp_path / "data/quality/summary.json").read_text())
    # scores -log p; numpy's linear rule at ranks 17.1, 18.05, 18.62 of 0..19 (the top three: p = .10, .06, .02)
    s17, s18, s19 = -math.log(0.10), -math.log(0.06), -math.log(0.02)
    assert summary["thresholds"] == pytest.approx([s17 + 0.1 * (s18 - s17), s18 + 0.05 * (s19 - s18), s18 + 0.62 * (s19 - s18)])
    assert summary["multiplicity_counts"] == [18, 1, 0, 1]  # p = .06 passes p90 only, p = .02 all three
    written = {r["id"]: r for r in map(json.loads, (tmp_path / "data/quality/train.jsonl").read_text().splitlines())}
    assert written["p0"]["quality"] == pytest.approx(-math.log(0.02)) and written["p0"]["ref_logprob"] == records[0]["ref_logprob"]
    quality.run(check(merge(BASE, {**overrides, "quality": {**overrides["quality"], "source": "difficulty"}})))
    assert json.loads((tmp_path / "data/quality/summary.json").read_text())["thresholds"] == [0.5, 0.5, 0.5]
    (tmp_path / "data/curate/train.jsonl").write_text(json.dumps({**records[0], "ref_logprob": None}) + "\n")
    with pytest.raises(DataError, match=r"data/curate/train.jsonl \(curated from data/sample/raw.jsonl\).*'p0'"):
        quality.run(params)
