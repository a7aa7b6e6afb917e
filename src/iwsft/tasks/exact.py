"""The `exact` task: the whole completion, normalised (Unicode minus signs and full-width digits as
ASCII, strip, casefold, whitespace collapsed), against the answer. Extraction (what maj@k votes on)
is that normalised completion. A restated question needs no check here: it scores only when the
answer is the question itself."""

from __future__ import annotations

from iwsft.tasks.base import Task
from iwsft.tasks.text import ascii_numbers


def normalise(text: str) -> str:
    """ASCII numbers, strip, casefold and collapse whitespace: `  Paris\n` == `paris`, `−5` == `-5`."""
    return " ".join(ascii_numbers(text).split()).casefold()


class ExactTask(Task):
    """Normalised string match of the whole completion against the answer."""

    name = "exact"

    def extract(self, completion, prompt=None):
        key = None if completion is None else normalise(completion)
        return key or None

    def score(self, completion, answer, metadata=None, prompt=None):
        key = self.extract(completion)
        return float(key is not None and key == normalise(str(answer)))
