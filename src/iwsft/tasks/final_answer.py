"""The math task's final answer: which part of a completion is compared with the gold answer.

math-verify alone parses any expression it finds in the text, so `Calculate 3 - 5.` (the question
restated) was read as 3 - 5 and scored right for -2. The math task now hands it only the final
answer, found in this order:

  1. the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced;
  2. else the last "answer is ..." / "answer: ..." (`The final answer is $-2$.`), up to the first word,
     after its last `=` (`the answer is x = 5` -> 5);
  3. else the last non-empty line: after its last `=`, the rest when it is all mathematics
     (`x = \\frac{1}{2}`, `3 - 5`), otherwise the line's final number (`So the result is -2.`;
     a/b, \\frac{a}{b}, k\\sqrt{n} and \\pi count as numbers).

Each answer comes with its *source*, the text the answer was read from (for a final number, the
arithmetic run that ends with it: `0 + 3` in `Calculate 0 + 3`), which iwsft.tasks.text.copies_prompt
compares with the prompt: an expression copied from the question is not an answer.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from iwsft.tasks.text import expression_ending_at

BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
ANSWER_LABEL = re.compile(r"answer\s*(?:is\s*:?|:|=)\s*", re.IGNORECASE)
WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")  # a word of 2+ letters, not a latex command
MATH_ONLY = re.compile(r"[0-9a-zA-Z\s+\-*/^.,()\[\]{}|!<>_\\$:'=]+")
MATH_CONTENT = re.compile(r"[0-9]|\\[a-zA-Z]+")
FINAL_TERM = re.compile(
    r"(?:(?<![\w)\]}])[-+])?(?<![\d.,/])"                                          # a sign, not a binary minus
    r"(?:\d*\\sqrt\{[^{}]*\}|\\[dt]?frac\{[^{}]*\}\{[^{}]*\}|\\frac\d\d|\\pi"       # latex numbers
    r"|\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?)")                                        # 12, -1,024.5, 2/3
TRAILING = ".,;:!? \t"


class Answer(NamedTuple):
    text: str    # what math-verify parses
    source: str  # what it was read from: the text compared with the prompt


def final_answer(completion: str) -> Answer | None:
    """The final answer of a completion (see the module docstring), or None when it gives none."""
    starts = list(BOXED.finditer(completion))
    if starts:  # a box is the answer, even an empty one; a box never closed was cut off: no answer
        content = _box_content(completion, starts[-1].end())
        return Answer(content, content) if content else None
    return _labelled(completion) or _last_line(completion)


def _box_content(text: str, opening: int) -> str | None:
    depth = 1
    for position in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[opening:position].strip()
    return None


def _labelled(text: str) -> Answer | None:
    labels = list(ANSWER_LABEL.finditer(text))
    if not labels:
        return None
    rest = text[labels[-1].end():].split("\n", 1)[0]
    word = WORD.search(rest)
    answer = _clean((rest[: word.start()] if word else rest).rsplit("=", 1)[-1])  # `x = 5` -> 5
    return Answer(answer, answer) if answer and MATH_CONTENT.search(answer) else None


def _last_line(text: str) -> Answer | None:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[-1]
    tail = _clean(line.rsplit("=", 1)[-1])
    if tail and is_math_only(tail):
        return Answer(tail, tail)
    terms = list(FINAL_TERM.finditer(line))
    if not terms:
        return None
    return Answer(terms[-1].group(), expression_ending_at(line, terms[-1].start(), terms[-1].end()))


def is_math_only(text: str) -> bool:
    """All mathematics: numbers, operators, latex commands and one-letter variables, no words."""
    return bool(MATH_ONLY.fullmatch(text)) and WORD.search(text) is None and MATH_CONTENT.search(text) is not None


def _clean(text: str) -> str:
    """Without surrounding punctuation and math delimiters, each end on its own (an `=` may have
    split a pair): `$-2$.` -> `-2`, `2\\)` -> `2`."""
    previous = None
    while text != previous:
        previous = text
        text = text.strip().rstrip(TRAILING)
        text = text.removeprefix("$").removeprefix("\\(").removeprefix("\\[")
        text = text.removesuffix("$").removesuffix("\\)").removesuffix("\\]")
    return text
