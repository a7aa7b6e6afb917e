"""register: every trained model (params.yaml `methods:`) becomes a version of one registered model.
The best-looking one (highest pass@1) gets the alias `candidate`; `champion` moves only through the
corrected test of iwsft.tracking.promotion: every candidate against the current champion (the first time,
the base model), one-sided, paired per eval prompt, Holm-corrected at alpha = 1 - registry.confidence;
the best of the significant ones is promoted. An exact tie (the same pass@1, or the same per-prompt
successes) is reported as a tie and goes to the simpler method, then to the first in `methods:`
(iwsft.tracking.promotion.TIE_RULE; SFT before iw-SFT): equal results do not justify an extra
ingredient. Writes reports/registry.json.

- Metrics must belong to the model on disk: each metrics.json carries the `model_sha256` of the
  directory evaluate scored; register recomputes it for every candidate and the base model, and a
  mismatch (or metrics from before the hash existed) stops it before anything is registered, naming
  the file, the directory and `dvc repro evaluate@METHOD`.
- Needs the registry: with MLFLOW_TRACKING_URI set to a server that does not answer, it stops
  before writing anything, naming the URI and `make serve`. Without MLFLOW_TRACKING_URI it uses the
  project's local store (mlruns/mlflow.db).
- A version is a model (the hash of its files, iwsft.tracking.registry): weights registered before
  get no second version and no second copy; this run's evaluation is added to their version, keyed
  by the eval-set fingerprint (eval_set_fingerprint: the eval file's bytes, evaluate's settings, the
  seed). The decision compares results on this eval set only: the champion's own result on it
  (recorded when its weights are among this run's models), else it is not comparable and is kept.
- Re-running on the same inputs creates no version and moves no alias: when no version and no
  evaluation is new and the champion is one of them, there is nothing to decide.
- A version rolled back by hand is not a candidate for champion again: `iwsft registry promote N`.
- The decision and its reasons go to stdout, reports/registry.json (with every candidate's test),
  the tested versions' tags (iwsft.decision, iwsft.decision_reason, iwsft.p_adjusted) and the
  register run (metrics challenger_*, delta*, p_*; tag promotion_decision).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from iwsft.config.schema import Params, Registry as RegistrySettings
from iwsft.errors import UserError
from iwsft.model.hashing import directory_sha256
from iwsft.methods import evaluate_stage
from iwsft.tracking.per_prompt import decode_per_prompt, encode_per_prompt
from iwsft.tracking.promotion import TIE_RULE, Decision, Score, decide, ranked
from iwsft.tracking.evaluations import version_score
from iwsft.tracking.registry import CANDIDATE, CHAMPION, PREVIOUS, Registry
from iwsft.data.records import read_jsonl
from iwsft.io.durable import write_json_atomic
from iwsft.stages import DATA, REPORTS, model_dir, per_prompt_successes
from iwsft.tracking.lineage import git_state
from iwsft.tracking.runs import stage_run
from iwsft.tracking.store import display_uri

OUT = REPORTS / "registry.json"


def eval_set_fingerprint(params: Params) -> str:
    """What makes two evaluations comparable: the same prompts, sampling settings and seed."""
    prompts = Path(params.curate.eval_prompts).read_bytes()
    # log_samples only says how much of the table goes to MLflow; the results do not depend on it
    evaluate = params.evaluate.model_dump(exclude={"log_samples"})
    settings = json.dumps({"evaluate": evaluate, "seed": params.seed}, sort_keys=True)
    return hashlib.sha256(prompts + settings.encode()).hexdigest()[:16]


def per_prompt_tag(method: str, samples_per_prompt: int) -> str:
    """evaluate's per-prompt successes as a tag value (iwsft.tracking.promotion.encode_per_prompt); "" when they do not fit."""
    counts = per_prompt_successes(method, samples_per_prompt) if 0 < samples_per_prompt < 36 else []
    if not counts:
        return ""
    encoded = encode_per_prompt(counts, samples_per_prompt)
    return encoded if len(encoded) <= 5000 else ""  # the registry's tag columns may be 5000 characters


def _metrics(method: str) -> dict:
    path = DATA / "evaluate" / method / "metrics.json"
    if not path.is_file():
        raise UserError(f"{path} is missing: run `dvc repro {evaluate_stage(method)}` first")
    return json.loads(path.read_text())


def candidate_methods(params: Params, config: RegistrySettings) -> tuple:
    """The pipeline's methods (params.yaml `methods:`, required by the schema), in order, without the baseline."""
    methods = params.methods
    # the baseline is the bar, never a candidate against itself; a repeated name is one candidate
    return tuple(dict.fromkeys(str(m) for m in methods if str(m) != config.baseline))


def check_model_hashes(params: Params, scores: dict) -> None:
    """Refuse metrics that were not computed for the model on disk (see the module docstring)."""
    problems = []
    for method, metrics in scores.items():
        path, directory = DATA / "evaluate" / method / "metrics.json", model_dir(method, params)
        recorded = metrics.get("model_sha256")
        try:
            actual = directory_sha256(directory)
        except FileNotFoundError:
            problems.append(f"{directory} (the model {path} scored) is missing: run `dvc repro` first")
            continue
        if not recorded:
            problems.append(f"{path} has no model_sha256 (it comes from an older evaluate run), so nothing says it "
                            f"scored {directory}: run `dvc repro {evaluate_stage(method)}`")
        elif recorded != actual:
            problems.append(f"{path} was computed for another model than {directory} (model_sha256 {recorded[:12]} "
                            f"in the metrics, {actual[:12]} on disk: the model changed after it was evaluated): "
                            f"run `dvc repro {evaluate_stage(method)}`")
    if problems:
        raise UserError("metrics do not match the models; nothing was registered:\n  " + "\n  ".join(problems))


CARD_METRICS = ("pass_at_1", "pass_at_1_ci_low", "pass_at_1_ci_high", "pass_at_1_se", "greedy_accuracy", "maj_at_k")


def model_card(method: str, metrics: dict, params: Params, eval_set: str, commit: str, name: str) -> str:
    """The version's description and the logged model's model_card.md: what it is, from what, how good."""
    fingerprint = DATA / "reference" / "fingerprint.json"
    data = json.loads(fingerprint.read_text()) if fingerprint.is_file() else {}
    rows = "\n".join(f"| {key} | {metrics[key]:.4f} |" for key in CARD_METRICS if metrics.get(key) is not None)
    base = params.model.base
    return f"""---
tags: [iwsft, importance-weighted-sft, text-generation]
base_model: {base}
---
# {name}: {method}

Fine-tuned from `{base}` with `{method}` (iwsft pipeline, git commit `{commit[:12]}`).
Training data fingerprint: `{data.get("data_sha256", "unknown")[:16]}` ({data.get("examples", "?")} examples);
base model weights `{data.get("model_sha256", "unknown")[:16]}`.

Held-out evaluation: eval set `{eval_set}`, {metrics.get("n_prompts", "?")} prompts x \
{metrics.get("n_samples", "?")} samples at T={params.evaluate.temperature}.

| metric | value |
|---|---|
{rows}

Use: `iwsft generate --model models:/{name}@champion --prompt "12+7="`
"""


def run(params: Params) -> dict:
    config = params.registry
    methods = candidate_methods(params, config)
    scores = {method: _metrics(method) for method in (config.baseline, *methods)}
    check_model_hashes(params, scores)  # before MLflow: a refused run leaves no trace in the registry
    per_prompt = {m: per_prompt_tag(m, int(scores[m].get("n_samples", 0))) for m in scores}
    eval_set = eval_set_fingerprint(params)
    with stage_run("register", params, sections=["methods", "registry"]) as tracked:
        if tracked is None:
            raise UserError("the register stage needs MLflow: unset IWSFT_TRACKING=off")
        registry = Registry.connect(config.model_name, tracked.client, tracked.uri)
        # every candidate first: aliases move only once all of them are in
        versions, created, evaluated = _register_all(registry, config, params, methods, scores, per_prompt,
                                                     eval_set, tracked.run_id)
        order = ranked({m: scores[m] for m in methods}, config.metric)  # best-looking first
        best, champion = order[0], registry.by_alias(CHAMPION)
        labels = {f"v{versions[m].version} ({m})": m for m in order}
        scored = {label: Score.from_metrics(scores[m], config.metric, eval_set, decode_per_prompt(per_prompt[m]))
                  for label, m in labels.items()}
        base = Score.from_metrics(scores[config.baseline], config.metric, eval_set,
                                  decode_per_prompt(per_prompt[config.baseline]))
        decision = _decide(config, labels, versions, {m: created[m] or evaluated[m] for m in methods}, champion,
                           scored, base)
        winner = labels.get(decision.winner)
        about = labels.get(decision.about, best)
        registry.set_alias(CANDIDATE, versions[best].version)
        for row in decision.tests:  # only the versions the rule compared: others keep their own story
            registry.tag_version(versions[labels[row["name"]]].version, {
                "iwsft.decision": "promoted" if labels[row["name"]] == winner else "kept",
                "iwsft.decision_reason": row["reason"],
                **({"iwsft.p_adjusted": repr(row["p_adjusted"])} if row["p_adjusted"] is not None else {})})
        if winner is not None:
            registry.promote(versions[winner].version, decision.reason)
        aliases = registry.aliases()
        result = {
            "promoted": decision.promote, "reason": decision.reason, "model_name": config.model_name,
            "candidate": {"method": best, "version": str(versions[best].version),  # the best-looking one
                          **_summary(scores[best], config.metric)},
            "winner": {"method": winner, "version": str(versions[winner].version)} if winner else None,
            "about": about, "incumbent": _incumbent(champion, scores[config.baseline], config, eval_set),
            "eval_set": eval_set,
            "delta": decision.delta, "delta_ci_low": decision.delta_ci_low, "delta_ci_high": decision.delta_ci_high,
            "p_value": decision.p_value, "p_adjusted": decision.p_adjusted, "n_tested": decision.n_tested,
            "tie": ({"methods": [labels[name] for name in decision.tied], "rule": decision.tie_rule}
                    if decision.tied else None),
            "tests": {labels[row["name"]]: {k: v for k, v in row.items() if k != "name"} for row in decision.tests},
            "margin": config.margin, "confidence": config.confidence,
            "champion": aliases.get(CHAMPION), "previous_champion": aliases.get(PREVIOUS),
            "versions": {m: {"version": str(v.version), "new": created[m], "new_evaluation": evaluated[m],
                             "run_id": v.run_id,
                             **_summary(scores[m], config.metric)} for m, v in versions.items()},
            "run_id": tracked.run_id, "tracking_uri": display_uri(tracked.uri),
        }
        tracked.log_metrics({f"challenger_{config.metric}": scores[about][config.metric],
                             "promoted": int(decision.promote), "delta": decision.delta,
                             "delta_ci_low": decision.delta_ci_low, "p_value": decision.p_value,
                             "p_adjusted": decision.p_adjusted, "n_tested": decision.n_tested})  # None: skipped
        tracked.set_tags({"promotion_decision": "promoted" if decision.promote else "kept",
                          "promotion_reason": decision.reason, "iwsft.candidate_version": versions[best].version,
                          "iwsft.promoted_version": versions[winner].version if winner else None})
    write_json_atomic(OUT, result)
    verb = "promoted to champion" if decision.promote else "not promoted"
    notes = {m: "" if created[m] else " (existing, evaluation added)" if evaluated[m] else " (existing)"
             for m in versions}
    listed = ", ".join(f"{m}=v{v.version}{notes[m]}" for m, v in versions.items())
    print(f"register: {config.model_name} v{versions[about].version} ({about}) {verb}: {decision.reason}")
    print(f"register: champion v{result['champion'] or '-'}, previous-champion v{result['previous_champion'] or '-'}, "
          f"candidate v{versions[best].version} ({best}); versions {listed}")
    return result


def _register_all(registry, config, params, methods, scores, per_prompt, eval_set, run_id) -> tuple:
    """{method: version}, {method: newly created?}, {method: this evaluation new on it?} for every
    candidate (the versions of weights registered before are reused)."""
    commit, _ = git_state()
    example = read_jsonl(params.curate.eval_prompts)[0]["prompt"]
    versions, created, evaluated = {}, {}, {}
    for method in methods:
        card = model_card(method, scores[method], params, eval_set, commit, config.model_name)
        tags = {"iwsft.git_commit": commit, "iwsft.base_model": params.model.base}
        versions[method], created[method], evaluated[method] = registry.register(
            model_dir(method, params), method, scores[method], eval_set, run_id, card, tags=tags,
            input_example=example, trust_remote_code=params.model.trust_remote_code, per_prompt=per_prompt[method],
            model_sha256=scores[method]["model_sha256"], chat_template=params.model.chat_template)  # check_model_hashes made sure it is the directory's
    return versions, created, evaluated


def _decide(config: RegistrySettings, labels: dict, versions: dict, new: dict, champion,
            scored: dict, base: Score) -> Decision:
    """The rule of iwsft.tracking.promotion over the candidates that may become champion.

    Left out of the test: the champion itself (it is the bar), and versions rolled back by hand
    (a person decided against them; `iwsft registry promote N` brings one back). Which versions
    these are is known before any metric is looked at, so leaving them out keeps Holm's guarantee.
    """
    current = str(champion.version) if champion is not None else None
    notes, contenders = [], {}
    for label, method in labels.items():
        version = str(versions[method].version)
        if version == current:
            notes.append(f"{label} is already the champion")
        elif versions[method].tags.get("iwsft.rolled_back") == "true":
            notes.append(f"{label} was rolled back by hand; promote it with `iwsft registry promote {version}`")
        else:
            contenders[label] = scored[label]
    best = next(iter(labels))
    if current in {str(v.version) for v in versions.values()} and not any(new.values()):
        # the same versions and results as the run that made (or kept) this champion: deciding again
        # could only re-litigate that decision with a smaller family, so an unchanged input changes nothing
        return Decision(False, "; ".join(notes) + ": no candidate is new, nothing to decide, kept", about=best)
    if not contenders:
        return Decision(False, "; ".join(notes) + ": no other candidate to test, kept", about=best)
    if champion is not None:
        # only results on this eval set count; a champion without one is compared with its latest, on
        # another eval set, which the rule refuses as not comparable (and says so)
        incumbent = version_score(champion, config.metric, base.eval_set) or version_score(champion, config.metric)
        if incumbent is None:
            return Decision(False, f"champion v{champion.version} has no recorded {config.metric} to compare with: "
                                   f"kept; promote by hand with `iwsft registry promote VERSION`", about=best)
    else:
        incumbent = None
    decision = decide(contenders, incumbent, base, config.margin, config.confidence,
                      f"champion v{champion.version}" if champion is not None else "champion", TIE_RULE)
    if notes:
        decision = replace(decision, reason=f"{decision.reason}; not tested: {'; '.join(notes)}")
    return decision


def _summary(metrics: dict, metric: str) -> dict:
    return {metric: metrics[metric], "ci": [metrics.get(f"{metric}_ci_low"), metrics.get(f"{metric}_ci_high")],
            "se": metrics.get(f"{metric}_se")}


def _incumbent(champion, base_metrics: dict, config: RegistrySettings, eval_set: str) -> dict:
    if champion is None:
        return {"kind": "base", **_summary(base_metrics, config.metric)}
    score = version_score(champion, config.metric, eval_set) or version_score(champion, config.metric)
    return {"kind": "champion", "version": str(champion.version), "eval_set": score.eval_set if score else None,
            **({config.metric: score.value, "ci": [score.ci_low, score.ci_high], "se": score.se} if score else {})}
