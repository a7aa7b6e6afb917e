"""reference: log pi_ref of every completion token of the curated set, once, with a fingerprint
(tokenized data + model weights + tokenizer) that training checks before it trusts the column.

Two data gates run here (iwsft.gates): `quality` on this stage's input first, and `reference` on
the written files in a staging folder, which only replaces data/reference if the gate passes.
"""

from __future__ import annotations

from datasets import Dataset

from iwsft.config.schema import Params
from iwsft.encoding.chat import ChatFormat
from iwsft.model.artifacts import atomic_directory, load_model_for
from iwsft.gates.quality import quality_input
from iwsft.gates.reference import reference_input
from iwsft.gates.runner import run_gate
from iwsft.training.reference import fingerprint, score_reference
from iwsft.data.records import read_jsonl
from iwsft.io.durable import write_json_atomic
from iwsft.encoding.sequences import misdecoded, tokenize_dataset
from iwsft.stages import DATA
from iwsft.runtime import quiet

OUT = DATA / "reference"


def run(params: Params) -> None:
    config = params.reference
    run_gate(quality_input(params, DATA / "quality" / "train.jsonl", DATA / "curate" / "train.jsonl"))
    model, tokenizer = load_model_for(params, params.model.base)  # the GPU in bf16 when there is one
    records = read_jsonl(DATA / "quality" / "train.jsonl")
    misdecoded(tokenizer, records, str(DATA / "quality" / "train.jsonl"))  # sampled ids must be this tokenizer's
    tokenized = tokenize_dataset(Dataset.from_list(records), tokenizer, chat=ChatFormat.from_params(params, tokenizer))
    column = score_reference(model, tokenized, tokenizer.pad_token_id, batch_size=config.batch_size,
                             chunk_size=config.chunk_size, show_progress=not quiet())
    scored = Dataset.from_list(records).add_column("ref_logprobs", column)
    with atomic_directory(OUT) as staging:
        scored.to_parquet(str(staging / "train.parquet"))
        write_json_atomic(staging / "fingerprint.json", {
            **fingerprint(tokenized, model, tokenizer),
            "examples": len(records),
            "tokens": sum(len(values) for values in column),
        })
        run_gate(reference_input(params, staging, model, tokenizer, records, source=str(OUT)))
