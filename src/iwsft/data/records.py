"""The raw samples schema (DESIGN.md "Raw sample schema") and the pipeline's JSON / JSONL I/O.

Features:
- `read_raw_samples(path)` checks every record of a user's .jsonl or .parquet file and returns
  `RawSamples`: valid records normalised (id filled in, reward int, score float, answer str, null
  optional fields left out) and the rejected ones. All problems are collected, the first 20 shown;
  any bad record fails the file unless `max_invalid_fraction` allows setting some aside.
- `validate_records`: the record checks alone, for a Great Expectations gate or a quarantine mode.
- `write_jsonl_atomic` / `write_json_atomic`: synced temp sibling + os.replace + synced directory
  (iwsft.io.durable), so a crash never leaves half a file for DVC to cache.
- `read_jsonl`: our own intermediates (trusted, no schema checks).

Decisions and limits: the whole file is read into memory; fields outside the schema are dropped;
an integer id is accepted as its string (Parquet id columns are often int64); an integral float
answer loses its ".0" (usually a pandas artefact; verifiers compare "3"). Positions are 1-based
JSONL line numbers (as editors show) or 0-based Parquet row indexes (as df.iloc).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence
from iwsft.data.conversation import completion_problem, describe, prompt_problem, record_kind_problem  # noqa: F401  (re-exported)
from iwsft.data.conversation import unsafe_text_problem as _unsafe_text_problem
from iwsft.io.durable import atomic_file
from iwsft.errors import DataError  # noqa: F401  (re-exported)

REQUIRED_TEXT_FIELDS = ("prompt", "completion")
SCHEMA_FIELDS = ("id", "prompt", "completion", "answer", "reward", "score", "completion_ids", "finished", "metadata",
                 "ref_logprob")
SUPPORTED_EXTENSIONS = (".jsonl", ".parquet")
MAX_PROBLEMS_SHOWN = 20
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


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


@dataclass(frozen=True)
class RawSamples:
    """Valid normalised records in file order (at `lines`, in `unit`s), and the rejected ones
    (only if max_invalid_fraction > 0)."""

    records: list[dict]
    rejected: list[Rejected]
    source: str
    lines: list[int] = field(default_factory=list)
    unit: str = "line"


def _is_number(value: Any) -> bool:
    # bool is an int in Python but `true` is not a number in the schema.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _required_text_problem(record: dict, name: str) -> str | None:
    value = record.get(name)
    if value is None:
        return "is null" if name in record else "is missing"
    return (prompt_problem if name == "prompt" else completion_problem)(value)


def _id_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return "is empty" if not value.strip() else _unsafe_text_problem(value)
    return None if _is_number(value) and isinstance(value, int) else f"must be a non-empty string, got {describe(value)}"


def _answer_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return _unsafe_text_problem(value)
    if not _is_number(value):
        return f"must be a string or a number, got {describe(value)}"
    return None if math.isfinite(value) else f"must be a finite number, got {describe(value)}"


def _reward_problem(value: Any) -> str | None:
    # 1.0 is accepted (float columns); NaN fails `in (0, 1)` as it equals nothing.
    return None if _is_number(value) and value in (0, 1) else f"must be 0 or 1, got {describe(value)}"


def _score_problem(value: Any) -> str | None:
    return None if _is_number(value) and math.isfinite(value) else f"must be a finite number, got {describe(value)}"


def _ref_logprob_problem(value: Any) -> str | None:
    # log pi_ref(completion | prompt), summed over completion_ids (`iwsft sample` writes it): a log-probability
    if not _is_number(value) or not math.isfinite(value):
        return f"must be a finite number (a log-probability), got {describe(value)}"
    return None if value <= 0 else f"must be <= 0 (a log-probability), got {describe(value)}"


def _token_ids_problem(value: Any) -> str | None:
    # the tokens pi_ref sampled (`iwsft sample` writes them): what reference and train then use
    if not isinstance(value, list) or not value:
        return f"must be a non-empty list of token ids, got {describe(value)}"
    bad = next((v for v in value if isinstance(v, bool) or not isinstance(v, int) or v < 0), None)
    return None if bad is None else f"must hold non-negative integer token ids, got {describe(bad)}"


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
    if isinstance(value, str):
        return value if value.strip() else None
    return str(value) if _is_number(value) and isinstance(value, int) else None


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


def _answer_text(answer: str | int | float) -> str:
    return str(int(answer) if isinstance(answer, float) and answer.is_integer() else answer)


def normalize_record(record: dict, line: int) -> dict:
    """A valid record in the pipeline's form: schema fields only, absent ones left out."""
    prompt, completion = record["prompt"], record["completion"]
    normalized = {"id": explicit_id(record) or derive_id(prompt, completion, line), "prompt": prompt, "completion": completion}
    converters = {"answer": _answer_text, "reward": int, "score": float, "completion_ids": list, "finished": bool,
                  "metadata": dict, "ref_logprob": float}
    normalized.update({name: convert(record[name]) for name, convert in converters.items() if record.get(name) is not None})
    return normalized


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a .jsonl or .parquet file")
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise DataError(f"{path}: unsupported extension {path.suffix or '(none)'!r}; expected .jsonl or .parquet")


# Whole-file mistakes that would otherwise show up as one confusing error per line.
WHOLE_FILE_MISTAKES = (
    (b"PAR1", "is a Parquet file; name it .parquet"),
    (b"[", "is a JSON array; JSON Lines needs one object per line (convert: jq -c '.[]' in.json > out.jsonl)"),
)


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict:
    # json.loads would silently keep the last of two "reward" keys.
    repeated = [key for key, count in Counter(key for key, _ in pairs).items() if count > 1]
    if repeated:
        raise ValueError(f"has the field {repeated[0]!r} twice")
    return dict(pairs)


def parse_jsonl_line(line: bytes) -> tuple[Any, str | None]:
    """(value, None) for a line that parses, else (None, what is wrong with it)."""
    if b"\x00" in line:
        return None, "contains a NUL byte (a binary or corrupted file?)"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"is not valid UTF-8 (byte {error.start + 1} is 0x{line[error.start]:02x}); save the file as UTF-8"
    try:
        return json.loads(text, object_pairs_hook=_object_without_repeated_keys), None
    except json.JSONDecodeError as error:  # before ValueError: it is one
        where = f"{error.msg}{'' if error.msg.endswith(' at') else ' at'} column {error.colno}"
        return None, f"is not valid JSON ({where}; a truncated line?)"
    except ValueError as error:  # a repeated key (_object_without_repeated_keys)
        return None, str(error)
    except RecursionError:
        return None, "is not valid JSON (nested too deeply)"


def _load_jsonl(path: Path, source: str) -> tuple[list[tuple[int, Any]], list[Rejected]]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{source}: cannot be read ({error.strerror or error})") from None
    start = data.removeprefix(codecs.BOM_UTF8).lstrip()
    for prefix, mistake in WHOLE_FILE_MISTAKES:
        if start.startswith(prefix):
            raise DataError(f"{source}: {mistake}")
    entries, unparsed = [], []  # (line, parsed value) and Rejected
    # Split on b"\n" only: str.splitlines would also split inside strings at U+2028 and friends.
    for number, raw_line in enumerate(data.split(b"\n"), start=1):
        line = raw_line.rstrip(b"\r").removeprefix(codecs.BOM_UTF8 if number == 1 else b"")
        if not line.strip():
            continue
        value, message = parse_jsonl_line(line)
        if message is None:
            entries.append((number, value))
        else:
            unparsed.append(Rejected(number, line.decode("utf-8", "replace"), (Problem(number, None, None, message, source),)))
    return entries, unparsed


# Per Parquet column, the Arrow types whose values can pass the record checks ("null": all empty).
ALLOWED_COLUMN_KINDS = {"prompt": {"string"}, "completion": {"string"}, "id": {"string", "integer"},
                        "answer": {"string", "integer", "float"}, "reward": {"integer", "float"}, "score": {"integer", "float"},
                        "completion_ids": {"list"}, "finished": {"boolean"}, "metadata": {"struct"},
                        "ref_logprob": {"integer", "float"}}


def _arrow_kind(dtype) -> str:
    import pyarrow as pa
    if pa.types.is_dictionary(dtype):  # pandas categoricals
        dtype = dtype.value_type
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return "string"
    kinds = {"boolean": pa.types.is_boolean, "integer": pa.types.is_integer, "float": pa.types.is_floating, "null": pa.types.is_null,
             "list": lambda t: pa.types.is_list(t) or pa.types.is_large_list(t), "struct": pa.types.is_struct}
    return next((kind for kind, matches in kinds.items() if matches(dtype)), str(dtype))


def parquet_schema_problems(schema) -> list[str]:
    """Missing required columns and columns of the wrong type, all at once."""
    problems = [f"missing required column {name!r}" for name in REQUIRED_TEXT_FIELDS if name not in schema.names]
    for name in SCHEMA_FIELDS:
        if name in schema.names:
            kind = _arrow_kind(schema.field(name).type)
            if kind not in ALLOWED_COLUMN_KINDS[name] | {"null"}:
                problems.append(f"column {name!r} must be {' or '.join(sorted(ALLOWED_COLUMN_KINDS[name]))}, got {kind}")
    return problems + [f"(columns found: {', '.join(schema.names) or 'none'})"] if problems else []


def _load_parquet(path: Path, source: str) -> tuple[list[tuple[int, Any]], list[Rejected]]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        schema = pq.read_schema(path)
        problems = parquet_schema_problems(schema)
        if problems:
            raise DataError(f"{source}: " + "; ".join(problems))
        # Read only the schema's columns: others may hold types to_pylist cannot make plain.
        table = pq.read_table(path, columns=[name for name in SCHEMA_FIELDS if name in schema.names])
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DataError(f"{source}: not a readable Parquet file ({error})") from None
    return list(enumerate(table.to_pylist())), []


def rejection_message(source: str, rejected: Sequence[Rejected], total: int, max_invalid_fraction: float = 0.0) -> str:
    """A lone problem is the whole message; several go under a count, the first 20 shown."""
    problems = [problem for rejection in rejected for problem in rejection.problems]
    if len(problems) == 1 and max_invalid_fraction == 0.0:
        return str(problems[0])
    header = f"{source}: {len(rejected)} of {total} records are invalid ({len(problems)} problems)"
    if len(rejected) == total:
        header += "; no valid record is left"
    elif max_invalid_fraction > 0.0:
        header += f", more than max_invalid_fraction={max_invalid_fraction}"
    shown = [f"  {problem}" for problem in problems[:MAX_PROBLEMS_SHOWN]]
    hidden = [f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more"] if len(problems) > MAX_PROBLEMS_SHOWN else []
    return "\n".join([header + ":"] + shown + hidden)


def read_raw_samples(path: str | Path, max_invalid_fraction: float = 0.0) -> RawSamples:
    """Read and check a user's raw samples file (.jsonl or .parquet). DataError if it cannot be read,
    holds no valid record, or more than `max_invalid_fraction` of its records are invalid (default: any)."""
    if not 0.0 <= max_invalid_fraction <= 1.0:
        raise ValueError(f"max_invalid_fraction must be between 0 and 1, got {max_invalid_fraction}")
    path = Path(path)
    source = str(path)
    _check_readable_file(path)
    is_parquet = path.suffix.lower() == ".parquet"
    entries, rejected = (_load_parquet if is_parquet else _load_jsonl)(path, source)
    total = len(entries) + len(rejected)
    if total == 0:
        raise DataError(f"{source}: no records (the file is empty or only whitespace)")
    unit = "row index" if is_parquet else "line"
    problems_by_line: dict[int, list[Problem]] = defaultdict(list)
    for problem in validate_records([value for _, value in entries], source, [line for line, _ in entries], unit):
        problems_by_line[problem.line].append(problem)
    records, lines = [], []
    for line, value in entries:
        if line in problems_by_line:
            rejected.append(Rejected(line, value, tuple(problems_by_line[line])))
        else:
            records.append(normalize_record(value, line))
            lines.append(line)
    rejected.sort(key=lambda rejection: rejection.line)
    if rejected and (not records or len(rejected) / total > max_invalid_fraction):
        raise DataError(rejection_message(source, rejected, total, max_invalid_fraction))
    return RawSamples(records, rejected, source, lines, unit)


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


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays reach us from metrics code: both have .tolist().
    if not hasattr(value, "tolist"):
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return value.tolist()


def write_jsonl_atomic(path: str | Path, records: Iterable[dict]) -> None:
    """One JSON object per line, UTF-8 (non-ASCII kept readable), all or nothing."""
    with atomic_file(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, default=_json_default) + "\n")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Indented JSON (reports, metrics: read by people and by DVC), all or nothing."""
    with atomic_file(path) as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=2, default=_json_default)
        handle.write("\n")
