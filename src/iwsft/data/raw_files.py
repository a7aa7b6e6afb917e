"""Reading a user's raw samples file (.jsonl or .parquet) against the raw schema (iwsft.data.records).

`read_raw_samples(path)` checks every record and returns `RawSamples`: valid records normalised (id
filled in, reward int, score float, answer str, null optional fields left out) and the rejected
ones. All problems are collected, the first 20 shown; any bad record fails the file unless
`max_invalid_fraction` allows setting some aside. Whole-file mistakes (a Parquet file named .jsonl,
a JSON array, an empty file, a compressed file, UTF-16 or UTF-32 text, old-Mac CR line ends) get one
message that says what the file is and what to do, instead of one per line. A Parquet file holds plain
string columns or TRL's conversational ones (prompt and completion as list<struct<role, content>>, as
`datasets.Dataset.to_parquet` writes them), checked like JSONL records. Given `token_ids_problem` (the
tokenizer of model.base: iwsft.encoding.token_counts), a record's `completion_ids` must be that
tokenizer's ids and decode to its completion.

Decisions and limits: the whole file is read into memory; fields outside the schema are dropped;
positions are 1-based JSONL line numbers (as editors show) or 0-based Parquet row indexes (as
df.iloc). The eval prompts file is read with the same JSONL reader (iwsft.data.eval_prompts). Records from
a dataset source (a glob of shards, a datasets folder, a hub dataset, or a file with a columns mapping) come
through iwsft.data.sources, which names a mapped field's column in each problem.
"""

from __future__ import annotations

import codecs
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from iwsft.data.numbers import parse_float, parse_int
from iwsft.data.records import (REQUIRED_TEXT_FIELDS, SCHEMA_FIELDS, Problem, Rejected, explicit_id, normalize_record,
                                validate_records)
from iwsft.errors import DataError

SUPPORTED_EXTENSIONS = (".jsonl", ".parquet")
MAX_PROBLEMS_SHOWN = 20


@dataclass(frozen=True)
class RawSamples:
    """Valid normalised records in file order (at `lines`, in `unit`s), and the rejected ones
    (only if max_invalid_fraction > 0)."""

    records: list[dict]
    rejected: list[Rejected]
    source: str
    lines: list[int] = field(default_factory=list)
    unit: str = "line"
    fingerprint: dict = field(default_factory=dict)  # what was read (iwsft.data.sources): commit or file hashes


def check_readable_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a .jsonl or .parquet file")
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise DataError(f"{path}: unsupported extension {path.suffix or '(none)'!r}; expected .jsonl or .parquet")


# Whole-file mistakes that would otherwise show up as one confusing error per line, by the file's first
# bytes (after any UTF-8 BOM and whitespace). UTF-32 before UTF-16: its little-endian BOM starts with UTF-16's.
_RESAVE = "save it as UTF-8 (iconv -f {0} -t UTF-8 in.jsonl > out.jsonl)"
WHOLE_FILE_MISTAKES = (
    (b"PAR1", "is a Parquet file; name it .parquet"),
    (b"[", "is a JSON array; JSON Lines needs one object per line (convert: jq -c '.[]' in.json > out.jsonl)"),
    (b"\x1f\x8b", "is gzip-compressed: gunzip it first (gunzip -c in.jsonl > out.jsonl)"),
    (b"BZh", "is bzip2-compressed: decompress it first (bunzip2 -c in.jsonl > out.jsonl)"),
    (b"\xfd7zXZ\x00", "is xz-compressed: decompress it first (xz -dc in.jsonl > out.jsonl)"),
    (b"\x28\xb5\x2f\xfd", "is zstd-compressed: decompress it first (zstd -dc in.jsonl > out.jsonl)"),
    (b"PK\x03\x04", "is a zip archive: unzip it first"),
    (b"\xff\xfe\x00\x00", "is UTF-32 text (little-endian, with a BOM); " + _RESAVE.format("UTF-32")),
    (b"\x00\x00\xfe\xff", "is UTF-32 text (big-endian, with a BOM); " + _RESAVE.format("UTF-32")),
    (b"\xff\xfe", "is UTF-16 text (little-endian, with a BOM); " + _RESAVE.format("UTF-16")),
    (b"\xfe\xff", "is UTF-16 text (big-endian, with a BOM); " + _RESAVE.format("UTF-16")),
)
# Without a BOM, UTF-16/32 text shows itself by where the NUL bytes of its first (ASCII) character fall.
NUL_PATTERNS = (
    (lambda b: b[1:4] == b"\x00\x00\x00" and b[0] != 0, "UTF-32LE"),
    (lambda b: b[:3] == b"\x00\x00\x00" and b[3] != 0, "UTF-32BE"),
    (lambda b: b[1] == 0 and b[0] != 0 and b[3:4] in (b"\x00", b""), "UTF-16LE"),
    (lambda b: b[0] == 0 and b[1] != 0, "UTF-16BE"),
)


def whole_file_mistake(data: bytes) -> str | None:
    """What a file that cannot be JSON Lines as written is, and what to do; None for a plausible file."""
    start = data.removeprefix(codecs.BOM_UTF8).lstrip()
    for prefix, mistake in WHOLE_FILE_MISTAKES:
        if start.startswith(prefix):
            return mistake
    head = start[:4]
    if len(head) >= 2:
        encoding = next((name for matches, name in NUL_PATTERNS if matches(head + b"\x01" * (4 - len(head)))), None)
        if encoding is not None:
            return f"is {encoding} text (no BOM); " + _RESAVE.format(encoding)
    if b"\n" not in data and b"\r" in data.rstrip():
        return "has old-Mac line ends (CR only); convert them to LF first (tr '\\r' '\\n' < in.jsonl > out.jsonl)"
    return None


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
        # numbers Python cannot hold exactly stay their text (iwsft.data.numbers), never an exception
        return json.loads(text, object_pairs_hook=_object_without_repeated_keys, parse_int=parse_int,
                          parse_float=parse_float), None
    except json.JSONDecodeError as error:  # before ValueError: it is one
        where = f"{error.msg}{'' if error.msg.endswith(' at') else ' at'} column {error.colno}"
        return None, f"is not valid JSON ({where}; a truncated line?)"
    except ValueError as error:  # a repeated key (_object_without_repeated_keys)
        return None, str(error)
    except RecursionError:
        return None, "is not valid JSON (nested too deeply)"


def load_jsonl(path: Path, source: str) -> tuple[list[tuple[int, Any]], list[Rejected]]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{source}: cannot be read ({error.strerror or error})") from None
    mistake = whole_file_mistake(data)
    if mistake:
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


# Per Parquet column, the Arrow types whose values can pass the record checks ("null": all empty); a list
# prompt or completion is a conversational one, its messages checked per row as JSONL's are.
ALLOWED_COLUMN_KINDS = {"prompt": {"string", "list"}, "completion": {"string", "list"}, "id": {"string", "integer"},
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


# a boolean reward column is refused as a JSON `true` is (iwsft.data.records), with the fix
COLUMN_HINTS = {("reward", "boolean"): ": write 1 or 0 (df['reward'] = df['reward'].astype(int))"}


def parquet_schema_problems(schema) -> list[str]:
    """Missing required columns and columns of the wrong type, all at once."""
    problems = [f"missing required column {name!r}" for name in REQUIRED_TEXT_FIELDS if name not in schema.names]
    for name in SCHEMA_FIELDS:
        if name in schema.names:
            kind = _arrow_kind(schema.field(name).type)
            if kind not in ALLOWED_COLUMN_KINDS[name] | {"null"}:
                hint = COLUMN_HINTS.get((name, kind), "")
                problems.append(f"column {name!r} must be {' or '.join(sorted(ALLOWED_COLUMN_KINDS[name]))}, got {kind}{hint}")
    return problems + [f"(columns found: {', '.join(schema.names) or 'none'})"] if problems else []


def load_parquet(path: Path, source: str, all_columns: bool = False) -> tuple[list[tuple[int, Any]], list[Rejected]]:
    """(row index, row) per row; `all_columns`: every column, unchecked (a source's columns mapping comes
    first, iwsft.data.sources), else only the schema's, their types checked."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        schema = pq.read_schema(path)
        problems = [] if all_columns else parquet_schema_problems(schema)
        if problems:
            raise DataError(f"{source}: " + "; ".join(problems))
        # Read only the schema's columns: others may hold types to_pylist cannot make plain.
        table = pq.read_table(path, columns=None if all_columns else [name for name in SCHEMA_FIELDS if name in schema.names])
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


def read_raw_samples(path: Any, max_invalid_fraction: float = 0.0,
                     token_ids_problem: Callable[[dict], str | None] | None = None) -> RawSamples:
    """Read and check a user's raw samples: a .jsonl or .parquet file, or any dataset source (a glob, a
    datasets folder, a hub dataset; columns mapped: iwsft.data.sources). DataError if it cannot be read,
    holds no valid record, or more than `max_invalid_fraction` of its records are invalid (default: any).
    `token_ids_problem(record)`: what is wrong with a valid record's `completion_ids` for the model
    (None: fine), run on each record that has them; None: ids are checked by the schema only."""
    if not 0.0 <= max_invalid_fraction <= 1.0:
        raise ValueError(f"max_invalid_fraction must be between 0 and 1, got {max_invalid_fraction}")
    from iwsft.data.sources import load, mapped, named, spec_of

    spec = spec_of(path)  # a path as today, or a dataset source (iwsft.data.sources)
    loaded = load(spec)
    source, unit, rejected = loaded.source, loaded.unit, list(loaded.unparsed)
    entries, origin = (loaded.entries, {}) if spec.plain else mapped(loaded, spec)
    total = len(entries) + len(rejected)
    if total == 0:
        raise DataError(f"{source}: no records (the file is empty or only whitespace)")
    problems_by_line: dict[int, list[Problem]] = defaultdict(list)
    for problem in validate_records([value for _, value in entries], source, [line for line, _ in entries], unit):
        problems_by_line[problem.line].append(named(problem, origin, loaded))
    records, lines = [], []
    for line, value in entries:
        if line not in problems_by_line:
            record = normalize_record(value, line)
            message = token_ids_problem(record) if token_ids_problem and "completion_ids" in record else None
            if message is None:
                records.append(record)
                lines.append(line)
                continue
            record_id = record["id"] if explicit_id(value) is not None else None
            problems_by_line[line].append(named(Problem(line, record_id, "completion_ids", message, source, unit), origin, loaded))
        rejected.append(Rejected(line, value, tuple(problems_by_line[line])))
    rejected.sort(key=lambda rejection: rejection.line)
    if rejected and (not records or len(rejected) / total > max_invalid_fraction):
        raise DataError(rejection_message(source, rejected, total, max_invalid_fraction))
    return RawSamples(records, rejected, source, lines, unit, loaded.fingerprint)
