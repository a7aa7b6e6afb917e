"""The raw samples schema (DESIGN.md "Raw sample schema"): per-record checks and normalisation, and
reading the pipeline's own JSONL files (they are written by iwsft.io.durable).

Features:
- `validate_records`: the record checks (required text fields, optional fields' types, unique ids),
  every problem named by position, id and field; `normalize_record` fills in what a valid record
  may leave out. Reading a user's file through them: iwsft.data.raw_files.read_raw_samples.
- `read_jsonl` / `read_records`: our own intermediates (trusted, no schema checks).

Decisions: an integer id is accepted as its string (Parquet id columns are often int64), at any size;
an answer is text: a number reaches the verifier as its digits, exact at any size (a literal too long for
Python's int, iwsft.data.numbers, stays the file's text), and an integral float answer loses its ".0"
(usually a pandas artefact; verifiers compare "3"). `reward` is 0 or 1, never `true`/`false` (a boolean
column is more often a "finished" or "passed" flag put in the wrong field: the message says to write 1 or
0). score and ref_logprob must fit a float; a token id is below 2**31 (no vocabulary is larger, and
torch's embedding lookup needs it), and below the tokenizer's size when one is given
(iwsft.encoding.token_counts.completion_ids_problem).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from iwsft.data.conversation import completion_problem, describe, prompt_problem, record_kind_problem  # noqa: F401  (re-exported)
from iwsft.data.conversation import unsafe_text_problem as _unsafe_text_problem
from iwsft.data.conversation import without_null_keys
from iwsft.data.numbers import NumberLiteral, float_problem, has_text_form, is_number
from iwsft.errors import DataError, UserError  # noqa: F401  (DataError re-exported)

REQUIRED_TEXT_FIELDS = ("prompt", "completion")
SCHEMA_FIELDS = ("id", "prompt", "completion", "answer", "reward", "score", "completion_ids", "finished", "metadata",
                 "ref_logprob")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one record; `line` is a JSONL line or a Parquet row index, as `unit` says."""

    line: int | None
    record_id: str | None
    field: str | None
    message: str
    source: str = ""
    unit: str = "line"

    def __str__(self) -> str:
        line = f" {self.unit} {self.line}" if self.line is not None else ""
        record_id = f" (id {self.record_id!r})" if self.record_id is not None else ""
        what = f"field {self.field!r} {self.message}" if self.field else self.message
        return f"{self.source}{line}{record_id}: {what}".lstrip()


@dataclass(frozen=True)
class Rejected:
    """A record set aside: its position, what was read (object, or the line's text) and its problems."""

    line: int
    raw: Any
    problems: tuple[Problem, ...]


# the largest token id + 1 any tokenizer may have (int32 embedding indexes)
TOKEN_ID_LIMIT = 2**31


def _is_integer_literal(value: Any) -> bool:
    return isinstance(value, NumberLiteral) and value.lstrip("-").isdigit()


def _required_text_problem(record: dict, name: str) -> str | None:
    value = record.get(name)
    if value is None:
        return "is null" if name in record else "is missing"
    return (prompt_problem if name == "prompt" else completion_problem)(value)


def _id_problem(value: Any) -> str | None:
    if _is_integer_literal(value):
        return None  # an integer id too long for Python's int: its digits are the id
    if isinstance(value, str) and not isinstance(value, NumberLiteral):
        return "is empty" if not value.strip() else _unsafe_text_problem(value)
    if is_number(value) and isinstance(value, int):
        return None if has_text_form(value) else f"is an integer too long to write as text, got {describe(value)}"
    return f"must be a non-empty string or an integer, got {describe(value)}"


def _answer_problem(value: Any) -> str | None:
    if isinstance(value, NumberLiteral):  # before str: a number the file wrote, kept as its text
        return None if _is_integer_literal(value) else f"must be a finite number, got {describe(value)} (beyond a float's range)"
    if isinstance(value, str):
        return _unsafe_text_problem(value)
    if not is_number(value):
        return f"must be a string or a number, got {describe(value)}"
    if isinstance(value, int):
        return None if has_text_form(value) else f"is an integer too long to write as text, got {describe(value)}"
    return float_problem(value)


def _reward_problem(value: Any) -> str | None:
    if isinstance(value, bool):
        return f"must be 0 or 1, got {describe(value)}: write 1 or 0"
    # 1.0 is accepted (float columns); NaN fails `in (0, 1)` as it equals nothing.
    return None if is_number(value) and value in (0, 1) else f"must be 0 or 1, got {describe(value)}"


def _score_problem(value: Any) -> str | None:
    return float_problem(value)


def _ref_logprob_problem(value: Any) -> str | None:
    # log pi_ref(completion | prompt), summed over completion_ids (`iwsft sample` writes it): a log-probability
    problem = float_problem(value, "a finite number (a log-probability)")
    if problem:
        return problem
    return None if value <= 0 else f"must be <= 0 (a log-probability), got {describe(value)}"


def _token_id_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"must hold non-negative integer token ids, got {describe(value)}"
    return None if value < TOKEN_ID_LIMIT else f"must hold token ids below 2**31, got {describe(value)}"


def _token_ids_problem(value: Any) -> str | None:
    # the tokens pi_ref sampled (`iwsft sample` writes them): what reference and train then use
    if not isinstance(value, list) or not value:
        return f"must be a non-empty list of token ids, got {describe(value)}"
    return next(filter(None, map(_token_id_problem, value)), None)


def _finished_problem(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {describe(value)}"


def _metadata_problem(value: Any) -> str | None:
    return None if isinstance(value, dict) else f"must be an object (a task's per-item data), got {describe(value)}"


OPTIONAL_FIELD_CHECKS = (("id", _id_problem), ("answer", _answer_problem), ("reward", _reward_problem), ("score", _score_problem),
                         ("completion_ids", _token_ids_problem), ("finished", _finished_problem),
                         ("metadata", _metadata_problem), ("ref_logprob", _ref_logprob_problem))


def record_problems(record: Any) -> list[tuple[str | None, str]]:
    """(field, message) for each problem of one record on its own; a null optional field is absent."""
    if not isinstance(record, dict):
        return [(None, f"expected a JSON object, got {describe(record)}")]
    found = [(name, _required_text_problem(record, name)) for name in REQUIRED_TEXT_FIELDS]
    if not any(message for _, message in found):
        found.append(("completion", record_kind_problem(record)))
    found += [(name, check(record[name])) for name, check in OPTIONAL_FIELD_CHECKS if record.get(name) is not None]
    return [(name, message) for name, message in found if message]


def explicit_id(record: Any) -> str | None:
    """The record's own id as a string, when it has a usable one."""
    value = record.get("id") if isinstance(record, dict) else None
    if _is_integer_literal(value):
        return str(value)
    if isinstance(value, str) and not isinstance(value, NumberLiteral):
        return value if value.strip() else None
    return str(value) if is_number(value) and isinstance(value, int) and has_text_form(value) else None


def validate_records(records: Sequence[Any], source: str, lines: Sequence[int] | None = None, unit: str = "line") -> list[Problem]:
    """Every Problem in `records` (at positions `lines`, default 1..N); a repeated id is one of each later record."""
    lines = list(lines) if lines is not None else list(range(1, len(records) + 1))
    problems: list[Problem] = []
    first_line_of_id: dict[str, int] = {}
    for line, record in zip(lines, records):
        record_id = explicit_id(record)
        problems += [Problem(line, record_id, name, message, source, unit) for name, message in record_problems(record)]
        # Derived ids include the line, so only explicit ids can collide.
        if record_id is None:
            continue
        if record_id in first_line_of_id:
            message = f"repeats the id of {unit} {first_line_of_id[record_id]}"
            problems.append(Problem(line, record_id, "id", message, source, unit))
        else:
            first_line_of_id[record_id] = line
    return problems


def derive_id(prompt: str, completion: str, line: int) -> str:
    """A stable id for a record without one. The line is part of the hash so that repeated
    (prompt, completion) pairs get distinct ids: repeats are curation's business, not an error."""
    digest = hashlib.sha256(f"{line}\x00{prompt}\x00{completion}".encode("utf-8")).hexdigest()
    return f"sha-{digest[:16]}"


# floats are integers exactly up to here; past it int(1e30) would print digits nobody wrote (...19884624838656)
EXACT_FLOAT_INTEGERS = 2**53


def answer_text(answer: str | int | float) -> str:
    """A valid answer as the text verifiers compare: a NumberLiteral's own digits, an int's exact digits,
    an integral float without its ".0" (up to 2**53; a larger one as Python writes it: 1e+30)."""
    if isinstance(answer, float) and answer.is_integer() and abs(answer) <= EXACT_FLOAT_INTEGERS:
        return str(int(answer))
    return str(answer)


def normalize_record(record: dict, line: int) -> dict:
    """A valid record in the pipeline's form: schema fields only, absent ones left out."""
    prompt, completion = record["prompt"], record["completion"]
    normalized = {"id": explicit_id(record) or derive_id(prompt, completion, line), "prompt": without_null_keys(prompt),
                  "completion": without_null_keys(completion)}
    converters = {"answer": answer_text, "reward": int, "score": float, "completion_ids": list, "finished": bool,
                  "metadata": dict, "ref_logprob": float}
    normalized.update({name: convert(record[name]) for name, convert in converters.items() if record.get(name) is not None})
    return normalized


def read_jsonl(path: str | Path) -> list[dict]:
    """Our own intermediate files (trusted: no schema checks; a bad line means a crash or a hand edit)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes it first (dvc repro)")
    records = []
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            records += [json.loads(line)] if line.strip() else []
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            raise DataError(f"{path} line {number}: not valid JSON ({error}); rerun the stage that writes it") from None
    return records


def read_records(path: str | Path) -> list[dict]:
    """A pipeline intermediate as a list of objects; a line that is not an object is a UserError."""
    records = read_jsonl(path)
    bad = [index for index, record in enumerate(records, start=1) if not isinstance(record, dict)]
    if bad:
        raise UserError(f"{path}: record {bad[0]} is not a JSON object; rerun the stage that writes it")
    return records


def count_lines(path: Path) -> int | None:
    """The non-blank lines of a JSONL file (None: no such file): a record count without parsing."""
    return sum(1 for line in path.read_bytes().split(b"\n") if line.strip()) if path.is_file() else None
