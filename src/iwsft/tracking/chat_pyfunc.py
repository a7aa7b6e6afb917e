"""The registered model as users call it: `mlflow.pyfunc.load_model(...).predict` and `mlflow models serve`.

iwsft.tracking.model_logging copies this file into every logged model (code/iwsft_chat_pyfunc.py) and makes
it the model's pyfunc loader; the transformers flavor beside it is unchanged (safetensors weights in model/,
the tokenizer in components/tokenizer/, an adapter in peft/). So it imports only torch, transformers and,
for an adapter, peft: a serving environment needs no iwsft. Nothing is pickled.

Prompts are rendered the way the model was trained (iwsft.encoding.chat.ChatFormat), recorded at logging
time in the pyfunc config: `chat_template` (None: plain completion, as the demo's char model) and
`end_of_turn_id` (e.g. SmolLM2's <|im_end|>), where a reply ends.

Inputs, and what comes back:
- {"messages": [{"role": "user", "content": "..."}, ...], "max_tokens": 64, "temperature": 0}: one chat
  (OpenAI-style; what `mlflow models serve` passes for a JSON body with "messages") -> an OpenAI
  chat.completion dict, the reply in choices[0].message.content. Needs a chat template.
- {"prompt": "..."}: one completion -> an OpenAI text_completion dict (choices[0].text).
- a string, a list of strings (or a one-column DataFrame / array of them): each one the user's message
  when there is a template, the raw text otherwise -> a list of reply strings (only what the model
  wrote, not the prompt).
- a list of message lists -> a list of reply strings.
Generation: greedy by default (temperature 0); temperature > 0 draws at that temperature and nothing else
(no top-k / top-p from the model's generation_config), as iwsft's own sampling. max_tokens (or
max_new_tokens) defaults to the config's max_new_tokens.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

DEFAULTS = {"chat_template": None, "end_of_turn_id": None, "max_new_tokens": 256, "trust_remote_code": False}


class ModelInputError(MlflowException):
    """A request this model cannot answer: MLflow's server answers 400 with this message (not a stack trace)."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def _load_pyfunc(path, model_config=None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, config = Path(path), {**DEFAULTS, **(model_config or {})}
    tokenizer_dir = root / "components" / "tokenizer"
    trust = bool(config["trust_remote_code"])
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir if tokenizer_dir.is_dir() else root / "model",
                                              local_files_only=True, trust_remote_code=trust)
    gpu = torch.cuda.is_available()  # a GPU host serves in the weights' own dtype; a CPU in float32
    model = AutoModelForCausalLM.from_pretrained(root / "model", local_files_only=True, use_safetensors=True,
                                                 trust_remote_code=trust, dtype="auto" if gpu else torch.float32)
    if (root / "peft").is_dir():  # logged as base + adapter (peft.merge: false)
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, root / "peft").merge_and_unload()
    return ChatLM(model.to("cuda" if gpu else "cpu").eval(), tokenizer, config)


def _text(content) -> str:
    """A message's content: a string, or OpenAI's list of parts ({"type": "text", "text": ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    raise ModelInputError(f"a message's content must be a string or a list of text parts, not {type(content).__name__}")


def _messages(value) -> list[dict]:
    if hasattr(value, "tolist"):  # numpy array from a DataFrame cell
        value = value.tolist()
    if not isinstance(value, list) or not all(isinstance(m, dict) and "role" in m for m in value):
        raise ModelInputError('"messages" must be a list of {"role": ..., "content": ...} objects')
    return [{"role": str(m["role"]), "content": _text(m.get("content", ""))} for m in value]


def _aliased(settings: dict) -> dict:
    """transformers' name max_new_tokens for OpenAI's max_tokens."""
    settings = dict(settings)
    if "max_new_tokens" in settings:
        settings["max_tokens"] = settings.pop("max_new_tokens")
    return settings


def _is_chat(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) for m in value)


class ChatLM:
    def __init__(self, model, tokenizer, config: dict):
        self.model, self.tokenizer, self.config = model, tokenizer, {**DEFAULTS, **config}
        self.template = self.config["chat_template"]
        eos = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
        configured = getattr(model.generation_config, "eos_token_id", None)
        configured = [configured] if isinstance(configured, int) else list(configured or [])
        turn = [] if self.config["end_of_turn_id"] is None else [int(self.config["end_of_turn_id"])]
        self.stops = list(dict.fromkeys(turn + [int(i) for i in configured] + eos))

    # --- rendering
    def render(self, prompt) -> str:
        """The text the model continues: the chat rendering up to the assistant's turn, or the plain text."""
        if self.template is None:
            if not isinstance(prompt, str):
                raise ModelInputError("this model was trained without a chat template: send plain strings "
                                      '(or {"prompt": ...}), not messages')
            return prompt
        messages = _messages(prompt) if not isinstance(prompt, str) else [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(messages, chat_template=self.template, add_generation_prompt=True,
                                                  tokenize=False)

    def generate(self, prompt, max_new_tokens: int, temperature: float) -> dict:
        import torch
        from transformers import GenerationConfig

        text = self.render(prompt)
        # a rendered template writes its own BOS; a plain prompt gets the tokenizer's special tokens
        ids = self.tokenizer(text, add_special_tokens=self.template is None, return_tensors="pt")["input_ids"]
        sampling = temperature > 0
        # only temperature shapes a draw: the generation_config's top-k / top-p are switched off
        draw = {"temperature": temperature, "top_k": 0, "top_p": 1.0} if sampling else {}
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sampling, repetition_penalty=1.0,
                                  eos_token_id=self.stops, pad_token_id=self.stops[0], **draw)
        with torch.no_grad():
            ids = ids.to(self.model.device)
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
        new = out[0, ids.shape[1]:].tolist()
        cut = next((i for i, token in enumerate(new) if token in self.stops), None)
        kept = new if cut is None else new[:cut]
        return {"text": self.tokenizer.decode(kept, skip_special_tokens=True), "prompt_tokens": ids.shape[1],
                "completion_tokens": len(kept), "finish_reason": "length" if cut is None else "stop"}

    # --- MLflow's entry point
    def predict(self, data, params=None):
        settings = _aliased(params or {})  # the signature's params: max_tokens, temperature (with defaults)
        if isinstance(data, dict):
            request = dict(data)
            body = {k: request.pop(k) for k in ("messages", "prompt") if k in request}
            settings.update(_aliased({k: v for k, v in request.items() if v is not None}))  # the body's win
            max_new, temperature = self._settings(settings)
            if len(body) != 1:
                raise ModelInputError('a request body needs exactly one of "messages" or "prompt"')
            if "messages" in body:
                return self._chat_response(self.generate(_messages(body["messages"]), max_new, temperature))
            prompt = body["prompt"]
            prompt = prompt[0] if isinstance(prompt, list) and len(prompt) == 1 else prompt
            if not isinstance(prompt, str):
                raise ModelInputError('"prompt" must be one string')
            return self._completion_response(self.generate(prompt, max_new, temperature))
        max_new, temperature = self._settings(settings)
        return [self.generate(p, max_new, temperature)["text"] for p in self._prompts(data)]

    def _settings(self, settings: dict) -> tuple[int, float]:
        max_new = settings.get("max_tokens", self.config["max_new_tokens"])
        temperature = settings.get("temperature", 0.0)
        try:
            return int(max_new), float(temperature or 0.0)
        except (TypeError, ValueError):
            raise ModelInputError(f"max_tokens must be an integer and temperature a number, "
                                  f"not {max_new!r} / {temperature!r}") from None

    @staticmethod
    def _prompts(data) -> list:
        if hasattr(data, "columns"):  # a DataFrame: its one column (or "prompt" / "messages")
            column = next((c for c in ("prompt", "messages") if c in data.columns), None)
            if column is None and len(data.columns) != 1:
                raise ModelInputError(f"a table input needs one column, or a 'prompt' column; got {list(data.columns)}")
            data = data[column or data.columns[0]].tolist()
        elif hasattr(data, "tolist"):  # a Series or numpy array
            data = data.tolist()
        if isinstance(data, str):
            return [data]
        if _is_chat(data):  # one conversation, given as its message list
            return [data]
        if isinstance(data, list) and all(isinstance(p, str) or _is_chat(p) for p in data):
            return data
        raise ModelInputError("expected a string, a list of strings, a list of message lists, or "
                              '{"messages": [...]}')

    def _chat_response(self, result: dict) -> dict:
        return {**self._envelope("chat.completion", result),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                             "finish_reason": result["finish_reason"]}]}

    def _completion_response(self, result: dict) -> dict:
        return {**self._envelope("text_completion", result),
                "choices": [{"index": 0, "text": result["text"], "finish_reason": result["finish_reason"]}]}

    def _envelope(self, kind: str, result: dict) -> dict:
        return {"id": f"iwsft-{uuid.uuid4().hex[:16]}", "object": kind, "created": int(time.time()),
                "model": self.config.get("model_name") or "iwsft",
                "usage": {"prompt_tokens": result["prompt_tokens"], "completion_tokens": result["completion_tokens"],
                          "total_tokens": result["prompt_tokens"] + result["completion_tokens"]}}
