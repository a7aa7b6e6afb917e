"""The held-out prompts file (params `curate.eval_prompts`): its schema and the checked reader.

Schema: a JSON Lines file (.jsonl, UTF-8), one object per line:

  id        required  a non-empty string or an integer (kept as its text, as in raw files: one rule for
                      both), unique in the file (messages and reports name prompts by it)
  prompt    required  a non-empty string, or TRL's conversational form: a list of {"role", "content"}
                      messages ending with the user's turn (iwsft.data.conversation.prompt_problem)
  answer    required  a non-empty string, or a finite number: the reference the task's verifier scores
                      completions against (a number reaches the task as its text, 3.0 as "3"; an integer
                      exact at any size, iwsft.data.numbers)
  metadata  optional  a JSON object, passed to the task's scorer (reasoning-gym datasets that need it)

Other fields are ignored (the demo's `stratum`). `prepare` and every task's `prompts()` write this
shape. A bad file stops the pipeline before anything is sampled or scored: `read_eval_prompts`
raises DataError naming file, line, id and field ("eval.jsonl line 3 (id 'e3'): field 'answer' is
missing"), as iwsft.data.records does for raw samples. It is what the `eval` gate (start of curate),
`iwsft validate eval FILE` and the evaluate stage read.

Limits: a file is JSON Lines only (the pipeline and the tasks write it); a Parquet file, shards, a datasets
folder or a hub dataset (AIME's problem/answer) is read as a source with a columns mapping
(iwsft.data.sources, params `sources:`); every bad record fails the file (no max_invalid_fraction: a held-out set with
holes changes pass@1's denominator silently).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from iwsft.data.conversation import describe, prompt_problem, text_problem, without_null_keys
from iwsft.data.numbers import NumberLiteral
from iwsft.errors import DataError
# Shared with the raw samples reader (same package): file checks, line parsing, messages, the
# answer's text form and the metadata check, so that both files read and complain alike.
from iwsft.data.raw_files import check_readable_file, rejection_message
from iwsft.data.records import OPTIONAL_FIELD_CHECKS, Problem, Rejected, answer_text, explicit_id
from iwsft.data.sources import kind, load, mapped, named, spec_of

FIELDS = ("id", "prompt", "answer", "metadata")
_RAW_CHECKS = dict(OPTIONAL_FIELD_CHECKS)


@dataclass(frozen=True)
class EvalPrompts:
    """Valid normalised records (id, prompt, answer as a string, metadata when given) in file order,
    at 1-based `lines`."""

    records: list[dict]
    lines: list[int]
    source: str
    fingerprint: dict = field(default_factory=dict)  # what was read (iwsft.data.sources): commit or file hashes


def _absent(record: dict, name: str) -> str | None:
    value = record.get(name)
    return None if value is not None else ("is null" if name in record else "is missing")


def _id_problem(value: Any) -> str | None:
    if isinstance(value, str) and not isinstance(value, NumberLiteral) and not value.strip():
        return text_problem(value)  # "is empty" / "is only whitespace"
    return _RAW_CHECKS["id"](value)  # a string or an integer, as in raw files


def _answer_problem(value: Any) -> str | None:
    if isinstance(value, str) and not isinstance(value, NumberLiteral):
        return text_problem(value)  # empty or whitespace: no verifier can match it
    return _RAW_CHECKS["answer"](value)  # a finite number, else "must be a string or a number, got ..."


def record_problems(record: Any) -> list[tuple[str | None, str]]:
    """(field, message) for each problem of one eval record on its own."""
    if not isinstance(record, dict):
        return [(None, f"expected a JSON object, got {describe(record)}")]
    checks = (("id", _id_problem), ("prompt", prompt_problem), ("answer", _answer_problem))
    found = [(name, _absent(record, name) or check(record[name])) for name, check in checks]
    if record.get("metadata") is not None:
        found.append(("metadata", _RAW_CHECKS["metadata"](record["metadata"])))
    return [(name, message) for name, message in found if message]


def validate_records(records: Sequence[Any], source: str, lines: Sequence[int] | None = None,
                     unit: str = "line") -> list[Problem]:
    """Every Problem in `records` (at `lines` in `unit`s, default 1..N); a repeated id is one of each later record."""
    lines = list(lines) if lines is not None else list(range(1, len(records) + 1))
    problems: list[Problem] = []
    first_line_of_id: dict[str, int] = {}
    for line, record in zip(lines, records):
        record_id = explicit_id(record)
        problems += [Problem(line, record_id, name, message, source, unit) for name, message in record_problems(record)]
        if record_id is None:
            continue
        if record_id in first_line_of_id:
            problems.append(Problem(line, record_id, "id", f"repeats the id of {unit} {first_line_of_id[record_id]}", source, unit))
        else:
            first_line_of_id[record_id] = line
    return problems


def normalize_record(record: dict) -> dict:
    """A valid record in the pipeline's form: schema fields only, the answer as text."""
    normalized = {"id": explicit_id(record), "prompt": without_null_keys(record["prompt"]),
                  "answer": answer_text(record["answer"])}
    if record.get("metadata") is not None:
        normalized["metadata"] = dict(record["metadata"])
    return normalized


def read_eval_prompts(path: Any) -> EvalPrompts:
    """Read and check a held-out prompts file, or a dataset source (iwsft.data.sources: columns mapped, a
    row without an id named by its index); DataError (file, line, id, field) on any problem."""
    spec = spec_of(path)
    path = Path(spec.path)
    if spec.plain:
        check_readable_file(path)
        if path.suffix.lower() != ".jsonl":
            raise DataError(f"{path}: eval prompts must be a .jsonl file (one JSON object per line), got {path.suffix!r}; "
                            f"a Parquet file or dataset is read as a source (params sources:)")
    loaded = load(spec, checked_columns=False)
    source, unit, rejected = loaded.source, loaded.unit, list(loaded.unparsed)
    entries, origin = (loaded.entries, {}) if spec.plain else mapped(loaded, spec, FIELDS, row_ids=kind(spec.path) != "file")
    total = len(entries) + len(rejected)
    if total == 0:
        raise DataError(f"{source}: no records (the file is empty or only whitespace)")
    by_line: dict[int, list[Problem]] = defaultdict(list)
    for problem in validate_records([value for _, value in entries], source, [line for line, _ in entries], unit):
        by_line[problem.line].append(named(problem, origin, loaded))
    rejected += [Rejected(line, value, tuple(by_line[line])) for line, value in entries if line in by_line]
    if rejected:
        rejected.sort(key=lambda rejection: rejection.line)
        raise DataError(rejection_message(source, rejected, total))
    return EvalPrompts([normalize_record(value) for _, value in entries], [line for line, _ in entries], source,
                       loaded.fingerprint)

