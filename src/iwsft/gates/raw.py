"""The `raw` boundary's input: the raw samples file (params curate.raw), checked at the start of
`curate`; with the task, the file's rewards against the task's verifier."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd

from iwsft.data.raw_files import read_raw_samples
from iwsft.data.records import SCHEMA_FIELDS
from iwsft.encoding.token_counts import completion_ids_problem
from iwsft.errors import DataError
from iwsft.gates.results import Check, GateInput
from iwsft.tasks.rewards import reward_agreement, verifier_rewards


def raw_input(path: str | Path, settings: dict, task=None, tokenizer=None, model: str = "model.base") -> GateInput:
    """The raw samples file: iwsft.data.records's per-record checks first (they name line, id and field);
    the records that pass become the frame for the GX suite. Records set aside under
    max_invalid_fraction travel in `payload` (RawSamples) for the rejects file.

    With a `task` (an iwsft.tasks.Task: the curate stage passes its own), each record that carries
    both `answer` and `reward` is re-scored by the task's verifier (column `verifier_reward`), so a
    verifier that disagrees with the file's rewards (the wrong task, a broken scorer) stops the run
    here, naming records; the summary is in `lookups["reward_agreement"]` for curate's report.

    With a `tokenizer` (model.base's, named `model` in messages), each record's `completion_ids` must be
    its ids and decode to the completion (iwsft.encoding.token_counts.completion_ids_problem): what the
    reference stage would refuse later, refused here, as a problem of the record. Without one, the
    "completion ids" check says they were not checked."""
    check_ids = None if tokenizer is None else partial(completion_ids_problem, tokenizer, model=model)
    try:
        samples = read_raw_samples(path, settings["max_invalid_fraction"], check_ids)
    except DataError as error:
        return GateInput("raw", str(path), {}, settings, [Check("record schema", False, description=str(error))])
    total = len(samples.records) + len(samples.rejected)
    note = (f"{len(samples.rejected)} of {total} records set aside (max_invalid_fraction="
            f"{settings['max_invalid_fraction']})" if samples.rejected else f"all {total} records valid")
    schema = Check("record schema", True, description=note, unexpected=len(samples.rejected), rows=total)
    with_ids = sum("completion_ids" in record for record in samples.records)
    ids = Check("completion ids", True, rows=total, description=(
        "no record has them" if not with_ids and not samples.rejected else
        f"checked against the tokenizer of {model}" if tokenizer is not None else
        f"not checked against a tokenizer ({with_ids} records have them; give a params.yaml whose model.base "
        "is available to check them)"))
    position = "row" if samples.unit != "line" else "line"
    frame = pd.DataFrame(samples.records, columns=list(SCHEMA_FIELDS))
    frame.insert(0, position, samples.lines)
    settings = {**settings, "verifier": getattr(task, "name", None) if task is not None else None}
    gate = GateInput("raw", samples.source, {"records": frame}, settings, [schema, ids], (position, "id"), samples)
    if task is not None:
        rescored = verifier_rewards(samples.records, task)
        frame["verifier_reward"] = pd.Series(rescored, index=frame.index, dtype=object)  # None: not checked
        gate.lookups["reward_agreement"] = reward_agreement(samples.records, rescored)
    return gate
