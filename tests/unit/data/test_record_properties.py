"""Property-based (hypothesis): any JSON value in any field of a raw or eval record gives either acceptance
or a DataError, never another exception; an accepted record normalises and writes back as JSON.

Values include what breaks naive readers: huge integers (past float range and past Python's 4300-digit
str/int limit), NaN and infinities, booleans where numbers go, lone surrogates, NUL characters, nested
lists and objects, message lists with extra keys. Kept fast: ~200 examples a test, no deadline.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iwsft.data import eval_prompts, records
from iwsft.data.eval_prompts import read_eval_prompts
from iwsft.data.numbers import NumberLiteral
from iwsft.data.raw_files import parse_jsonl_line, read_raw_samples
from iwsft.errors import DataError, UserError

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# built by exponent: a strategy holding 10**5000 itself could not even be repr()'d
powers_of_two = st.tuples(st.sampled_from([1, -1]), st.sampled_from([31, 63, 1330, 16610]))  # 16610 bits: 5000 digits
huge_integers = powers_of_two.map(lambda sign_bits: sign_bits[0] * 2**sign_bits[1]) | st.integers()
texts = st.text(max_size=12) | st.sampled_from(["", " ", "\x00", "\ud800", "1e400", "3"])
scalars = (st.none() | st.booleans() | huge_integers | st.floats(allow_nan=True, allow_infinity=True) | texts
           | st.sampled_from([NumberLiteral("9" * 5000), NumberLiteral("1e400"), NumberLiteral("-1e999")]))
messages = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool"]) | scalars,
                                  "content": texts | scalars},
                                 optional={"refusal": st.none() | texts, "tool_calls": st.none() | st.lists(scalars, max_size=1)})
json_values = st.recursive(scalars | st.lists(messages, max_size=3),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=8)
raw_records = st.fixed_dictionaries({}, optional={name: json_values for name in records.SCHEMA_FIELDS})
eval_records = st.fixed_dictionaries({}, optional={name: json_values for name in eval_prompts.FIELDS})


def as_json(value) -> str:
    """The pipeline's own write (iwsft.io.durable writes json.dumps of a normalised record)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass").decode("utf-8", "replace")


@SETTINGS
@given(raw_records)
def test_any_raw_record_is_accepted_or_named_never_a_crash(record):
    problems = records.validate_records([record], "raw.jsonl")
    if not problems:  # accepted: it normalises to a record the pipeline can write and read back
        assert isinstance(json.loads(as_json(records.normalize_record(record, 1))), dict)
    assert all(str(problem).strip() for problem in problems)  # refused: each problem says something


@SETTINGS
@given(eval_records)
def test_any_eval_record_is_accepted_or_named_never_a_crash(record):
    problems = eval_prompts.validate_records([record], "eval.jsonl")
    if not problems:
        assert isinstance(json.loads(as_json(eval_prompts.normalize_record(record))), dict)
    assert all(str(problem).strip() for problem in problems)


def json_line(value) -> bytes | None:
    try:
        return json.dumps(value).encode()
    except (ValueError, TypeError):  # ints over the str-conversion limit: write their digits by hand
        return None


@settings(SETTINGS, max_examples=100)  # a file per example: half as many
@given(st.lists(raw_records, min_size=1, max_size=3), st.sampled_from(["", "9" * 5000, "1e400", "-0.0", "1E-400"]))
def test_any_raw_file_reads_or_raises_a_data_error(rows, number):
    lines = [json_line(row) for row in rows] + [b'{"prompt": "p", "completion": "c", "answer": %s}' % number.encode()
                                                if number else b""]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "raw.jsonl"
        path.write_bytes(b"\n".join(line for line in lines if line is not None))
        try:
            read_raw_samples(path)
        except (DataError, UserError):
            pass
        eval_path = path.with_name("eval.jsonl")
        eval_path.write_bytes(path.read_bytes())
        try:
            read_eval_prompts(eval_path)
        except (DataError, UserError):
            pass


@SETTINGS
@given(st.binary(max_size=40))
def test_any_bytes_on_a_line_parse_or_give_a_message(line):
    value, message = parse_jsonl_line(line)
    assert message is None or isinstance(message, str)
