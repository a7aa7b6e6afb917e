"""The register stage: each env's policies into the MLflow model registry (the language pipeline's
store and client path: iwsft.control.registry over iwsft.tracking.registry), with the language side's
promotion rule (iwsft.tracking.promotion.decide: one-sided tests, Holm over the candidates, paired
when possible).

Per env, registered model `<register.model_prefix>-<env>`; one version per method (the policy of
the first seed in params `seeds`), tagged with its evaluation. Score: the normalised score per
evaluation episode; the episodes use fixed env seeds, so two policies are paired episode by
episode, as the language side pairs prompts. Incumbent: the `champion` alias if there is one, else
BC (= pi_ref, the base every other method starts from or is compared with). A candidate that beats
it significantly (params register.confidence, register.margin in score points) becomes champion."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from iwsft.config.control import ControlParams
from iwsft.control.registry import PolicyRegistry, client, experiment
from iwsft.control.scores import normalised_score
from iwsft.control.stages import CURATED, METRICS, MODELS, run_name
from iwsft.io.durable import write_json_atomic
from iwsft.evaluation.stats import standard_error
from iwsft.methods import CONTROL_BASELINE, CONTROL_CANDIDATES, CONTROL_METHODS
from iwsft.tracking.promotion import Score, decide
from iwsft.tracking.registry import CHAMPION


def _episode_score(per_episode, eval_set: str) -> Score:
    """Mean normalised score over evaluation episodes, with its standard error (None for one episode)."""
    per_episode = tuple(per_episode)
    value = float(np.mean(per_episode))
    return Score(value, value, value, eval_set, per_episode, standard_error(per_episode))


def _score(result: dict, data: dict, eval_set: str) -> Score:
    return _episode_score((normalised_score(r, data["return_random"], data["return_best"]) for r in result["returns"]),
                          eval_set)


def _version_score(version) -> Score | None:
    tags = version.tags
    if "iwsft.per_episode" not in tags:
        return None
    return _episode_score(json.loads(tags["iwsft.per_episode"]), tags.get("iwsft.eval_set", ""))


def _tags(score: Score, result: dict) -> dict:
    """What the promotion rule needs of a version once it is the champion (_version_score reads it)."""
    return {"iwsft.eval_set": score.eval_set, "iwsft.per_episode": json.dumps([round(v, 6) for v in score.per_prompt]),
            "iwsft.normalised": repr(score.value), "iwsft.mean_return": repr(float(result["mean_return"]))}


def run(params: ControlParams) -> None:
    settings = params.register
    summary = json.loads((CURATED / "summary.json").read_text())
    mlflow_client, uri = client()
    experiment_id = experiment(mlflow_client, settings.experiment)
    seed = params.seeds[0]
    outcome = {}
    for env_id, data in summary.items():
        name = run_name(env_id, seed)
        registry = PolicyRegistry.connect(f"{settings.model_prefix}-{env_id}", client=mlflow_client, uri=uri)
        evaluation = {"env": env_id, "seed": params.evaluate.seed, "episodes": params.evaluate.episodes}
        eval_set = hashlib.sha256(json.dumps(evaluation, sort_keys=True).encode()).hexdigest()[:16]
        versions, scores = {}, {}
        for method in CONTROL_METHODS:
            result = json.loads((METRICS / "eval" / f"{method}.json").read_text())[name]
            scores[method] = _score(result, data, eval_set)
            versions[method], _ = registry.register_policy(experiment_id, method, MODELS / method / f"{name}.safetensors",
                                                           _tags(scores[method], result), result, params)
        champion = registry.by_alias(CHAMPION)
        champion_score = _version_score(champion) if champion is not None else None
        decision = decide({m: scores[m] for m in CONTROL_CANDIDATES}, champion_score, scores[CONTROL_BASELINE],
                          settings.margin, settings.confidence,
                          champion_name=f"the champion (version {champion.version})" if champion is not None else "the champion")
        if decision.promote:
            registry.set_alias(CHAMPION, versions[decision.winner].version)
        current = registry.by_alias(CHAMPION).version if decision.promote or champion else None
        outcome[env_id] = {"model": registry.name, "versions": {m: v.version for m, v in versions.items()}, "champion": current,
                           "promoted": decision.winner if decision.promote else None, "reason": decision.reason}
        print(f"control register: {registry.name}: {outcome[env_id]['reason']}")
    write_json_atomic(METRICS / "register.json", outcome)
