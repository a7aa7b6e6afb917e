"""Worked solutions to sums and differences of integers, written by a rule, correct by construction:
the teacher data of the smollm2-teacher profile (a stronger "teacher" than pi_ref, as s1K's solutions
were written by another model than the one fine-tuned on them).

    solve("8 - 2")          -> "8 - 2: take 2 from 8, which leaves 6. The answer is 6."
    solve("-1 - -( -3 + 0 )") -> "-1 - -( -3 + 0 ): first -3 + 0: add 0 to -3, which makes -3; ..."

The grammar is reasoning-gym basic_arithmetic's with + and - only (integers, unary minus, brackets);
anything else (*, /, decimals) is a ValueError naming the expression.
"""

from __future__ import annotations

import re

TOKEN = re.compile(r"\s*(\d+|[-+()])")


def _tokens(expression: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The tokens and each one's (start, end) in the text, to quote a bracket as it was written."""
    tokens, spans, position, text = [], [], 0, expression.strip()
    while position < len(text):
        match = TOKEN.match(text, position)
        if not match:
            raise ValueError(f"cannot solve {expression!r}: only integers, +, - and brackets are written out")
        tokens.append(match.group(1))
        spans.append(match.span(1))
        position = match.end()
    return tokens, spans


class _Solver:
    """Recursive descent over `term (('+' | '-') term)*`, term = ['-'] (integer | '(' sum ')'),
    recording one sentence per operation in the order a person does them."""

    def __init__(self, expression: str):
        self.expression, self.index, self.steps = expression.strip(), 0, []
        self.tokens, self.spans = _tokens(expression)

    def _peek(self) -> str | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise ValueError(f"cannot solve {self.expression!r}: it ends too early")
        self.index += 1
        return token

    def solve(self) -> int:
        value = self._sum()
        if self._peek() is not None:
            raise ValueError(f"cannot solve {self.expression!r}: unexpected {self._peek()!r}")
        return value

    def _sum(self) -> int:
        value = self._term()
        while self._peek() in ("+", "-"):
            operator = self._take()
            operand = self._term()
            value = self._step(value, operator, operand)
        return value

    def _term(self) -> int:
        token = self._take()
        if token == "-":
            inner = self._term()
            if self.tokens[self.index - 1] == ")":  # a negated bracket is a step of its own
                self.steps.append(f"the negative of {inner} is {-inner}")
            return -inner
        if token == "+":
            return self._term()
        if token == "(":
            start, mark = self.index, len(self.steps)
            value = self._sum()
            if self._take() != ")":
                raise ValueError(f"cannot solve {self.expression!r}: a bracket is not closed")
            # "( -3 + 0 )" is worked out first: say so, once (an outer bracket's steps begin with the inner's)
            if len(self.steps) > mark and not self.steps[mark].startswith(("first ", "then ")):
                inner = self.expression[self.spans[start][0]:self.spans[self.index - 2][1]]
                self.steps[mark] = f"{'then' if mark else 'first'} {inner}: {self.steps[mark]}"
            return value
        if not token.isdigit():
            raise ValueError(f"cannot solve {self.expression!r}: unexpected {token!r}")
        return int(token)

    def _step(self, left: int, operator: str, right: int) -> int:
        result = left + right if operator == "+" else left - right
        if operator == "+" and right >= 0:
            self.steps.append(f"add {right} to {left}, which makes {result}")
        elif operator == "+":
            self.steps.append(f"adding {right} is taking {-right} from {left}, which leaves {result}")
        elif right >= 0:
            self.steps.append(f"take {right} from {left}, which leaves {result}")
        else:
            self.steps.append(f"taking away {right} is adding {-right} to {left}, which makes {result}")
        return result


def _spaced(text: str) -> str:
    """Tokens joined back as a person writes them: '-3 + 0', not '- 3 + 0'."""
    return re.sub(r"(^|[(+-] )- (\d)", r"\1-\2", re.sub(r"\( ", "(", re.sub(r" \)", ")", text)))


def solve(expression: str) -> tuple[str, int]:
    """(a worked solution ending "The answer is N.", N) for an expression of + and - on integers."""
    solver = _Solver(expression)
    value = solver.solve()
    steps = solver.steps or [f"it is {value}"]
    return f"{expression.strip()}: {'; '.join(steps)}. The answer is {value}.", value


# "Calculate 5 - 3." / "38-57-10=" / "What is 4 + -2? Reply ...": the arithmetic run of a prompt
EXPRESSION = re.compile(r"[-+(]*\s*\d+(?:\s*[-+()][-+()\s]*\d+)+[\s)]*")


def expression_of(prompt: str, metadata: dict | None) -> str:
    """The expression a problem asks for: its metadata's `expression` (reasoning-gym writes it), else
    the longest arithmetic run of the prompt's text; ValueError when there is none."""
    if metadata and isinstance(metadata.get("expression"), str):
        return metadata["expression"]
    runs = [match.group().strip() for match in EXPRESSION.finditer(prompt)]
    if not runs:
        raise ValueError(f"no arithmetic expression in the prompt {prompt!r}")
    return max(runs, key=len)
