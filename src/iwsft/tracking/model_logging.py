"""How a model directory becomes an MLflow model: the transformers flavor (safetensors weights, a model
card) with explicit pip requirements (without them MLflow adds torchvision and crashes, STACK.md §3), and
a pyfunc that answers as the model was trained (iwsft.tracking.chat_pyfunc): the chat template the
pipeline rendered prompts with, OpenAI-style `messages` in and the assistant's reply out, plain strings
as the user's turn; plain completion for a model without a template. An adapter directory
(peft.merge: false) is logged as base + adapter. Every call is retried on transient errors
(iwsft.tracking.retry).

Why a pyfunc loader of our own beside the transformers flavor, not the flavor's `llm/v1/chat` task: that
task's signature refuses plain strings, renders with the tokenizer's template only (not a
model.chat_template file, nor "none") and stops on EOS, not the template's end of turn. The loader is a
file copied into the model (code/), not a pickled object; the weights stay safetensors in model/, where
the transformers flavor and iwsft.tracking.registry.load_from_registry read them. The model has no
input schema: it takes both a string list and a messages body, which one MLflow schema cannot say; its
params (max_tokens, temperature) are declared.
"""

from __future__ import annotations

import logging
import shutil
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

from iwsft.tracking.retry import with_retries

REQUIREMENTS = ("mlflow", "torch", "transformers", "tokenizers", "safetensors")
LOADER = "iwsft_chat_pyfunc"  # chat_pyfunc.py's name inside a logged model's code/ folder


def requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in REQUIREMENTS]


def pyfunc_config(tokenizer, chat_template: str, trust: bool) -> dict:
    """What the logged model's pyfunc needs to render and stop as the pipeline did (iwsft.encoding.chat)."""
    from iwsft.encoding.chat import ChatFormat

    chat = ChatFormat.from_setting(chat_template, tokenizer)
    return {"chat_template": chat.template, "end_of_turn_id": int(chat.end_of_turn_id) if chat.is_chat else None,
            "trust_remote_code": trust}


def with_chat_loader(path: Path, mlflow_model, config: dict) -> None:
    """Make a saved transformers-flavor model's pyfunc our chat loader (see the module docstring)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec

    from iwsft.tracking.chat_pyfunc import DEFAULTS

    code = Path(path) / "code"
    code.mkdir(exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("chat_pyfunc.py"), code / f"{LOADER}.py")
    pyfunc = mlflow_model.flavors["python_function"]
    pyfunc.update(loader_module=LOADER, code="code", config=config)
    # no input schema: the flavor's text-generation one would refuse a messages body; the generation
    # settings as params, so that MLflow passes them on (it drops params a signature does not declare)
    mlflow_model.signature = ModelSignature(inputs=None, params=ParamSchema([
        ParamSpec("max_tokens", "long", config.get("max_new_tokens", DEFAULTS["max_new_tokens"])),
        ParamSpec("temperature", "double", 0.0)]))
    mlflow_model.save(str(Path(path) / "MLmodel"))


def _flavor(config: dict):
    """Model.log's flavor argument: the transformers flavor's save_model, then with_chat_loader."""
    import mlflow.transformers

    def save_model(path, mlflow_model, **kwargs):
        mlflow.transformers.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
        with_chat_loader(path, mlflow_model, config)

    return SimpleNamespace(__name__=mlflow.transformers.__name__, save_model=save_model)


def log_transformers_model(uri: str, client, model_dir: Path, method: str, run_id: str, card: str,
                           input_example: str, trust: bool, chat_template: str = "auto"):
    """Log `model_dir` into run `run_id` as an MLflow transformers model with the chat pyfunc; returns
    MLflow's ModelInfo. chat_template: params.yaml's model.chat_template (auto | none | a Jinja file)."""
    import mlflow
    from huggingface_hub import ModelCard
    from mlflow.models import Model

    from iwsft.model.adapters import base_of, is_adapter_directory
    from iwsft.model.artifacts import load_model, load_tokenizer

    # MLflow looks for a license on the hub under the model's name_or_path: a relative path such as
    # models/sft reads as a repo id and costs ~23 s of HTTP retries online; an absolute path is no
    # repo id, so the lookup ends at once. It then warns that no license was found: the license is
    # the user's business, so its warnings are quieted (errors still show).
    logging.getLogger("mlflow.transformers").setLevel(logging.ERROR)
    # An adapter directory (peft.merge: false) is registered as base + adapter: the base as the model
    # (MLflow's own PEFT path would save the base with the adapter layers injected into it), the
    # adapter beside it in peft/, which load_from_registry and the pyfunc apply. Weights as saved, not upcast.
    adapter = Path(model_dir) if is_adapter_directory(model_dir) else None
    model, tokenizer = load_model(Path(base_of(adapter) if adapter else model_dir).resolve(), trust, dtype="auto")
    if adapter:
        tokenizer = load_tokenizer(adapter, trust)
    config = {**pyfunc_config(tokenizer, chat_template, trust), "model_name": method}  # a reply's "model"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # no input example: MLflow would infer a signature from it and load the model once more to check it
    with mlflow.start_run(run_id=run_id):  # the fluent API needs an active run; ours, resumed
        info = with_retries(
            Model.log, None, _flavor(config), name=f"model-{method}",
            transformers_model={"model": model, "tokenizer": tokenizer}, task="text-generation",
            model_card=ModelCard(card), pip_requirements=requirements(),
            metadata={"iwsft_method": method, "iwsft_example_prompt": input_example})
    if adapter:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        location = with_retries(client.get_logged_model, info.model_id).artifact_location
        with_retries(get_artifact_repository(location).log_artifacts, str(adapter), "peft")
    return info
