"""`sources` stage (dvc.yaml, one per params `sources.NAME`): a dataset -> data/sources/NAME.jsonl in iwsft's fields.

Reads the source (a hub dataset from the local HF cache, a save_to_disk folder, shards, a file:
iwsft.data.sources), maps its columns and template, checks the records with the reader of the input that
names the file (curate.raw: raw samples; curate.eval_prompts / sample.prompts: prompts), so that a bad row is
named by the dataset, its row index and its column, and writes them, with data/sources/NAME.json: the
fingerprint (hub commit hash, or the files' sha256), the row count and what was set aside.

Why a stage of its own: DVC depends on paths, and a hub dataset is none; the stage is always_changed (cheap:
it rereads the cache), and DVC compares what it writes, so curate, sample and evaluate rerun exactly when the
records changed, a new revision with new rows included, and never for a revision that changed nothing they
read. Local files keep their plain path in curate.raw and the rest, as before.
"""

from __future__ import annotations

import sys
from pathlib import Path

from iwsft.config.schema import Params
from iwsft.data.eval_prompts import read_eval_prompts
from iwsft.data.raw_files import read_raw_samples
from iwsft.data.source_paths import SOURCES_DIR, materialised
from iwsft.data.sources import load, mapped, spec_of
from iwsft.errors import UserError
from iwsft.io.durable import write_json_atomic, write_jsonl_atomic

RAW, PROMPTS = "raw samples", "prompts"


def role(params: Params, name: str) -> str | None:
    """Which reader checks this source: the one of the input setting that names its file (None: none does)."""
    path = materialised(name)
    if params.curate.raw == path:
        return RAW
    return PROMPTS if path in (params.curate.eval_prompts, params.sample.prompts) else None


def run(params: Params, name: str) -> None:
    if name not in params.sources:
        raise UserError(f"sources: no dataset named {name!r} (declared: {', '.join(params.sources) or 'none'})")
    spec = spec_of(params.sources[name])
    kind = role(params, name)
    set_aside = []
    if kind == RAW:
        samples = read_raw_samples(spec, params.gates.max_invalid_fraction)
        records, source, fingerprint, set_aside = samples.records, samples.source, samples.fingerprint, samples.rejected
    elif kind == PROMPTS:
        prompts = read_eval_prompts(spec)
        records, source, fingerprint = prompts.records, prompts.source, prompts.fingerprint
    else:  # named by no input yet: mapped, not checked (the reader of the file that names it later checks it)
        loaded = load(spec)
        records, source, fingerprint = [record for _, record in mapped(loaded, spec)[0]], loaded.source, loaded.fingerprint
    write_jsonl_atomic(materialised(name), records)
    summary = {"source": source, "read_as": kind, "records": len(records), "set_aside": len(set_aside),
               "problems": [str(problem) for rejection in set_aside[:20] for problem in rejection.problems],
               "fingerprint": fingerprint}
    write_json_atomic(Path(SOURCES_DIR) / f"{name}.json", summary)
    print(f"iwsft sources: {name}: {len(records)} records from {source}"
          + (f" ({len(set_aside)} set aside)" if set_aside else ""), file=sys.stderr)
