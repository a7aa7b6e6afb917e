"""The control policies' side of the MLflow model registry: a thin adapter over
iwsft.tracking.registry.Registry, so that both domains share one client path (every call retried
on transient errors, iwsft.tracking.retry), the content-hash idempotence and the aliases.

What differs from a language model, and so lives here:
- the store: MLFLOW_TRACKING_URI's server (checked: a server that is down stops here), else the
  project's local store, the parent of control/ (the stages run in control/), beside the language runs;
- a version is a policy (safetensors + its json), logged as run artifacts under `policy/` rather than
  with the transformers flavor, in the experiment `register.experiment`;
- its content hash is sha256(policy weights + the evaluation returns as JSON): what identifies a
  control version, already on the versions registered so far (a new formula would register them again).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from iwsft.config.control import ControlParams
from iwsft.tracking.registry import Registry
from iwsft.tracking.retry import with_retries

DESCRIPTION = "iwsft control policies (tanh-Gaussian MLP, safetensors)"
LOGGED_SECTIONS = ("bc", "finetune", "evaluate")  # the params a version's run records


def client():
    """(MlflowClient, uri) for the store the control pipeline registers in."""
    import os

    from mlflow.tracking import MlflowClient

    from iwsft.tracking.server import local_store_uri
    from iwsft.tracking.store import resolve_uri

    uri = resolve_uri() if os.environ.get("MLFLOW_TRACKING_URI") else local_store_uri(Path.cwd().parent)
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def experiment(mlflow_client, name: str) -> str:
    """The experiment's id, created if need be: in the local store with its artifacts beside the
    language side's; on a server, in the server's own artifact store."""
    from iwsft.tracking.server import artifact_root

    found = with_retries(mlflow_client.get_experiment_by_name, name)
    if found is not None:
        return found.experiment_id
    if mlflow_client.tracking_uri.startswith("sqlite:"):
        location = (artifact_root(Path.cwd().parent) / name).as_uri()
        return with_retries(mlflow_client.create_experiment, name, artifact_location=location)
    return with_retries(mlflow_client.create_experiment, name)


def policy_hash(path: Path, returns) -> str:
    """A control version's `iwsft.content_hash`: its weights and the returns it was scored on."""
    return hashlib.sha256(path.read_bytes() + json.dumps(returns).encode()).hexdigest()


@dataclass
class PolicyRegistry(Registry):
    """One env's registered model `<register.model_prefix>-<env>`: find, alias and promote as
    Registry does; register a policy version here."""

    def register_policy(self, experiment_id: str, method: str, path: Path, tags: dict, result: dict,
                        params: ControlParams) -> tuple:
        """(version, created): the existing version for the same policy and returns, or a new one
        carrying `tags` and the content hash."""
        digest = policy_hash(path, result["returns"])
        existing = self.find(digest)
        if existing is not None:
            return existing, False
        self._ensure_model()
        run = self._log_policy_run(experiment_id, method, path, result, params)
        source = SimpleNamespace(model_uri=f"{run.info.artifact_uri}/policy", model_id=None)  # no logged model
        version_tags = {"iwsft.method": method, **tags, "iwsft.content_hash": digest}
        return self._create_version(source, run.info.run_id, version_tags, None, digest), True

    def _ensure_model(self) -> None:
        """Registry's own, with the control policies' description on the registered model."""
        from mlflow.exceptions import MlflowException

        if self._model() is None:
            try:
                with_retries(self.client.create_registered_model, self.name, description=DESCRIPTION)
            except MlflowException as error:  # created by a concurrent run in the meantime
                if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code):
                    raise

    def _log_policy_run(self, experiment_id: str, method: str, path: Path, result: dict, params: ControlParams):
        """A finished MLflow run holding the policy files, its evaluation and the training params."""
        run = with_retries(self.client.create_run, experiment_id, run_name=f"{method}-{result['run']}",
                           tags={"iwsft.method": method, "iwsft.env": result["env"], "iwsft.seed": str(result["seed"])})
        run_id = run.info.run_id
        for key in ("mean_return", "ci95", "normalised"):
            with_retries(self.client.log_metric, run_id, key, float(result[key]))
        for section in LOGGED_SECTIONS:
            for key, value in getattr(params, section).model_dump().items():
                with_retries(self.client.log_param, run_id, f"{section}.{key}", value)
        with tempfile.TemporaryDirectory() as staging:
            for suffix in (".safetensors", ".json"):
                Path(staging, "policy" + suffix).write_bytes(path.with_suffix(suffix).read_bytes())
            with_retries(self.client.log_artifacts, run_id, staging, "policy")
        with_retries(self.client.set_terminated, run_id)
        return run
