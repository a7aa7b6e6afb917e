"""The per-record curation rules: each looks at one record (or counts its tokens) and says keep or drop.

  empty_completion  the completion is empty or only whitespace
  unfinished        `finished` is false: cut at max_new_tokens (absent = finished)
  length            prompt tokens > max_prompt_tokens or completion tokens > max_completion_tokens
  verified          reward != 1 (the paper's D+); a record without a reward is dropped as unverified

Duplicates are iwsft.data.dedup's, contamination iwsft.data.decontaminate's; iwsft.data.curation
applies them all in order and counts what each drops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from iwsft.data.conversation import completion_content, exact_key

if TYPE_CHECKING:
    from iwsft.encoding.token_counts import TokenLengths


def has_completion(record: dict) -> bool:
    return bool(completion_content(record["completion"]).strip())


def is_finished(record: dict) -> bool:
    # absent (a user's text file) or null = finished: only an explicit false was cut off
    return record.get("finished") is not False


def is_verified(record: dict) -> bool:
    return record.get("reward") == 1


def within_length_mask(
    records: Sequence[dict],
    lengths: TokenLengths,
    max_prompt_tokens: int,
    max_completion_tokens: int,
) -> list[bool]:
    """False for a record over either limit: it is dropped, never cut (a truncated sequence would
    carry another weight)."""
    # K samples share a prompt: count each distinct prompt once.
    prompt_tokens: dict[str, int] = {}

    def prompt_length(prompt) -> int:
        key = exact_key(prompt)
        if key not in prompt_tokens:
            prompt_tokens[key] = lengths.prompt(prompt)
        return prompt_tokens[key]

    return [
        prompt_length(record["prompt"]) <= max_prompt_tokens
        and lengths.completion(record["completion"]) <= max_completion_tokens
        for record in records
    ]


def is_normalizable(record: dict) -> bool:
    """Whether whitespace normalisation changes this record's keys (reported, never applied)."""
    return any(isinstance(text, str) and text != text.strip() for text in (record["prompt"], record["completion"]))
