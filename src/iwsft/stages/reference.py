"""reference: log pi_ref of every completion token of the curated set, once, with a fingerprint
(tokenized data + model weights + tokenizer + which policy) that training checks before it trusts the column.

pi_ref is `reference.policy`'s model: model.base (default, the paper's LLM practice) or sample.policy,
the model that wrote the data (the theory's pi_ref); either way the tokens are model.base's tokenizer's,
as training sees them. data/reference/summary.json gives the report its figures (column_summary).

Two data gates run here (iwsft.gates): `quality` on this stage's input first, and `reference` on
the written files in a staging folder, which only replaces data/reference if the gate passes.
"""

from __future__ import annotations

from datasets import Dataset

from iwsft.config.schema import Params
from iwsft.encoding.chat import ChatFormat
from iwsft.model.artifacts import atomic_directory, load_model_for, load_tokenizer
from iwsft.gates.quality import quality_input
from iwsft.gates.reference import reference_input
from iwsft.gates.runner import run_gate
from iwsft.errors import UserError
from iwsft.training.reference import (column_summary, fingerprint, reference_policy_path, score_reference_shards,
                                      tokenizer_mismatch)
from iwsft.data.records import read_jsonl
from iwsft.io.durable import write_json_atomic
from iwsft.encoding.sequences import misdecoded, tokenize_dataset
from iwsft.evaluation.sharding import claim_device
from iwsft.stages import DATA
from iwsft.runtime import quiet

OUT = DATA / "reference"


def run(params: Params) -> None:
    config = params.reference
    run_gate(quality_input(params, DATA / "quality" / "train.jsonl", DATA / "curate" / "train.jsonl"))
    policy_model = reference_policy_path(params)
    claim_device()  # the GPU of this process when there are several
    model, tokenizer = load_model_for(params, policy_model)  # the GPU in bf16 when there is one
    if policy_model != params.model.base:  # the sampler scores the tokens training will see: the base's
        base_tokenizer = load_tokenizer(params.model.base, params.model.trust_remote_code)
        mismatch = tokenizer_mismatch(base_tokenizer, tokenizer)
        if mismatch:
            raise UserError(f"params.yaml reference.policy: sampler: sample.policy ({policy_model}) and model.base "
                            f"({params.model.base}) must share the tokenizer, but {mismatch}")
        tokenizer = base_tokenizer
    records = read_jsonl(DATA / "quality" / "train.jsonl")
    misdecoded(tokenizer, records, str(DATA / "quality" / "train.jsonl"))  # sampled ids must be this tokenizer's
    tokenized = tokenize_dataset(Dataset.from_list(records), tokenizer, chat=ChatFormat.from_params(params, tokenizer))
    # launch.num_processes > 1: each process scores whole batches of the one-process run (the same numbers)
    column = score_reference_shards(model, tokenized, tokenizer.pad_token_id, config.batch_size,
                                    chunk_size=config.chunk_size, show_progress=not quiet())
    if column is None:
        return
    scored = Dataset.from_list(records).add_column("ref_logprobs", column)
    with atomic_directory(OUT) as staging:
        scored.to_parquet(str(staging / "train.parquet"))
        write_json_atomic(staging / "fingerprint.json", {
            **fingerprint(tokenized, model, tokenizer),
            "policy": params.reference.policy, "policy_model": policy_model,
            "examples": len(records),
            "tokens": sum(len(values) for values in column),
        })
        write_json_atomic(staging / "summary.json", column_summary(params.reference.policy, policy_model, column))
        run_gate(reference_input(params, staging, model, tokenizer, records, source=str(OUT)))
