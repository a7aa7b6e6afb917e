"""Loading a tokenizer without torch: what the stages that count or render tokens but load no model use.

`from transformers import AutoTokenizer` imports torch (its auto classes read model configs, and
those import torch): ~1.5 s of curate's start-up, for a stage that never builds a model. A tokenizer
saved by transformers 5 says in tokenizer_config.json which class it is; when that class is
`TokenizersBackend` (the tokenizer.json one: the demo's char model, SmolLM2, most fast tokenizers),
`load_tokenizer` builds that very class from transformers' own module, which needs no torch: the
same object AutoTokenizer returns, so the same ids and chat renderings (tests/unit/model/test_tokenizer_loading.py
compares both on the demo tokenizer and SmolLM2). Anything else (another class, remote code, an
`auto_map`) goes through AutoTokenizer as before.

Limits: the auto path also looks at config.json's model_type, and for a handful of model types whose
hub tokenizer_config names the wrong class (transformers' MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS)
it picks another class; such a model's config does not say TokenizersBackend once re-saved, but a raw
hub copy might: use `trust_remote_code` or a re-saved directory there.
"""

from __future__ import annotations

import json
from pathlib import Path

from iwsft.errors import UserError

TOKENIZERS_BACKEND = "TokenizersBackend"


def resolve_model_dir(name: str | Path) -> Path:
    """A local HF directory, or a hub id ("org/name") already in the local Hugging Face cache.

    Never a download at run time (HF_HUB_OFFLINE stays on): a missing model is a UserError that
    says how to fetch it once.
    """
    path = Path(name)
    if path.is_dir():
        return path
    text = str(name)
    if text.count("/") == 1 and not text.startswith((".", "/")):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(snapshot_download(text, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError):
            raise UserError(f"model {text!r} is neither a local directory nor in the local Hugging Face cache; "
                            f"download it once with `huggingface-cli download {text}` (or point model.base at "
                            f"a directory), then run again: nothing is downloaded at run time") from None
    raise UserError(f"model directory {path} does not exist (set model.base in params.yaml to a local HF "
                    f"directory or a hub id in your Hugging Face cache; `iwsft import-model` converts a GGUF file)")


def is_tokenizers_backend(directory: Path, trust_remote_code: bool = False) -> bool:
    """True when AutoTokenizer would build transformers' TokenizersBackend from `directory`'s
    tokenizer.json: its tokenizer_config.json names that class and no remote code."""
    config_path, tokenizer_json = directory / "tokenizer_config.json", directory / "tokenizer.json"
    if trust_remote_code or not (config_path.is_file() and tokenizer_json.is_file()):
        return False
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return False  # AutoTokenizer says what is wrong with it
    return config.get("tokenizer_class") == TOKENIZERS_BACKEND and "auto_map" not in config


def load_tokenizer(directory: str | Path, trust_remote_code: bool = False):
    """The tokenizer of a local HF directory (or a cached hub id), as AutoTokenizer loads it; without
    torch when it is a TokenizersBackend one."""
    directory = resolve_model_dir(directory)
    if is_tokenizers_backend(directory, trust_remote_code):
        from transformers.tokenization_utils_tokenizers import TokenizersBackend

        return TokenizersBackend.from_pretrained(directory, trust_remote_code=trust_remote_code, local_files_only=True)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code, local_files_only=True)
