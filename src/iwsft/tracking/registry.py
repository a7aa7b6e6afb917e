"""The MLflow model registry: log and register models, move the aliases, roll back, load by alias.

Features:
- One registered model (params `registry.model_name`); aliases, never the deprecated stages:
  `candidate` (the best model of the latest register run), `champion` (the one to use),
  `previous-champion` (what `rollback` restores). The registered model's tag
  `iwsft.champion_history` lists the champions in order, so rollback can go back more than once.
- A model is logged with the transformers flavor (iwsft.tracking.model_logging: safetensors weights,
  text-generation signature, an input example, a model card, explicit pip requirements).
- A version is a model: its `iwsft.content_hash` is the hash of its files, the one evaluate writes
  into metrics.json as `model_sha256` (iwsft.model.hashing). Registering the same weights again, even
  evaluated on another eval set, returns the existing version and logs no second copy of the weights;
  the evaluation is added to that version. The hash travels in the create call itself, so a version
  never exists without it. (Versions registered before this rule hashed the metrics too; they are
  found by their `iwsft.model_sha256` tag.)
- One result per eval set on each version: tags `eval.<eval set>.<key>` (EVAL_KEYS: pass@1, its
  display CI and unclipped standard error `pass_at_1_se`, the per-prompt results `per_prompt`, ...),
  keyed by the register stage's eval-set fingerprint. The same keys without the prefix (`pass_at_1`,
  `iwsft.per_prompt`, `iwsft.eval_set`) repeat the latest register run's result, the one its decision
  used. The promotion rule reads a version on the current eval set only (version_score(v, eval_set=)).
  Re-evaluating the same weights on the same eval set with other numbers replaces that set's result.
- Reliable: every call is retried on transient errors (iwsft.tracking.retry.with_retries, 3 tries,
  backoff 0.5 s, 1 s); aliases move only after every candidate is registered; promote moves
  `previous-champion` before `champion`, so an interruption leaves the old champion in place.
- Loading by alias downloads the artifacts and loads them with iwsft.model.artifacts (safetensors only,
  trust_remote_code from params), not with MLflow's loader, which trusts remote code for
  architectures transformers does not know.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from iwsft.errors import UserError
from iwsft.model.hashing import directory_sha256
from iwsft.tracking.model_logging import log_transformers_model
from iwsft.tracking.evaluations import eval_tags, eval_tags_of, latest_tags, same_numbers
from iwsft.tracking.retry import is_transient, with_retries
from iwsft.tracking.store import resolve_uri

CANDIDATE, CHAMPION, PREVIOUS = "candidate", "champion", "previous-champion"
HISTORY_TAG = "iwsft.champion_history"

@dataclass
class Registry:
    client: object
    uri: str
    name: str

    @classmethod
    def connect(cls, name: str, client=None, uri: str | None = None) -> "Registry":
        """The registry at MLFLOW_TRACKING_URI (or the local store); a server that does not answer
        raises TrackingUnavailable naming it and `make serve`, before anything is written."""
        if client is None:
            from mlflow.tracking import MlflowClient

            uri = resolve_uri()
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return cls(client, uri, name)

    # --- reading ---
    def other_models(self) -> list[str]:
        """The names of the store's other registered models (e.g. a profile's own `registry.model_name`)."""
        found = with_retries(self.client.search_registered_models)
        return sorted(model.name for model in found if model.name != self.name)

    def versions(self) -> list:
        from mlflow.exceptions import MlflowException

        try:
            found = with_retries(self.client.search_model_versions, f"name = '{self._quoted}'")
        except MlflowException as error:
            if _missing(error):
                return []
            raise
        return sorted(found, key=lambda v: int(v.version), reverse=True)

    def aliases(self) -> dict[str, str]:
        """alias -> version (search_model_versions leaves aliases out)."""
        model = self._model()
        return dict(model.aliases) if model is not None else {}

    def by_alias(self, alias: str):
        from mlflow.exceptions import MlflowException

        try:
            return with_retries(self.client.get_model_version_by_alias, self.name, alias)
        except MlflowException as error:
            if _missing(error):
                return None
            raise

    def get(self, version: str | int):
        from mlflow.exceptions import MlflowException

        try:
            return with_retries(self.client.get_model_version, self.name, str(version))
        except MlflowException as error:
            if _missing(error):
                raise UserError(f"{self.name} has no version {version} (see `iwsft registry show`)") from None
            raise

    def find(self, digest: str):
        return next((v for v in self.versions() if v.tags.get("iwsft.content_hash") == digest), None)

    def find_model(self, model_sha256: str):
        """The version holding these weights (the oldest, should a store from before this rule hold two)."""
        same = [v for v in self.versions() if model_sha256 in (v.tags.get("iwsft.content_hash"),
                                                                v.tags.get("iwsft.model_sha256"))]
        return same[-1] if same else None

    def history(self) -> list[str]:
        model = self._model()
        text = (model.tags.get(HISTORY_TAG, "") if model is not None else "")
        return [v for v in text.split(",") if v]

    # --- writing ---
    def register(self, model_dir: Path, method: str, metrics: dict, eval_set: str, run_id: str, card: str,
                 tags: dict, input_example: str, trust_remote_code: bool = False, per_prompt: str = "",
                 model_sha256: str | None = None, chat_template: str = "auto"):
        """(version, created, evaluated): the version of these weights (created: new, logged now) with this
        evaluation on it (evaluated: it was not there before, as these numbers). `model_sha256`: the
        directory's hash when the caller has it (the register stage checked it), else computed."""
        digest = model_sha256 or directory_sha256(model_dir)
        evaluation = eval_tags(eval_set, metrics, per_prompt, run_id)
        latest = latest_tags(eval_set, metrics, per_prompt)
        existing = self.find_model(digest)
        if existing is not None:
            known = eval_tags_of(existing, eval_set)
            evaluated = not same_numbers(known, evaluation)
            wanted = {**latest, **(evaluation if evaluated else {})}
            update = {k: v for k, v in wanted.items() if v and existing.tags.get(k) != v}
            stale = [k for k, v in wanted.items() if not v and k in existing.tags]
            stale += [k for k in known if evaluated and k not in evaluation]  # e.g. per_prompt no longer known
            if update or stale:
                self.tag_version(existing.version, update)
                for key in stale:
                    with_retries(self.client.delete_model_version_tag, self.name, str(existing.version), key)
                existing = self.get(existing.version)
            return existing, False, evaluated
        self._ensure_model()
        info = self._log_model(model_dir, method, run_id, card, input_example, trust_remote_code, chat_template)
        version_tags = {**{k: str(v) for k, v in tags.items() if v is not None}, **evaluation,
                        **{k: v for k, v in latest.items() if v}, "iwsft.method": method,
                        "iwsft.model_sha256": digest, "iwsft.content_hash": digest}
        return self._create_version(info, run_id, version_tags, card, digest), True, True

    def set_alias(self, alias: str, version) -> None:
        with_retries(self.client.set_registered_model_alias, self.name, alias, str(version))

    def tag_version(self, version, tags: dict) -> None:
        for key, value in tags.items():
            with_retries(self.client.set_model_version_tag, self.name, str(version), key, str(value)[:5000])

    def promote(self, version, reason: str) -> dict:
        """champion -> `version`; the old champion becomes previous-champion. No-op if already champion."""
        version = str(self.get(version).version)
        current = self.by_alias(CHAMPION)
        if current is not None and str(current.version) == version:
            return {"changed": False, "champion": version, "previous_champion": self.aliases().get(PREVIOUS)}
        if current is not None:  # first, so that an interruption leaves champion where it was
            self.set_alias(PREVIOUS, current.version)
        self.set_alias(CHAMPION, version)
        history = self._consistent_history(current)
        self._set_history(history + [version])
        self.tag_version(version, {"iwsft.promoted_at": _now(), "iwsft.promotion_reason": reason,
                                   "iwsft.rolled_back": "false"})
        return {"changed": True, "champion": version, "previous_champion": current.version if current else None}

    def rollback(self) -> dict:
        """champion -> previous-champion; previous-champion -> the champion before that (if any)."""
        previous, current = self.by_alias(PREVIOUS), self.by_alias(CHAMPION)
        if previous is None or current is None or previous.version == current.version:
            raise UserError(f"{self.name} has no previous-champion to roll back to (see `iwsft registry show`)")
        history = self._consistent_history(current)[:-1]  # drop the current champion
        if not history or history[-1] != str(previous.version):
            history.append(str(previous.version))
        self.set_alias(CHAMPION, previous.version)
        if len(history) >= 2:
            self.set_alias(PREVIOUS, history[-2])
        else:
            with_retries(self.client.delete_registered_model_alias, self.name, PREVIOUS)
        self._set_history(history)
        self.tag_version(current.version, {"iwsft.rolled_back": "true", "iwsft.rolled_back_at": _now()})
        return {"champion": str(previous.version), "demoted": str(current.version),
                "previous_champion": history[-2] if len(history) >= 2 else None}

    # --- helpers ---
    @property
    def _quoted(self) -> str:
        return self.name.replace("'", "\\'")

    def _model(self):
        from mlflow.exceptions import MlflowException

        try:
            return with_retries(self.client.get_registered_model, self.name)
        except MlflowException as error:
            if _missing(error):
                return None
            raise

    def _ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        if self._model() is None:
            try:
                with_retries(self.client.create_registered_model, self.name,
                             description="iw-SFT models from the iwsft pipeline (aliases: champion, candidate).")
            except MlflowException as error:  # created by a concurrent run in the meantime
                if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code):
                    raise

    def _consistent_history(self, current) -> list[str]:
        """The history tag, unless aliases were moved by hand (UI): then what the aliases say."""
        history = self.history()
        if current is None:
            return []
        if not history or history[-1] != str(current.version):
            previous = self.aliases().get(PREVIOUS)
            champion = str(current.version)
            history = ([str(previous)] if previous and str(previous) != champion else []) + [champion]
        return history

    def _set_history(self, history: list[str]) -> None:
        with_retries(self.client.set_registered_model_tag, self.name, HISTORY_TAG, ",".join(history[-50:]))

    def _log_model(self, model_dir: Path, method: str, run_id: str, card: str, input_example: str, trust: bool,
                   chat_template: str = "auto"):
        # the template the model was trained with (params.yaml's model.chat_template), so that it answers as trained
        return log_transformers_model(self.uri, self.client, model_dir, method, run_id, card, input_example, trust,
                                      chat_template)

    def _create_version(self, info, run_id: str, tags: dict, card: str, digest: str):
        """create_model_version, retried without duplicates: a lost answer to a create that worked
        is found by its content hash before trying again."""
        for attempt in range(3):
            try:
                return self.client.create_model_version(self.name, info.model_uri, run_id=run_id, tags=tags,
                                                        description=card, model_id=info.model_id)
            except Exception as error:  # noqa: BLE001
                if attempt == 2 or not is_transient(error):
                    raise
                time.sleep(0.5 * 2 ** attempt)
                made = self.find(digest)
                if made is not None:
                    return made


def _missing(error) -> bool:
    """Not there (yet): the model, the version or the alias. An unknown alias is INVALID_PARAMETER_VALUE
    in the SQL store and RESOURCE_DOES_NOT_EXIST over REST, hence the message check."""
    code = str(getattr(error, "error_code", ""))
    return "RESOURCE_DOES_NOT_EXIST" in code or (code.endswith("INVALID_PARAMETER_VALUE") and "not found" in str(error))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def load_from_registry(uri: str, trust_remote_code: bool = False):
    """(model, tokenizer) for models:/NAME@ALIAS, models:/NAME/VERSION or runs:/... (safetensors only)."""
    import mlflow
    import torch
    from mlflow.exceptions import MlflowException
    from transformers import AutoModelForCausalLM

    from iwsft.model.artifacts import load_tokenizer

    tracking = resolve_uri()
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    with tempfile.TemporaryDirectory(prefix="iwsft-model-") as scratch:
        try:
            local = Path(with_retries(mlflow.artifacts.download_artifacts, uri, dst_path=scratch))
        except MlflowException as error:
            if _missing(error) or "not found" in str(error).lower():
                raise UserError(f"{uri} does not exist in {tracking}: see `iwsft registry show`; `champion` is set "
                                f"by the register stage (`dvc repro`) or `iwsft registry promote VERSION`") from None
            raise
        weights = local / "model" if (local / "model").is_dir() else local  # the transformers flavor's layout
        tokenizer_dir = local / "components" / "tokenizer"
        tokenizer = load_tokenizer(tokenizer_dir if tokenizer_dir.is_dir() else weights, trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(weights, trust_remote_code=trust_remote_code,
                                                     local_files_only=True, use_safetensors=True, dtype=torch.float32)
        if (local / "peft").is_dir():  # logged as base + adapter (peft.merge: false): MLflow's PEFT layout
            from iwsft.model.adapters import load_adapted

            model = load_adapted(model, local / "peft")
    return model, tokenizer
