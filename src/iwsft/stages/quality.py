"""quality: a graded score per curated example, the percentile thresholds and each example's
multiplicity (how many thresholds it reaches), for SFT(Q) and iw-SFT(Q)."""

from __future__ import annotations

import math

import numpy as np

from iwsft.quality_sampling import quality_multiplicity, quality_thresholds
from iwsft.schema import DataError, read_jsonl, write_json_atomic, write_jsonl_atomic
from iwsft.stages import DATA

OUT = DATA / "quality"


def quality_scores(records: list[dict], source: str) -> list[float]:
    """difficulty: 1 - pi_ref's success rate on the prompt (a success on a prompt pi_ref rarely
    solves is rarer, so worth more); score: the raw file's own `score` field."""
    if source == "difficulty":
        missing = [r["id"] for r in records if r.get("prompt_pass_rate") is None]
        if missing:
            raise DataError(f"quality.source=difficulty needs rewards for every prompt; none for ids {missing[:3]}")
        return [1.0 - r["prompt_pass_rate"] for r in records]
    if source == "score":
        missing = [r["id"] for r in records if r.get("score") is None or not math.isfinite(r["score"])]
        if missing:
            raise DataError(f"quality.source=score but records {missing[:3]} have no finite `score` field")
        return [float(r["score"]) for r in records]
    raise DataError(f"quality.source must be 'difficulty' or 'score', got {source!r} (params.yaml)")


def run(params: dict) -> None:
    config = params["quality"]
    records = read_jsonl(DATA / "curate" / "train.jsonl")
    scores = quality_scores(records, config["source"])
    multiplicity = quality_multiplicity(scores, config["percentiles"])
    if int((multiplicity > 0).sum()) < config["min_multiplicity_examples"]:
        raise DataError(f"quality: only {int((multiplicity > 0).sum())} examples reach the p{config['percentiles'][0]} threshold")
    for record, score, count in zip(records, scores, multiplicity):
        record["quality"], record["multiplicity"] = float(score), int(count)
    write_jsonl_atomic(OUT / "train.jsonl", records)
    write_json_atomic(OUT / "summary.json", {
        "examples": len(records),
        "percentiles": list(config["percentiles"]),
        "thresholds": quality_thresholds(scores, config["percentiles"]).tolist(),
        "multiplicity_counts": np.bincount(multiplicity, minlength=len(config["percentiles"]) + 1).tolist(),
    })
