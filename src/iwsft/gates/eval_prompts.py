"""The `eval` boundary's input: the held-out prompts file (params curate.eval_prompts), checked at
the start of `curate` (decontamination compares against it) and read again by evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from iwsft.data.eval_prompts import read_eval_prompts
from iwsft.errors import DataError
from iwsft.gates.results import Check, GateInput


def eval_input(path: str | Path, settings: dict) -> GateInput:
    """The held-out prompts file: iwsft.data.eval_prompts' per-record checks first (they name line, id
    and field), then the frame of valid prompts for the GX suite. A message-list prompt is shown as
    its JSON text (a frame cell of lists would not render in data docs). `payload` is the
    EvalPrompts, so curate goes on with the records it checked."""
    try:
        prompts = read_eval_prompts(path)
    except DataError as error:
        return GateInput("eval", str(path), {}, settings, [Check("record schema", False, description=str(error))])
    count = len(prompts.records)
    schema = Check("record schema", True, description=f"all {count} prompts valid", rows=count)
    frame = pd.DataFrame([
        {"line": line, "id": r["id"], "prompt": r["prompt"] if isinstance(r["prompt"], str) else json.dumps(r["prompt"]),
         "conversational": not isinstance(r["prompt"], str), "answer": r["answer"], "metadata": "metadata" in r}
        for line, r in zip(prompts.lines, prompts.records)
    ], columns=["line", "id", "prompt", "conversational", "answer", "metadata"])
    return GateInput("eval", prompts.source, {"prompts": frame}, settings, [schema], ("line", "id"), prompts)
