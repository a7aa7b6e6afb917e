"""What every built-in verifier does to text before it extracts an answer, and the test for an answer
copied from the prompt.

Unicode: models write U+2212 MINUS SIGN (`−5`), dashes and full-width digits (`－５`) where a verifier
expects ASCII; `The answer is −5` used to extract nothing. `ascii_numbers` maps exactly those to ASCII
and leaves everything else alone. Not NFKC: NFKC keeps U+2212 and the dashes as they are, and it
changes what the verifiers accept elsewhere (`3²` would become `32`, `½` would become `1⁄2`, a
ligature its letters). The custom task's scorer gets the text as the model wrote it.

Restated questions: a small model often copies the question (`Calculate 0 + 3.`); a verifier that
takes the last number, or evaluates an expression, then scores the copy as right (3, or 3 - 5 = -2).
`copies_prompt` says whether the text an answer came from is an expression (an operator between two
operands, not a plain number such as 1/2) that the prompt already contains, whitespace aside.
"""

from __future__ import annotations

import re

from iwsft.data.conversation import prompt_key_text

# U+2212 minus sign; figure, en and em dash, horizontal bar; small and full-width hyphen-minus
MINUS_SIGNS = "\u2212\u2012\u2013\u2014\u2015\ufe63\uff0d"
# full-width digits, plus sign and full stop (the decimal point of a full-width number)
FULL_WIDTH = "０１２３４５６７８９＋．"
ASCII = str.maketrans({**{sign: "-" for sign in MINUS_SIGNS}, **dict(zip(FULL_WIDTH, "0123456789+."))})

PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?|\\[dt]?frac\{\d+\}\{\d+\})")
OPERATOR_BETWEEN_OPERANDS = re.compile(r"[\w)\]}][-+*/×÷^·][-+\w(\[{\\]|\\(?:cdot|times|div)|[\w)}]\\[dt]?frac")
# characters of an arithmetic expression: what `expression_ending_at` walks back over
EXPRESSION_CHARS = set("0123456789.,+-*/×÷^()[] \t")


def ascii_numbers(text: str) -> str:
    """Unicode minus signs and dashes as `-`, full-width digits as ASCII; nothing else changes."""
    return text.translate(ASCII)


def compact(text: str) -> str:
    """The form two texts are compared in: ASCII numbers, casefolded, no whitespace, no final
    punctuation (`Calculate 3 - 5.` -> `calculate3-5`)."""
    return "".join(ascii_numbers(text).casefold().split()).rstrip(".=?!:;,")


def is_expression(text: str) -> bool:
    """An operator between two operands (`3-5`, `2\\cdot3`), and not just a number (`-5`, `1/2`)."""
    key = compact(text).strip("$")
    return not PLAIN_NUMBER.fullmatch(key) and OPERATOR_BETWEEN_OPERANDS.search(key) is not None


def copies_prompt(source: str | None, prompt) -> bool:
    """True when `source` (the text an answer was extracted from) is an expression that `prompt` (a
    string or a message list; None: unknown) contains: the question restated, not an answer."""
    if source is None or prompt is None or not is_expression(source):
        return False
    return compact(source).strip("$") in compact(prompt_key_text(prompt))


def expression_ending_at(text: str, start: int, end: int) -> str:
    """The arithmetic run of `text` that ends with the number text[start:end] (`Calculate 0 + 3` ->
    `0 + 3`): the text a last-number extraction really took its number from."""
    while start > 0 and text[start - 1] in EXPRESSION_CHARS:
        start -= 1
    return text[start:end].strip()
