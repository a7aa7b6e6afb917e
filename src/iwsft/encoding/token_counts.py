"""How many tokens a prompt and a completion take: what curation's length rule and the curated gate count.

Tokenized as the model sees them, through the one tokenization of iwsft.encoding.chat: a prompt
rendered by `ChatFormat` (a plain string too, when there is a chat template), a completion as its
text (a conversational one: its assistant message's content), without special tokens. Light: no
torch, so the curate stage and `iwsft gate curated` stay quick to start.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from iwsft.data.conversation import completion_content


class TokenLengths(NamedTuple):
    """How many tokens a prompt and a completion take: two counters, because a prompt is counted as the
    model sees it (rendered with its chat template) and a completion as its text."""

    prompt: Callable[[Any], int]
    completion: Callable[[Any], int]

    @classmethod
    def same(cls, count: Callable[[Any], int]) -> "TokenLengths":
        return cls(count, count)


def token_counter(tokenizer, chat) -> TokenLengths:
    """The TokenLengths of `tokenizer` with `chat` (an iwsft.encoding.chat.ChatFormat)."""
    return TokenLengths(
        prompt=lambda prompt: len(chat.prompt_ids(prompt)),
        completion=lambda completion: len(tokenizer(completion_content(completion), add_special_tokens=False)["input_ids"]),
    )
