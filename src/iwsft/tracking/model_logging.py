"""How a model directory becomes an MLflow model: the transformers flavor (safetensors weights, a
text-generation signature, an input example, a model card) with explicit pip requirements (without
them MLflow adds torchvision and crashes, STACK.md §3). An adapter directory (peft.merge: false) is
logged as base + adapter. Every call is retried on transient errors (iwsft.tracking.retry).
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

from iwsft.tracking.retry import with_retries

REQUIREMENTS = ("mlflow", "torch", "transformers", "tokenizers", "safetensors")


def requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in REQUIREMENTS]


def log_transformers_model(uri: str, client, model_dir: Path, method: str, run_id: str, card: str,
                           input_example: str, trust: bool):
    """Log `model_dir` into run `run_id` as an MLflow transformers model; returns MLflow's ModelInfo."""
    import mlflow
    import mlflow.transformers
    from huggingface_hub import ModelCard
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from iwsft.model.adapters import base_of, is_adapter_directory
    from iwsft.model.artifacts import load_model, load_tokenizer

    # MLflow looks for a license on the hub under the model's name_or_path: a relative path such as
    # models/sft reads as a repo id and costs ~23 s of HTTP retries online; an absolute path is no
    # repo id, so the lookup ends at once. It then warns that no license was found: the license is
    # the user's business, so its warnings are quieted (errors still show).
    logging.getLogger("mlflow.transformers").setLevel(logging.ERROR)
    # An adapter directory (peft.merge: false) is registered as base + adapter: the base as the model
    # (MLflow's own PEFT path would save the base with the adapter layers injected into it), the
    # adapter beside it in peft/, which load_from_registry applies. Weights as saved, not upcast.
    adapter = Path(model_dir) if is_adapter_directory(model_dir) else None
    model, tokenizer = load_model(Path(base_of(adapter) if adapter else model_dir).resolve(), trust, dtype="auto")
    if adapter:
        tokenizer = load_tokenizer(adapter, trust)
    signature = ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("string")]))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with mlflow.start_run(run_id=run_id):  # the fluent API needs an active run; ours, resumed
        info = with_retries(
            mlflow.transformers.log_model, {"model": model, "tokenizer": tokenizer}, name=f"model-{method}",
            task="text-generation", signature=signature, input_example=[input_example],
            model_card=ModelCard(card), pip_requirements=requirements(), metadata={"iwsft_method": method})
    if adapter:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        location = with_retries(client.get_logged_model, info.model_id).artifact_location
        with_retries(get_artifact_repository(location).log_artifacts, str(adapter), "peft")
    return info
