"""register: every trained model becomes a version of one registered model; the best one becomes
`champion` only if it beats the current champion (or, the first time, the base model) by the
margin, with the CI taken into account (iwsft.promotion). Writes reports/registry.json.

- Needs the registry: with MLFLOW_TRACKING_URI set to a server that does not answer, it stops
  before writing anything, naming the URI and `make serve`. Without MLFLOW_TRACKING_URI it uses the
  project's local store (mlruns/mlflow.db).
- Re-running on the same inputs creates no version (content hashes) and moves no alias.
- A version rolled back by hand is not promoted again automatically: `iwsft registry promote N`.
- The decision and its reasons go to stdout, reports/registry.json, the candidate version's tags
  and the register run (metrics challenger_*, incumbent_*, delta*; tag promotion_decision).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from iwsft.errors import UserError
from iwsft.promotion import Decision, Score, best_candidate, decide, decode_per_prompt, encode_per_prompt
from iwsft.registry import CANDIDATE, CHAMPION, PREVIOUS, Registry, RegistryConfig, version_score
from iwsft.schema import read_jsonl, write_json_atomic
from iwsft.stages import DATA, REPORTS, model_dir
from iwsft.tracking import display_uri, git_state, stage_run

OUT = REPORTS / "registry.json"


def eval_set_fingerprint(params: dict) -> str:
    """What makes two evaluations comparable: the same prompts, sampling settings and seed."""
    prompts = Path(params["curate"]["eval_prompts"]).read_bytes()
    settings = json.dumps({"evaluate": params["evaluate"], "seed": params["seed"]}, sort_keys=True)
    return hashlib.sha256(prompts + settings.encode()).hexdigest()[:16]


def per_prompt_successes(method: str, samples_per_prompt: int) -> str:
    """evaluate's samples as a tag value (iwsft.promotion.encode_per_prompt); "" when they do not fit.

    samples.jsonl holds n rows per eval prompt, in eval-file order, so row i belongs to prompt i // n
    (prompts are not unique keys: the eval file may repeat one).
    """
    path = DATA / "evaluate" / method / "samples.jsonl"
    if not path.is_file() or not 0 < samples_per_prompt < 36:
        return ""
    rewards = [int(row["reward"]) for row in read_jsonl(path)]
    if not rewards or len(rewards) % samples_per_prompt:
        return ""
    counts = [sum(rewards[i:i + samples_per_prompt]) for i in range(0, len(rewards), samples_per_prompt)]
    encoded = encode_per_prompt(counts, samples_per_prompt)
    return encoded if len(encoded) <= 5000 else ""  # the registry's tag columns may be 5000 characters


def _metrics(method: str) -> dict:
    path = DATA / "evaluate" / method / "metrics.json"
    if not path.is_file():
        raise UserError(f"{path} is missing: run `dvc repro evaluate@{method}` first")
    return json.loads(path.read_text())


CARD_METRICS = ("pass_at_1", "pass_at_1_ci_low", "pass_at_1_ci_high", "greedy_accuracy", "maj_at_k")


def model_card(method: str, metrics: dict, params: dict, eval_set: str, commit: str, name: str) -> str:
    """The version's description and the logged model's model_card.md: what it is, from what, how good."""
    fingerprint = DATA / "reference" / "fingerprint.json"
    data = json.loads(fingerprint.read_text()) if fingerprint.is_file() else {}
    rows = "\n".join(f"| {key} | {metrics[key]:.4f} |" for key in CARD_METRICS if key in metrics)
    base = params["model"]["base"]
    return f"""---
tags: [iwsft, importance-weighted-sft, text-generation]
base_model: {base}
---
# {name}: {method}

Fine-tuned from `{base}` with `{method}` (iwsft pipeline, git commit `{commit[:12]}`).
Training data fingerprint: `{data.get("data_sha256", "unknown")[:16]}` ({data.get("examples", "?")} examples);
base model weights `{data.get("model_sha256", "unknown")[:16]}`.

Held-out evaluation: eval set `{eval_set}`, {metrics.get("n_prompts", "?")} prompts x \
{metrics.get("n_samples", "?")} samples at T={params["evaluate"]["temperature"]}.

| metric | value |
|---|---|
{rows}

Use: `iwsft generate --model models:/{name}@champion --prompt "12+7="`
"""


def run(params: dict) -> dict:
    config = RegistryConfig.from_params(params)
    scores = {method: _metrics(method) for method in (config.baseline, *config.candidates)}
    per_prompt = {m: per_prompt_successes(m, int(scores[m].get("n_samples", 0))) for m in scores}
    eval_set = eval_set_fingerprint(params)
    with stage_run("register", params, sections=["registry"], required=True) as tracked:
        if tracked is None:
            raise UserError("the register stage needs MLflow: unset IWSFT_TRACKING=off")
        registry = Registry.connect(config.model_name, tracked.client, tracked.uri)
        # every candidate first: aliases move only once all of them are in
        versions, created = _register_all(registry, config, params, scores, per_prompt, eval_set, tracked.run_id)
        best = best_candidate({m: scores[m] for m in config.candidates}, config.metric)
        chosen, champion = versions[best], registry.by_alias(CHAMPION)
        base, candidate = (Score.from_metrics(scores[m], config.metric, eval_set, decode_per_prompt(per_prompt[m]))
                           for m in (config.baseline, best))
        decision, compared = _decide(config, chosen, champion, base, candidate, best)
        registry.set_alias(CANDIDATE, chosen.version)
        if compared:  # "already the champion" / "rolled back" must not overwrite the version's own story
            registry.tag_version(chosen.version, {"iwsft.decision": "promoted" if decision.promote else "kept",
                                                  "iwsft.decision_reason": decision.reason})
        if decision.promote:
            registry.promote(chosen.version, decision.reason)
        aliases = registry.aliases()
        result = {
            "promoted": decision.promote, "reason": decision.reason, "model_name": config.model_name,
            "candidate": {"method": best, "version": str(chosen.version), **_summary(scores[best], config.metric)},
            "incumbent": _incumbent(champion, scores[config.baseline], config),
            "delta": decision.delta, "delta_ci_low": decision.delta_ci_low, "delta_ci_high": decision.delta_ci_high,
            "margin": config.margin, "champion": aliases.get(CHAMPION), "previous_champion": aliases.get(PREVIOUS),
            "versions": {m: {"version": str(v.version), "new": created[m], "run_id": v.run_id,
                             **_summary(scores[m], config.metric)} for m, v in versions.items()},
            "run_id": tracked.run_id, "tracking_uri": display_uri(tracked.uri),
        }
        tracked.log_metrics({f"challenger_{config.metric}": scores[best][config.metric],
                             "promoted": int(decision.promote), "delta": decision.delta,
                             "delta_ci_low": decision.delta_ci_low})  # None values are skipped
        tracked.set_tags({"promotion_decision": "promoted" if decision.promote else "kept",
                          "promotion_reason": decision.reason, "iwsft.candidate_version": chosen.version})
    write_json_atomic(OUT, result)
    verb = "promoted to champion" if decision.promote else "not promoted"
    listed = ", ".join(f"{m}=v{v.version}" + ("" if created[m] else " (existing)") for m, v in versions.items())
    print(f"register: {config.model_name} v{chosen.version} ({best}) {verb}: {decision.reason}")
    print(f"register: champion v{result['champion'] or '-'}, "
          f"previous-champion v{result['previous_champion'] or '-'}; versions {listed}")
    return result


def _register_all(registry, config, params, scores, per_prompt, eval_set, run_id) -> tuple[dict, dict]:
    """{method: version}, {method: newly created?} for every candidate (existing ones are reused)."""
    commit, _ = git_state()
    example = read_jsonl(params["curate"]["eval_prompts"])[0]["prompt"]
    versions, created = {}, {}
    for method in config.candidates:
        card = model_card(method, scores[method], params, eval_set, commit, config.model_name)
        tags = {"iwsft.git_commit": commit, "iwsft.base_model": params["model"]["base"],
                "iwsft.per_prompt": per_prompt[method] or None}
        versions[method], created[method] = registry.register(
            model_dir(method, params), method, scores[method], eval_set, run_id, card, tags=tags,
            input_example=example, trust_remote_code=params["model"]["trust_remote_code"])
    return versions, created


def _decide(config: RegistryConfig, chosen, champion, base: Score, candidate: Score,
            best: str) -> tuple[Decision, bool]:
    """(decision, whether the rule compared two models)."""
    name = f"v{chosen.version} ({best})"
    if champion is not None and str(champion.version) == str(chosen.version):
        return Decision(False, f"{name} is already the champion"), False
    if chosen.tags.get("iwsft.rolled_back") == "true":
        return Decision(False, f"{name} was rolled back by hand; promote it with "
                               f"`iwsft registry promote {chosen.version}`"), False
    incumbent = version_score(champion, config.metric) if champion is not None else None
    if champion is not None and incumbent is None:
        return Decision(False, f"champion v{champion.version} has no recorded {config.metric} to compare with: kept; "
                               f"promote by hand with `iwsft registry promote {chosen.version}`"), True
    return decide(candidate, incumbent, base, config.margin, config.z, name,
                  f"champion v{champion.version}" if champion is not None else "champion"), True


def _summary(metrics: dict, metric: str) -> dict:
    return {metric: metrics[metric], "ci": [metrics.get(f"{metric}_ci_low"), metrics.get(f"{metric}_ci_high")]}


def _incumbent(champion, base_metrics: dict, config: RegistryConfig) -> dict:
    if champion is None:
        return {"kind": "base", **_summary(base_metrics, config.metric)}
    score = version_score(champion, config.metric)
    return {"kind": "champion", "version": str(champion.version),
            **({config.metric: score.value, "ci": [score.ci_low, score.ci_high]} if score else {})}
