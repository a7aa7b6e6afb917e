"""One result per eval set on a registered version: the tags `eval.<eval set>.<key>` that
iwsft.tracking.registry writes and the promotion rule reads (version_score), without MLflow.

The eval set is the register stage's fingerprint (iwsft.stages.register.eval_set_fingerprint: the eval
file's bytes, evaluate's settings, the seed): two results are comparable only under the same one.
"""

from __future__ import annotations

from iwsft.tracking.per_prompt import decode_per_prompt
from iwsft.tracking.promotion import Score

METRIC_TAGS = ("pass_at_1", "pass_at_1_ci_low", "pass_at_1_ci_high", "pass_at_1_se", "greedy_accuracy", "maj_at_k",
               "n_prompts")
EVAL_PREFIX = "eval."  # eval.<eval set>.<key>: one result per eval set (see the module docstring)
EVAL_KEYS = (*METRIC_TAGS, "per_prompt", "run_id")


def eval_tags(eval_set: str, metrics: dict, per_prompt: str = "", run_id: str | None = None) -> dict[str, str]:
    """A version's tags for one evaluation: `eval.<eval set>.<key>` for every EVAL_KEYS value there is."""
    values = {**{key: repr(float(metrics[key])) for key in METRIC_TAGS if metrics.get(key) is not None},
              "per_prompt": per_prompt or None, "run_id": run_id}
    return {f"{EVAL_PREFIX}{eval_set}.{key}": value for key, value in values.items() if value is not None}


def latest_tags(eval_set: str, metrics: dict, per_prompt: str = "") -> dict[str, str]:
    """The same result without the prefix: what the latest register run used ("" = remove the tag)."""
    return {**{key: repr(float(metrics[key])) for key in METRIC_TAGS if metrics.get(key) is not None},
            "iwsft.eval_set": eval_set, "iwsft.per_prompt": per_prompt or ""}


def eval_tags_of(version, eval_set: str) -> dict[str, str]:
    """A version's tags for its result on `eval_set`, as eval_tags writes them; {} when it has none."""
    return {f"{EVAL_PREFIX}{eval_set}.{key}": value for key, value in evaluations(version).get(eval_set, {}).items()}


def evaluations(version) -> dict[str, dict[str, str]]:
    """{eval set: {key: value}} of a version's `eval.<eval set>.<key>` tags."""
    found: dict[str, dict[str, str]] = {}
    for tag, value in version.tags.items():
        if tag.startswith(EVAL_PREFIX) and tag.count(".") >= 2:
            eval_set, key = tag[len(EVAL_PREFIX):].split(".", 1)
            found.setdefault(eval_set, {})[key] = value
    return found


def version_score(version, metric: str = "pass_at_1", eval_set: str | None = None) -> Score | None:
    """A version's recorded metric: on `eval_set` (None when it has no result there), else its latest
    (the unprefixed tags); None for a version registered outside this pipeline."""
    if eval_set is None:
        tags, eval_set, per_prompt = version.tags, version.tags.get("iwsft.eval_set", ""), "iwsft.per_prompt"
    else:
        tags, per_prompt = evaluations(version).get(eval_set), "per_prompt"
        if tags is None and version.tags.get("iwsft.eval_set") == eval_set:  # registered before eval.* tags
            tags, per_prompt = version.tags, "iwsft.per_prompt"
        if tags is None:
            return None
    try:
        return Score.from_metrics(tags, metric, eval_set, decode_per_prompt(tags.get(per_prompt, "")))
    except ValueError:
        return None


def same_numbers(known: dict, evaluation: dict) -> bool:
    """Whether two evaluations' tags hold the same numbers (the register run that recorded them may differ)."""
    def numbers(tags):
        return {key: value for key, value in tags.items() if not key.endswith(".run_id")}
    return numbers(known) == numbers(evaluation)
