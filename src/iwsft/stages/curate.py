"""curate: raw samples -> the curated training set D+ and a report with counts per rule.

Rules (iwsft.curation): normalise, drop empty and over-long ones, keep verified successes,
drop exact and near duplicates, drop prompts that overlap a held-out prompt. A record without a
reward but with an answer is rewarded by the verifier first.
"""

from __future__ import annotations

from iwsft.artifacts import load_tokenizer
from iwsft.curation import curate
from iwsft.demo_task import verify
from iwsft.schema import read_jsonl, read_raw_samples, write_json_atomic, write_jsonl_atomic
from iwsft.stages import DATA

OUT = DATA / "curate"


def run(params: dict) -> None:
    config = params["curate"]
    records = read_raw_samples(config["raw"]).records
    for record in records:
        if record.get("reward") is None and record.get("answer") is not None:
            record["reward"] = verify(record["completion"], record["answer"])
    tokenizer = load_tokenizer(params["model"]["base"], params["model"]["trust_remote_code"])
    eval_prompts = [row["prompt"] for row in read_jsonl(config["eval_prompts"])]
    result = curate(records, eval_prompts, config, lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    write_jsonl_atomic(OUT / "train.jsonl", result.kept)
    write_json_atomic(OUT / "report.json", result.report)
