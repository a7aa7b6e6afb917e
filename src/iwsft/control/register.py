"""The register stage: each env's policies into the MLflow model registry (iwsft.tracking.runs's store,
the same one the language pipeline uses), with the language side's promotion rule
(iwsft.tracking.promotion.decide: one-sided tests, Holm over the candidates, paired when possible).

Per env, registered model `<register.model_prefix>-<env>`; one version per method (the policy of
the first seed in params `seeds`), tagged with its evaluation. Score: the normalised score per
evaluation episode; the episodes use fixed env seeds, so two policies are paired episode by
episode, as the language side pairs prompts. Incumbent: the `champion` alias if there is one, else
BC (= pi_ref, the base every other method starts from or is compared with). A candidate that beats
it significantly (params register.confidence, register.margin in score points) becomes champion."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from iwsft.control.stages import CURATED, METRICS, MODELS, normalised_score, run_name
from iwsft.tracking.promotion import Score, decide
from iwsft.data.records import write_json_atomic

CHAMPION = "champion"
CANDIDATES = ("bc10", "sftq", "iwsftq")


def _episode_score(per_episode, eval_set: str) -> Score:
    """Mean normalised score over evaluation episodes, with its standard error (None for one episode)."""
    per_episode = tuple(per_episode)
    value = float(np.mean(per_episode))
    se = float(np.std(per_episode, ddof=1) / np.sqrt(len(per_episode))) if len(per_episode) > 1 else None
    return Score(value, value, value, eval_set, per_episode, se)


def _score(result: dict, data: dict, eval_set: str) -> Score:
    return _episode_score((normalised_score(r, data["return_random"], data["return_best"]) for r in result["returns"]),
                          eval_set)


def _version_score(version, eval_set: str) -> Score | None:
    tags = version.tags
    if "iwsft.per_episode" not in tags:
        return None
    return _episode_score(json.loads(tags["iwsft.per_episode"]), tags.get("iwsft.eval_set", ""))


def _client():
    """MLFLOW_TRACKING_URI's server (checked: a server that is down stops here), else the project's
    local store (the parent of control/, where the language pipeline's store is)."""
    import os

    from mlflow.tracking import MlflowClient

    from iwsft.tracking.server import local_store_uri
    from iwsft.tracking.runs import resolve_uri

    uri = resolve_uri() if os.environ.get("MLFLOW_TRACKING_URI") else local_store_uri(Path.cwd().parent)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment(client, name: str) -> str:
    from iwsft.tracking.server import artifact_root

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if client.tracking_uri.startswith("sqlite:"):  # the local store: artifacts beside the language side's
        return client.create_experiment(name, artifact_location=(artifact_root(Path.cwd().parent) / name).as_uri())
    return client.create_experiment(name)  # a server: its own artifact store


def _register(client, experiment: str, model: str, method: str, path: Path, score: Score, result: dict, params: dict):
    from mlflow.exceptions import MlflowException

    digest = hashlib.sha256(path.read_bytes() + json.dumps(result["returns"]).encode()).hexdigest()
    try:
        client.get_registered_model(model)
    except MlflowException:
        client.create_registered_model(model, description="iwsft control policies (tanh-Gaussian MLP, safetensors)")
    for version in client.search_model_versions(f"name = '{model}'"):
        if version.tags.get("iwsft.content_hash") == digest:
            return version, False
    run = client.create_run(experiment, run_name=f"{method}-{result['run']}",
                            tags={"iwsft.method": method, "iwsft.env": result["env"], "iwsft.seed": str(result["seed"])})
    run_id = run.info.run_id
    for key, value in (("mean_return", result["mean_return"]), ("ci95", result["ci95"]), ("normalised", result["normalised"])):
        client.log_metric(run_id, key, float(value))
    for section in ("bc", "finetune", "evaluate"):
        for key, value in params[section].items():
            client.log_param(run_id, f"{section}.{key}", value)
    with tempfile.TemporaryDirectory() as staging:
        for suffix in (".safetensors", ".json"):
            source = path.with_suffix(suffix)
            Path(staging, "policy" + suffix).write_bytes(source.read_bytes())
        client.log_artifacts(run_id, staging, "policy")
    client.set_terminated(run_id)
    tags = {"iwsft.method": method, "iwsft.eval_set": score.eval_set, "iwsft.content_hash": digest,
            "iwsft.per_episode": json.dumps([round(v, 6) for v in score.per_prompt]), "iwsft.normalised": repr(score.value),
            "iwsft.mean_return": repr(float(result["mean_return"]))}
    version = client.create_model_version(model, f"{run.info.artifact_uri}/policy", run_id=run_id, tags=tags)
    return version, True


def run(params: dict) -> None:
    settings = params.get("register", {})
    confidence, margin = float(settings.get("confidence", 0.95)), float(settings.get("margin", 0.0))
    summary = json.loads((CURATED / "summary.json").read_text())
    client = _client()
    experiment = _experiment(client, settings.get("experiment", "iwsft-control"))
    seed = params["seeds"][0]
    outcome = {}
    for env_id, data in summary.items():
        name = run_name(env_id, seed)
        model = f"{settings.get('model_prefix', 'iwsft-control')}-{env_id}"
        evaluation = {"env": env_id, "seed": params["evaluate"]["seed"], "episodes": params["evaluate"]["episodes"]}
        eval_set = hashlib.sha256(json.dumps(evaluation, sort_keys=True).encode()).hexdigest()[:16]
        versions, scores = {}, {}
        for method in ("bc", *CANDIDATES):
            result = json.loads((METRICS / "eval" / f"{method}.json").read_text())[name]
            scores[method] = _score(result, data, eval_set)
            versions[method], _ = _register(client, experiment, model, method, MODELS / method / f"{name}.safetensors",
                                            scores[method], result, params)
        try:
            champion = client.get_model_version_by_alias(model, CHAMPION)
        except Exception:  # no alias yet
            champion = None
        champion_score = _version_score(champion, eval_set) if champion is not None else None
        decision = decide({m: scores[m] for m in CANDIDATES}, champion_score, scores["bc"], margin, confidence,
                          champion_name=f"the champion (version {champion.version})" if champion is not None else "the champion")
        if decision.promote:
            client.set_registered_model_alias(model, CHAMPION, versions[decision.winner].version)
        current = client.get_model_version_by_alias(model, CHAMPION).version if decision.promote or champion else None
        outcome[env_id] = {"model": model, "versions": {m: v.version for m, v in versions.items()}, "champion": current,
                           "promoted": decision.winner if decision.promote else None, "reason": decision.reason}
        print(f"control register: {model}: {outcome[env_id]['reason']}")
    write_json_atomic(METRICS / "register.json", outcome)
