"""How many tokens a prompt and a completion take: what curation's length rule and the curated gate count;
and whether a record's sampled `completion_ids` are the model's (`completion_ids_problem`).

Tokenized as the model sees them, through the one tokenization of iwsft.encoding.chat: a prompt
rendered by `ChatFormat` (a plain string too, when there is a chat template), a completion as its
text (a conversational one: its assistant message's content), without special tokens. Light: no
torch, so the curate stage and `iwsft gate curated` stay quick to start.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from iwsft.data.conversation import completion_content, describe


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


def vocabulary_size(tokenizer) -> int:
    """How many ids the tokenizer has, added tokens included: every id it can decode is below this."""
    return len(tokenizer)


def decoded_completion(tokenizer, completion_ids: list[int]) -> str:
    """What `completion_ids` decode to, special tokens (the stop token) left out: the text the ids stand
    for. The reference stage's check (iwsft.encoding.sequences.misdecoded) compares the same."""
    return tokenizer.decode(list(completion_ids), skip_special_tokens=True)


def completion_ids_problem(tokenizer, record: dict, model: str = "model.base") -> str | None:
    """What is wrong with a record's `completion_ids` for `tokenizer` (the model's, named `model` in the
    message), None when they are its ids and decode to the record's completion. An id outside the
    vocabulary is refused before decoding: some decode to "" (and would pass the text check, then fail
    the forward pass), others make the tokenizer raise."""
    ids = record.get("completion_ids")
    if ids is None:
        return None
    size = vocabulary_size(tokenizer)
    for position, token in enumerate(ids):
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < size:
            return (f"holds token id {describe(token)} (position {position}), outside the vocabulary of {model} "
                    f"(ids 0 to {size - 1})")
    decoded, completion = decoded_completion(tokenizer, ids), completion_content(record["completion"])
    if decoded == completion:
        return None
    return (f"decodes to {decoded[:40]!r}{'...' if len(decoded) > 40 else ''} with the tokenizer of {model}, not to field "
            f"'completion' ({completion[:40]!r}{'...' if len(completion) > 40 else ''}): sample them with this model "
            "(`iwsft sample`) or drop completion_ids to re-tokenize the text")
