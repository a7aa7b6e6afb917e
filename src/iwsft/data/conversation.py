"""TRL's conversational prompt-completion format: checking message lists, and a record's texts.

Features:
- A conversational record has `prompt` = a list of {"role", "content"} messages (optional leading system
  messages, then user / assistant turns alternating, ending with the user's turn) and `completion` = a list of
  exactly one {"role": "assistant", "content": ...} message, as TRL's `is_conversational` datasets.
- `prompt_problem` / `completion_problem`: None for a valid value (a plain string or a message list), else a
  message fragment that follows "field 'prompt'" (schema.Problem adds the field, file, line and id).
- `is_conversational`, `completion_content`, `prompt_key_text`, `exact_key`: what the rest of the pipeline asks of a
  record, in one place.

Limits: both fields of a record must be the same kind (mixing a message-list prompt with a string completion is
rejected, so that "conversational" is a property of the record, not of a field); message content is text only
(no multimodal part lists), and a message holds only "role" and "content" (no tool calls, names): an extra key
would be rendered by some chat templates and ignored by others, so the trained tokens would depend on the template.
A key whose value is null says nothing (OpenAI exports write `"refusal": null`, a Parquet struct column gives
every message every key of any row): it is accepted and dropped (`without_null_keys`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from iwsft.data.numbers import NumberLiteral, describe_number

PROMPT_ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def describe(value: Any) -> str:
    """A value as the user wrote it (JSON spelling: null, true, NaN), short enough for one line."""
    number = describe_number(value) if isinstance(value, (int, NumberLiteral)) else None
    if number is not None:
        return number
    if value is None or isinstance(value, (bool, float)):
        return json.dumps(value) + (" (a boolean)" if isinstance(value, bool) else "")
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, str):
        return f"{value[:40]!r}{'...' if len(value) > 40 else ''} (a string)"
    return {list: "an array", tuple: "an array", dict: "an object"}.get(type(value), f"a {type(value).__name__}")


def unsafe_text_problem(text: str) -> str | None:
    # Both pass json.loads (as \u0000 and \ud800 escapes) but break tokenizers and UTF-8 writers.
    if "\x00" in text:
        return "contains a NUL character"
    return "contains an unpaired surrogate (not encodable as UTF-8)" if LONE_SURROGATE.search(text) else None


def text_problem(value: Any, expected: str = "a string") -> str | None:
    """None for a usable non-empty string, else what is wrong with `value`."""
    if value is None:
        return "is missing"
    if not isinstance(value, str) or isinstance(value, NumberLiteral):
        return f"must be {expected}, got {describe(value)}"
    if not value.strip():
        return "is empty" if not value else "is only whitespace"
    return unsafe_text_problem(value)


def is_message_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def is_conversational(record: dict) -> bool:
    """True for a record in the conversational format (its prompt is a message list)."""
    return is_message_list(record.get("prompt"))


def completion_content(completion: str | list) -> str:
    """The text a completion trains on: the string itself, or its one assistant message's content."""
    return completion[0]["content"] if is_message_list(completion) else completion


def prompt_key_text(prompt: str | list) -> str:
    """The text a prompt's comparison keys (dedupe, decontamination) are built from: the string itself,
    or the contents of its non-system messages, one per line: a system prompt every record shares
    says nothing about which problem a record is."""
    if not is_message_list(prompt):
        return prompt
    return "\n".join(message["content"] for message in prompt if message["role"] != "system")


def exact_key(value: str | list) -> str:
    """A hashable value that is equal only for an identical prompt or completion (system messages and
    roles included): what records are grouped by."""
    return json.dumps(value, ensure_ascii=False) if is_message_list(value) else value


def without_null_keys(value: str | list) -> str | list:
    """A valid prompt or completion as the pipeline keeps it: each message's null-valued keys dropped,
    so that no chat template sees them."""
    if not is_message_list(value):
        return value
    return [{key: item for key, item in message.items() if item is not None} for message in value]


def _message_problem(number: int, message: Any, roles: tuple[str, ...]) -> str | None:
    if not isinstance(message, dict):
        return f"message {number} must be an object with 'role' and 'content', got {describe(message)}"
    for key in MESSAGE_KEYS:
        if message.get(key) is None:
            return f"message {number} has no {key!r}"
    extra = sorted(str(key) for key, value in message.items() if key not in MESSAGE_KEYS and value is not None)
    if extra:
        return (f"message {number} has the key {extra[0]!r}; a message holds only 'role' and 'content' "
                "(other keys only when null)")
    role = message["role"]
    if not isinstance(role, str) or isinstance(role, NumberLiteral):
        return f"message {number} role must be a string, got {describe(role)}"
    if role not in roles:
        return f"message {number} has unknown role {role!r} (expected {' or '.join(repr(r) for r in roles)})"
    problem = text_problem(message["content"])
    return None if problem is None else f"message {number} content {problem}"


def _expected_role(position: int, first_turn: int) -> str:
    # after the leading system messages, turns alternate user, assistant, user, ...
    return "user" if (position - first_turn) % 2 == 0 else "assistant"


def prompt_problem(value: Any) -> str | None:
    """None for a valid prompt (a non-empty string, or a valid message list), else a message fragment."""
    if not is_message_list(value):
        return text_problem(value, expected="a string or a list of messages")
    if not value:
        return "is an empty message list"
    for number, message in enumerate(value, start=1):
        problem = _message_problem(number, message, PROMPT_ROLES)
        if problem:
            return problem
    roles = [message["role"] for message in value]
    first_turn = next((position for position, role in enumerate(roles) if role != "system"), len(roles))
    if first_turn == len(roles):
        return "has only system messages; a prompt needs a user message"
    for position in range(first_turn, len(roles)):
        expected = _expected_role(position, first_turn)
        if roles[position] != expected:
            where = " (system messages may only lead)" if roles[position] == "system" else ""
            return f"message {position + 1} has role {roles[position]!r} where {expected!r} was expected{where}"
    if roles[-1] != "user":
        return f"ends with an assistant message (message {len(roles)}); a prompt ends with the user's turn"
    return None


def completion_problem(value: Any) -> str | None:
    """None for a valid completion (a non-empty string, or a list of exactly one assistant message)."""
    if not is_message_list(value):
        return text_problem(value, expected="a string or a list of one assistant message")
    if len(value) != 1:
        return (f"holds {len(value)} messages; a conversational completion is a list of exactly one "
                "assistant message")
    return _message_problem(1, value[0], ("assistant",))


def record_kind_problem(record: dict) -> str | None:
    """For a record whose prompt and completion are each valid: a problem when they are not the same kind."""
    prompt_is_list, completion_is_list = is_message_list(record["prompt"]), is_message_list(record["completion"])
    if prompt_is_list == completion_is_list:
        return None
    have, other = ("a message list", "a string") if completion_is_list else ("a string", "a message list")
    return (f"is {have} while 'prompt' is {other}; a record is either conversational (both message lists) "
            "or plain (both strings)")
