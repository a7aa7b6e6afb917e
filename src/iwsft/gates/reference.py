"""The `reference` boundary's input: data/reference (per-token log pi_ref and its fingerprint),
checked at the end of `reference` before the files move into place. The one gate that needs the
model: it tokenizes every example again and recomputes the fingerprint."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from iwsft.gates.results import Check, GateInput
from iwsft.gates.settings import settings

if TYPE_CHECKING:
    from iwsft.config.schema import Params

COLUMNS = ["row", "id", "logprobs", "completion_tokens", "max_logprob", "nonfinite_logprobs"]


def _is_finite(value) -> bool:
    # Parquet may hold a NaN as null (pandas writes it so): both are "not finite" here.
    return isinstance(value, (int, float)) and math.isfinite(value)


def reference_frames(directory: Path, source: str, settings: dict, model, tokenizer,
                     quality_records: Sequence[dict] | None, chat=None) -> GateInput:
    """data/reference: the stored log-probs against an independent tokenization of each example,
    and the stored fingerprint against one recomputed from the quality stage's records (the data
    the column must belong to), the base model and its tokenizer."""
    import pyarrow.parquet as pq

    from iwsft.encoding.sequences import completion_token_count, encode_record
    from iwsft.training.reference import ReferenceMismatchError, check_reference, fingerprint

    try:
        rows = pq.read_table(directory / "train.parquet").to_pylist()
        stored = json.loads((directory / "fingerprint.json").read_text())
    except (OSError, ValueError) as error:  # pyarrow's errors are OSError / ValueError subclasses
        return GateInput("reference", source, {}, settings, [Check("readable", False, description=f"{source}: {error}")])
    encoded = [encode_record(tokenizer, r, chat) for r in rows]
    values = [[v for v in r.get("ref_logprobs") or []] for r in rows]
    frame = pd.DataFrame([
        {"row": index, "id": r.get("id"), "logprobs": len(logprobs), "completion_tokens": completion_token_count(pair["labels"]),
         "max_logprob": max((v for v in logprobs if _is_finite(v)), default=None),
         "nonfinite_logprobs": sum(1 for v in logprobs if not _is_finite(v))}
        for index, (r, pair, logprobs) in enumerate(zip(rows, encoded, values))
    ], columns=COLUMNS)
    # The data part of the fingerprint is recomputed from the records the column must belong to.
    expected_rows = quality_records if quality_records is not None else rows
    expected_pairs = [encode_record(tokenizer, r, chat) for r in expected_rows]
    expected = fingerprint({"input_ids": [p["input_ids"] for p in expected_pairs],
                            "labels": [p["labels"] for p in expected_pairs]}, model, tokenizer,
                           weights_dtype=stored.get("model_dtype"))
    try:
        check_reference(stored, expected, source=f"{source}/fingerprint.json")
        match = Check("fingerprint", True, description="matches the data, the base model and its tokenizer")
    except ReferenceMismatchError as error:
        match = Check("fingerprint", False, description=str(error))
    return GateInput("reference", source, {"examples": frame}, settings, [match], ("row", "id"))


def reference_input(params: Params, directory: Path, model, tokenizer, quality_records=None, source=None) -> GateInput:
    """The reference gate's input with params' chat format; `quality_records`: the rows the
    column must belong to (None: the stored rows themselves)."""
    limits = {**settings("reference", params), "expected_examples": len(quality_records) if quality_records is not None else None}
    from iwsft.encoding.chat import ChatFormat

    return reference_frames(Path(directory), source or str(directory), limits, model, tokenizer, quality_records,
                            chat=ChatFormat.from_params(params, tokenizer))
