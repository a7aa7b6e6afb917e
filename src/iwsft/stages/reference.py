"""reference: log pi_ref of every completion token of the curated set, once, with a fingerprint
(tokenized data + model weights + tokenizer) that training checks before it trusts the column."""

from __future__ import annotations

import os

from datasets import Dataset

from iwsft.artifacts import load_model
from iwsft.reference import fingerprint, score_reference
from iwsft.schema import read_jsonl, write_json_atomic
from iwsft.sequences import tokenize_dataset
from iwsft.stages import DATA
from iwsft.runtime import quiet

OUT = DATA / "reference"


def run(params: dict) -> None:
    config = params["reference"]
    model, tokenizer = load_model(params["model"]["base"], params["model"]["trust_remote_code"])
    records = read_jsonl(DATA / "quality" / "train.jsonl")
    tokenized = tokenize_dataset(Dataset.from_list(records), tokenizer)
    column = score_reference(model, tokenized, tokenizer.pad_token_id, batch_size=config["batch_size"],
                             chunk_size=config["chunk_size"], show_progress=not quiet())
    scored = Dataset.from_list(records).add_column("ref_logprobs", column)
    OUT.mkdir(parents=True, exist_ok=True)
    staging = OUT / ".train.parquet.tmp"
    scored.to_parquet(str(staging))
    os.replace(staging, OUT / "train.parquet")
    write_json_atomic(OUT / "fingerprint.json", {
        **fingerprint(tokenized, model, tokenizer),
        "examples": len(records),
        "tokens": sum(len(values) for values in column),
    })
