"""The math task's worker process (started by iwsft.tasks.math; not imported by the pipeline).

math-verify's own timeouts use signal.alarm, which only works in the main thread: in a Prefect
worker thread they raise. So they are turned off here (parsing_timeout=None, timeout_seconds=None)
and the parent time-boxes each request instead, killing this process when one runs too long
(sympy can spend hours on `9^{9^{9^{9}}}`, and a thread cannot be stopped; a process can).

Protocol: one JSON request per line on stdin, one JSON reply per line on stdout; `completion` is
the final answer the parent extracted from the completion (iwsft.tasks.final_answer), not the whole text:
  {"op": "score", "completion": str, "answer": str}  ->  {"ok": 0.0 | 1.0}
  {"op": "extract", "completion": str}               ->  {"ok": str | null}
  any failure                                        ->  {"error": "Type: message"}
"ready" is written once the imports are done. Run as a script (`python -P math_worker.py`), so
that no package import (torch, transformers) slows its start.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

MAX_KEY_CHARS = 500  # a vote key longer than this is no use to a majority vote


def _exit_with_parent(parent: int) -> None:
    # stdin closes when the parent dies, but a request in progress would not notice
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _parse_bare(parse, answer: str):
    """A bare answer, gold or extracted ("1/2", "\\frac{1}{2}", "2\\sqrt{3}"): latex (a backslash, ^ or a
    brace) is read inside $...$ first, since read as plain text "2\\sqrt{3}" is 2; the rest as plain
    text first, since inside $...$ "5 apples" is a product of letters."""
    latex = any(c in answer for c in "\\^{")
    for text in (f"${answer}$", answer) if latex else (answer, f"${answer}$"):
        parsed = parse(text, parsing_timeout=None)
        if parsed:
            return parsed
    return []


def _vote_key(parsed) -> str | None:
    """sympy's printed form of the first parse, floats made rational, so that 1/2, \\frac{1}{2}
    and 0.5 vote together."""
    import sympy

    if not parsed:
        return None
    value = parsed[0]
    if isinstance(value, sympy.Float):
        value = sympy.nsimplify(value, rational=True)
    return str(value)[:MAX_KEY_CHARS]


def main() -> None:
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the replies
    sys.stdout = sys.stderr
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    import math_verify.grader
    import math_verify.parser
    from math_verify import parse, verify

    # the "timeout is disabled" warnings: disabled on purpose, the parent holds the deadline
    math_verify.parser.TIMEOUT_WARNING_SHOWN = math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    replies.write("ready\n")
    for line in sys.stdin:
        try:
            request = json.loads(line)
            parsed = _parse_bare(parse, request["completion"])
            if request["op"] == "extract":
                result = _vote_key(parsed)
            else:
                gold = _parse_bare(parse, request["answer"])
                result = float(bool(gold and parsed and verify(gold, parsed, timeout_seconds=None)))
            replies.write(json.dumps({"ok": result}) + "\n")
        except Exception as error:  # noqa: BLE001  (reported to the parent, which counts it)
            replies.write(json.dumps({"error": f"{type(error).__name__}: {error}"[:MAX_KEY_CHARS]}) + "\n")


if __name__ == "__main__":
    main()
