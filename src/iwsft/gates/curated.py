"""The `curated` boundary's input: the curated set, checked at the end of `curate` before it is
written (or, by `iwsft gate curated`, as read back from data/curate/train.jsonl)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from iwsft.data.conversation import completion_content, completion_problem, exact_key, prompt_key_text, prompt_problem
from iwsft.data.decontaminate import decontamination_key
from iwsft.data.records import read_records
from iwsft.gates.results import GateInput
from iwsft.gates.settings import settings

if TYPE_CHECKING:
    from iwsft.config.schema import Params
    from iwsft.encoding.token_counts import TokenLengths

COLUMNS = ["line", "id", "prompt", "completion", "reward", "prompt_tokens", "completion_tokens", "repeat", "prompt_key"]


def _contents(value):
    """A broken message list's non-system contents (so that the text expectations see an empty one);
    any other value as it is."""
    if not isinstance(value, list):
        return value
    return "\n".join(str(m.get("content", "")) for m in value if isinstance(m, dict) and m.get("role") != "system")


def curated_input(records: Sequence[dict], source: str, settings: dict, lengths: TokenLengths,
                  eval_prompts: Sequence) -> GateInput:
    """The curated set (as curate is about to write it, or as read back): token counts with the
    base model's tokenizer (iwsft.encoding.token_counts), a flag for repeated (prompt, completion)
    pairs, and the decontamination key of each prompt (lowercased, whitespace removed, as
    iwsft.data.decontaminate compares them). A conversational record's text columns hold its key
    texts (the non-system contents), so the text expectations read the same for both formats."""
    seen: set = set()
    rows = []
    for line, record in enumerate(records, start=1):
        pair = (record.get("prompt"), record.get("completion"))
        # a field that is neither text nor a valid message list: the text expectations name it
        usable = prompt_problem(pair[0]) is None and completion_problem(pair[1]) is None
        key = (exact_key(pair[0]), exact_key(pair[1])) if usable else None
        rows.append({
            "line": line, "id": record.get("id"),
            "prompt": prompt_key_text(pair[0]) if usable else _contents(pair[0]),
            "completion": completion_content(pair[1]) if usable else _contents(pair[1]),
            "reward": record.get("reward"),
            "prompt_tokens": lengths.prompt(pair[0]) if usable else None,
            "completion_tokens": lengths.completion(pair[1]) if usable else None,
            "repeat": key in seen if usable else False,
            "prompt_key": decontamination_key(pair[0]) if usable else None,
        })
        if usable:
            seen.add(key)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    gate = GateInput("curated", source, {"examples": frame}, {**settings, "eval_prompts": len(eval_prompts)}, [])
    gate.lookups["eval_prompt_keys"] = sorted({decontamination_key(prompt) for prompt in eval_prompts})
    return gate


def curated_from_files(params: Params, path: Path) -> GateInput:
    """The curated set at rest, counted with the base model's tokenizer (no torch: `iwsft gate
    curated` stays light), against the eval prompts of params curate.eval_prompts."""
    from iwsft.data.eval_prompts import read_eval_prompts
    from iwsft.encoding.chat import ChatFormat
    from iwsft.encoding.token_counts import token_counter
    from iwsft.model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(params.model.base, params.model.trust_remote_code)
    eval_prompts = [row["prompt"] for row in read_eval_prompts(params.curate.eval_prompts).records]
    counter = token_counter(tokenizer, ChatFormat.from_params(params, tokenizer))
    return curated_input(read_records(path), str(path), settings("curated", params), counter, eval_prompts)
