"""Numbers in users' files: reading every JSON number without an exception, and checking a numeric field.

Python reads JSON integers exactly, at any size, but cannot turn one of more than 4300 digits into an
int (`sys.set_int_max_str_digits`), and `math.isfinite(10**400)` or `float(10**400)` raise OverflowError.
So the JSONL readers parse numbers with `parse_int` / `parse_float`: a literal Python cannot hold as it
should (an integer over the digit limit, a float that overflows to infinity, as 1e400) stays its text, a
`NumberLiteral`. An answer is text (a verifier compares strings), so such an answer is kept exact, digit
for digit; a field that must be a number (score, reward, ref_logprob, a token id) refuses it as out of
range. `float_problem` is the check of a field read as a float: finite and within a float's range, for any
int, float or literal.
"""

from __future__ import annotations

import math
import sys
from typing import Any

# decimal digits per bit: an int's size in digits without converting it to text
_DIGITS_PER_BIT = math.log10(2)
# the most digits a message shows of a number
SHOWN_DIGITS = 30


class NumberLiteral(str):
    """A JSON number Python cannot hold as its int or float, kept as the text the file wrote."""


def int_digit_limit() -> int | None:
    """The most digits str() and int() convert (None: no limit set)."""
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    return limit or None


def parse_int(text: str) -> int | NumberLiteral:
    limit = int_digit_limit()
    return NumberLiteral(text) if limit is not None and len(text.lstrip("-")) > limit else int(text)


def parse_float(text: str) -> float | NumberLiteral:
    value = float(text)  # never raises: an overflow is inf
    return NumberLiteral(text) if math.isinf(value) else value


def is_number(value: Any) -> bool:
    """An int or a float as the schema means it: `true` is not a number, although bool is an int."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def digit_count(value: int) -> int:
    """Decimal digits of abs(value), exact without str() (which fails past the digit limit)."""
    estimate = max(1, int(abs(value).bit_length() * _DIGITS_PER_BIT))
    return estimate + (abs(value) >= 10 ** estimate)


def has_text_form(value: int) -> bool:
    """Whether str(value) works: at most the interpreter's digit limit (an int read from JSON always does)."""
    limit = int_digit_limit()
    return limit is None or digit_count(value) <= limit


def describe_number(value: int | float | NumberLiteral) -> str | None:
    """A number short enough for a message; None when `value` is an ordinary one (the caller spells it)."""
    if isinstance(value, NumberLiteral):
        if value.lstrip("-").isdigit():
            return f"an integer of {len(value.lstrip('-'))} digits"
        return value if len(value) <= SHOWN_DIGITS else f"the number {value[:SHOWN_DIGITS]}... ({len(value)} characters)"
    if isinstance(value, int) and not isinstance(value, bool) and digit_count(value) > SHOWN_DIGITS:
        return f"an integer of {digit_count(value)} digits"
    return None


def float_problem(value: Any, what: str = "a finite number") -> str | None:
    """None for a number usable as a float (finite, within a float's range), else why not."""
    from iwsft.data.conversation import describe

    if isinstance(value, NumberLiteral):
        return f"must be {what}, got {describe(value)} (beyond a float's range)"
    if not is_number(value):
        return f"must be {what}, got {describe(value)}"
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            return f"must be {what}, got {describe(value)} (beyond a float's range)"
        return None
    return None if math.isfinite(value) else f"must be {what}, got {describe(value)}"
