"""Decontamination, the last curation rule: drop a training prompt that overlaps a held-out eval prompt.

  decontaminate     the prompt shares a word n-gram (or a character n-gram: curate.decontaminate_unit:
                    char) with an eval prompt, or equals one whole

Limits: decontamination matches words (or characters), so a paraphrased eval prompt gets through,
and a prompt shorter than the n-gram only matches an equally short eval prompt exactly. Words
covered by an n-gram found in more than half of the eval prompts (a shared system prompt or
instruction) are boilerplate, not evidence of a leak, and are left out; an exact copy of an eval
prompt is always caught. A conversational prompt (a message list) is compared on its non-system
messages. The curated gate checks exact copies with the same `decontamination_key`, so the two agree.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

from iwsft.data.conversation import exact_key, prompt_key_text
from iwsft.data.dedup import char_ngrams


def decontamination_key(text) -> str:
    """Lowercased with all whitespace removed, so reformatting does not hide an eval prompt (the
    char unit, and the curated gate's exact-match check)."""
    return "".join(prompt_key_text(text).lower().split())


def word_key(text) -> tuple[str, ...]:
    """The words of a prompt, casefolded (the word unit; whitespace runs count as one)."""
    return tuple(prompt_key_text(text).casefold().split())


def word_ngrams(words: Sequence[str], n: int) -> frozenset[tuple[str, ...]]:
    """The set of n-word windows; fewer than n words are one gram, the whole prompt, so a short
    prompt only matches an equally short one (tuples of other lengths never compare equal)."""
    words = tuple(words)
    if len(words) < n:
        return frozenset({words})
    return frozenset(words[start : start + n] for start in range(len(words) - n + 1))


def content_words(words: tuple[str, ...], boilerplate: set, n: int) -> tuple[str, ...]:
    """The words not covered by a boilerplate n-gram (`uncontaminated_mask`)."""
    covered = [False] * len(words)
    for start in range(len(words) - n + 1):
        if words[start : start + n] in boilerplate:
            covered[start : start + n] = [True] * n
    return tuple(word for word, hidden in zip(words, covered) if not hidden)


def uncontaminated_mask(records: Sequence[dict], eval_prompts: Iterable, ngram: int, unit: str = "word") -> list[bool]:
    """False for a record whose prompt shares a word n-gram (unit word) or a character n-gram
    (unit char, with whitespace removed) with any eval prompt, or equals one whole.

    Word unit: an n-gram found in more than half of the eval prompts (and in two at least) is
    boilerplate, such as a shared system prompt; its words are removed from every prompt before
    comparing, so what is left (the problem itself) is compared: by n-grams, or whole if short."""
    evals = [prompt for prompt in eval_prompts if prompt_key_text(prompt).strip()]
    if unit == "char":
        grams_of = lambda prompt: char_ngrams(decontamination_key(prompt), ngram)  # noqa: E731
    else:
        counts = Counter(gram for prompt in evals for gram in word_ngrams(word_key(prompt), ngram) if len(gram) == ngram)
        boilerplate = {gram for gram, count in counts.items() if count >= 2 and count > len(evals) / 2}

        def grams_of(prompt) -> frozenset:
            words = content_words(word_key(prompt), boilerplate, ngram)
            return word_ngrams(words, ngram) if words else frozenset()

    eval_grams = set().union(*(grams_of(prompt) for prompt in evals))
    # A copy, whitespace and case aside, is always a leak (the curated gate's check, so the two agree).
    whole = {decontamination_key(prompt) for prompt in evals}

    verdicts: dict[str, bool] = {}  # K samples share a prompt: judge each distinct prompt once

    def is_clean(prompt) -> bool:
        key = exact_key(prompt)
        if key not in verdicts:
            verdicts[key] = decontamination_key(prompt) not in whole and grams_of(prompt).isdisjoint(eval_grams)
        return verdicts[key]

    return [is_clean(record["prompt"]) for record in records]
