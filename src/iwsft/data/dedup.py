"""Duplicate rules of curation: exact repeats of a (prompt, completion) pair, and near-identical
completions of one prompt.

  exact_duplicate   the same (prompt, completion) again: the first is kept
  near_duplicate    within one prompt, a completion equal to a kept one after loose normalisation, or
                    whose character n-gram Jaccard similarity to one is >= curate.near_duplicate_threshold

Limits: near duplicates are only looked for within a prompt (O(sum of k^2) comparisons, k samples
per prompt).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Iterable, Sequence

from iwsft.data.conversation import completion_content, exact_key


def near_duplicate_key(text: str) -> str:
    """Lowercased, whitespace collapsed, punctuation dropped except '-' and '.' (they change a
    number: -3 vs 3, 1.5 vs 15)."""
    kept = "".join(char for char in text.lower() if char.isalnum() or char.isspace() or char in "-.")
    return " ".join(kept.split())


def char_ngrams(text: str, n: int) -> frozenset[str]:
    """The set of length-n substrings; a text shorter than n is its own single gram, so short
    texts still compare (exactly)."""
    if len(text) < n:
        return frozenset({text})
    return frozenset(text[start : start + n] for start in range(len(text) - n + 1))


def jaccard(first: frozenset, second: frozenset) -> float:
    union = first | second
    return len(first & second) / len(union) if union else 1.0


def pair_key(record: dict) -> tuple:
    """The (prompt, completion) key exact duplicates are compared on: surrounding whitespace ignored
    (curation's normalize rule; in the key only, the text is kept)."""
    prompt, completion = exact_key(record["prompt"]), completion_content(record["completion"])
    return (prompt.strip(), completion.strip())


def first_occurrence_mask(keys: Iterable[Hashable]) -> list[bool]:
    """True for the first record with each key."""
    seen: set = set()
    mask = []
    for key in keys:
        mask.append(key not in seen)
        seen.add(key)
    return mask


def near_duplicate_mask(records: Sequence[dict], ngram: int, threshold: float) -> list[bool]:
    """False for a completion too close to an earlier kept completion of the same prompt."""
    kept_by_prompt: dict[str, list[tuple[str, frozenset]]] = defaultdict(list)
    mask = []
    for record in records:
        key = near_duplicate_key(completion_content(record["completion"]))
        grams = char_ngrams(key, ngram)
        kept = kept_by_prompt[exact_key(record["prompt"])]
        is_duplicate = any(key == other_key or jaccard(grams, other_grams) >= threshold for other_key, other_grams in kept)
        if not is_duplicate:
            kept.append((key, grams))
        mask.append(not is_duplicate)
    return mask
