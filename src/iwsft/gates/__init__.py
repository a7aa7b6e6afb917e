"""Data-quality gates: one Great Expectations suite per stage boundary, so that bad data stops the
DAG with a message that names the stage, the expectation, the column, the count and examples.

  boundary    what is checked                                  where it runs (dvc.yaml)
  eval        the held-out prompts file (curate.eval_prompts)  start of `curate`, before raw
  raw         the raw samples file (curate.raw)               start of `curate`
  curated     the curated set, before it is written           end of `curate`
  quality     quality scores, multiplicities, thresholds      start of `reference`
  reference   per-token log pi_ref + fingerprint, on disk     end of `reference`, before the files move into place
  evaluation  every model's metrics and sample counts         start of `report`

Each gate writes data/gates/<boundary>.json (the summary: every check, GX or Python, with counts
and examples; deterministic, so that an unchanged gate never re-runs what depends on it) and
data/gates/<boundary>/ (GX's HTML data docs, one page per table). The next stage lists the summary
in its `deps` (ANCHORS.md 2.5: a gate only gates what depends on it).

Why in-stage and not one DVC stage per gate: importing GX costs 2.5-7 s per process (machine
load) while the checks themselves take ~0.2 s a gate. As five extra DVC stages (two of them also
loading torch for token counts and model hashes) the gate processes took 59 s of a 403 s micro DAG
(15 %, busy machine). In-stage, GX is imported 3 times: the micro DAG took 172.8 s against 164.8 s
without gates (+4.9 %; imports 8.8 s, checks and data docs 1.2 s; quiet 2-core machine).
`iwsft gate <boundary>` runs one gate by hand on the files at rest; `iwsft validate <boundary>
[FILE]` does the same and writes nothing.

Modules: `results` (check results, summary, message; no GX), `inputs` (a boundary's files ->
DataFrames with derived columns + the checks plain Python does better), `suites` (the expectations,
declared per boundary), `runner` (GX plumbing, data docs), `pipeline` (where each boundary's files
live and which params.yaml knobs apply).

Other pipelines' gates (iwsft.control.gates) run on the same runner: `register_boundary(boundary,
suite, next_stage)` declares a boundary of theirs; the runner looks a boundary's next stage up with
`next_stage_for` and its suite with `registered_suite` (None: one of iwsft.gates.suites').
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

BOUNDARIES = ("eval", "raw", "curated", "quality", "reference", "evaluation")
GATES_DIR = Path("data") / "gates"
# the stage each boundary's data goes to next (named in messages)
# (eval: curate decontaminates against the prompts first; evaluate reads them through the same checks)
NEXT_STAGE = {"eval": "curate", "raw": "curate", "curated": "quality", "quality": "reference", "reference": "train", "evaluation": "report"}

# boundary -> (suite, next stage) of another pipeline's gates, declared by register_boundary
_REGISTERED: dict[str, tuple[Callable, str]] = {}


def register_boundary(boundary: str, suite: Callable, next_stage: str) -> None:
    """Declare another pipeline's boundary: `suite(settings, lookups) -> {table: [expectations]}` (as in
    iwsft.gates.suites) and the stage its data goes to next (named in messages). Registering the same
    boundary again replaces it (a module imported twice); a language boundary cannot be replaced."""
    if boundary in NEXT_STAGE:
        raise ValueError(f"gate boundary {boundary!r} is the language pipeline's own")
    _REGISTERED[boundary] = (suite, next_stage)


def next_stage_for(boundary: str) -> str:
    return NEXT_STAGE[boundary] if boundary in NEXT_STAGE else _REGISTERED[boundary][1]


def registered_suite(boundary: str) -> Callable | None:
    """The suite another pipeline registered for `boundary`; None for the language pipeline's own."""
    entry = _REGISTERED.get(boundary)
    return entry[0] if entry else None
