"""The `exact` task: the whole completion, normalised (strip, casefold, whitespace collapsed),
against the answer. Extraction (what maj@k votes on) is that normalised completion."""

from __future__ import annotations

from iwsft.tasks.base import Task


def normalise(text: str) -> str:
    """strip, casefold and collapse whitespace: `  Paris\n` == `paris`."""
    return " ".join(text.split()).casefold()


class ExactTask(Task):
    """Normalised string match of the whole completion against the answer."""

    name = "exact"

    def extract(self, completion):
        key = None if completion is None else normalise(completion)
        return key or None

    def score(self, completion, answer, metadata=None):
        key = self.extract(completion)
        return float(key is not None and key == normalise(str(answer)))
