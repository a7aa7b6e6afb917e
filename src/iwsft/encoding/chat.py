"""How a prompt becomes tokens: plainly (the demo's char model) or through the model's chat template.

One object, `ChatFormat`, used by every stage that tokenizes a prompt (sample and evaluate to
generate, reference and train through iwsft.encoding.sequences.encode_pair, the gates and curation to count
tokens), so that pi_ref is scored on the very tokens it was sampled from.

- `model.chat_template` in params.yaml: `auto` (the tokenizer's own template when it has one, else
  plain), `none` (plain), or a path to a Jinja file.
- Plain: prompt tokens = tokenizer(prompt) with its special tokens; a finished completion ends in EOS.
- Chat: the prompt, a string (the user's message) or a conversational message list (TRL's format,
  iwsft.data.conversation), is rendered with add_generation_prompt=True (the template's system prompt included), tokenized without adding special tokens again (the template
  writes BOS itself where it wants one). A finished completion ends in the template's end-of-turn
  token (e.g. SmolLM2's `<|im_end|>`), found by rendering a conversation, not guessed.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from iwsft.data.conversation import is_message_list
from iwsft.errors import DataError, UserError

if TYPE_CHECKING:
    from iwsft.config.schema import Params

SENTINEL = "\u2063iwsft-end-of-turn-probe\u2063"  # text no real answer contains


class ChatFormat:
    def __init__(self, tokenizer, template: str | None):
        self.tokenizer, self.template = tokenizer, template

    @classmethod
    def from_params(cls, params: Params, tokenizer) -> "ChatFormat":
        """The format params.yaml's model.chat_template names, for `tokenizer`."""
        return cls.from_setting(params.model.chat_template, tokenizer)

    @classmethod
    def from_setting(cls, setting: str, tokenizer) -> "ChatFormat":
        """auto | none | a path to a Jinja file (model.chat_template), for `tokenizer`."""
        if setting == "none":
            return cls(tokenizer, None)
        if setting == "auto":
            return cls(tokenizer, getattr(tokenizer, "chat_template", None) or None)
        path = Path(setting)
        if not path.is_file():
            raise UserError(f"params.yaml model.chat_template: {setting} is not a file (auto, none, or a Jinja file)")
        return cls(tokenizer, path.read_text())

    @property
    def is_chat(self) -> bool:
        return self.template is not None

    def prompt_text(self, prompt: str | list) -> str:
        """What the model is asked: the prompt itself, or its chat rendering up to the assistant's turn."""
        if not self.is_chat:
            if is_message_list(prompt):  # check_renderable names the file first; this is the last guard
                raise DataError("a conversational prompt (a message list) needs a chat template; "
                                "params.yaml model.chat_template is none or the tokenizer has none")
            return prompt
        messages = [dict(m) for m in prompt] if is_message_list(prompt) else [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(messages, chat_template=self.template,
                                                  add_generation_prompt=True, tokenize=False)

    def prompt_ids(self, prompt: str | list) -> list[int]:
        if not self.is_chat:
            return self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        return self.tokenizer(self.prompt_text(prompt), add_special_tokens=False)["input_ids"]

    @cached_property
    def end_of_turn_id(self) -> int:
        """EOS for plain prompts; for a chat template, the first token it writes after an assistant message."""
        eos = self.tokenizer.eos_token_id
        if not self.is_chat:
            return eos
        conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": SENTINEL}]
        text = self.tokenizer.apply_chat_template(conversation, chat_template=self.template, tokenize=False)
        after = text.split(SENTINEL, 1)[1] if SENTINEL in text else ""
        ids = self.tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
        return ids[0] if ids else eos


def check_renderable(records, chat: ChatFormat, source: str, lines=None, unit: str = "line") -> None:
    """DataError naming the first record (at its `unit` in `lines`, as the file's reader numbered it;
    default 1..N) whose message-list prompt this model cannot render (no chat template): a stage fails
    on it before loading or sampling anything, never guessing a format."""
    if chat.is_chat:
        return
    lines = list(lines) if lines is not None else range(1, len(records) + 1)
    for line, record in zip(lines, records):
        if is_message_list(record.get("prompt")):
            raise DataError(f"{source} {unit} {line} (id {record.get('id')!r}): field 'prompt' is a message list "
                            "(the conversational format), but this model's tokenizer has no chat template and "
                            "params.yaml model.chat_template does not name one. Set model.chat_template to a Jinja "
                            "file, or write the prompts as plain strings.")
