"""The expectations of every boundary, declared in code, one function per boundary.

Each returns {table name: [expectations]} for the frames that the boundary modules build
(iwsft.gates.raw, .eval_prompts, .curated, .quality, .reference, .evaluation). Numbers come from
params.yaml (iwsft.gates.settings): the `gates:` section and the knobs the data must honour
(curate's token limits, quality's percentiles, evaluate's sample counts). Each expectation carries a short
`description`: it is what a failure message and the data docs show a person.

GX semantics worth knowing (STACK.md 5): column-map expectations skip nulls, and pandas reads NaN
as null, so "finite" is not-null + between(-max float, +max float) (infinity is outside).
"""

from __future__ import annotations

import sys

import great_expectations.expectations as gxe

FINITE = {"min_value": -sys.float_info.max, "max_value": sys.float_info.max}


def _not_null(*columns: str) -> list:
    return [gxe.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} is present (not null or NaN)") for c in columns]


def _text(*columns: str) -> list:
    return [gxe.ExpectColumnValuesToMatchRegex(column=c, regex=r"\S", description=f"{c} is not empty or only whitespace")
            for c in columns]


def _unique_ids() -> list:
    return [gxe.ExpectColumnValuesToBeUnique(column="id", description="ids are unique")]


def eval_prompts(settings: dict, lookups: dict) -> dict:
    """Prompts that passed iwsft.data.eval_prompts: the same contract again, declaratively (ids unique,
    every prompt with an answer to score against)."""
    return {"prompts": [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, description="at least one held-out prompt"),
        *_not_null("id", "prompt", "answer"), *_unique_ids(), *_text("id", "prompt", "answer"),
    ]}


def raw(settings: dict, lookups: dict) -> dict:
    """Records that passed iwsft.data.records: the same contract again, declaratively, plus a minimum count."""
    return {"records": [
        gxe.ExpectTableRowCountToBeBetween(min_value=settings["min_records"],
                                           description=f"at least gates.raw.min_records={settings['min_records']} valid records"),
        *_not_null("id", "prompt", "completion"), *_unique_ids(), *_text("prompt", "completion"),
        gxe.ExpectColumnValuesToBeInSet(column="reward", value_set=[0, 1], description="reward is 0 or 1 where present"),
        gxe.ExpectColumnValuesToBeBetween(column="score", **FINITE, description="score is finite where present"),
        gxe.ExpectColumnValuesToBeBetween(column="ref_logprob", min_value=-sys.float_info.max, max_value=0,
                                          description="ref_logprob is a finite log-probability (<= 0) where present"),
        *_verifier_agreement(settings),
    ]}


def _verifier_agreement(settings: dict) -> list:
    """The file's reward against the task verifier's (only when the curate stage re-scored them):
    a disagreement above the threshold means the verifier is wrong for this data, or the rewards are."""
    verifier, fraction = settings.get("verifier"), settings.get("max_reward_disagreement", 0.05)
    if not verifier or fraction >= 1:
        return []
    return [gxe.ExpectColumnPairValuesToBeEqual(
        column_A="reward", column_B="verifier_reward", ignore_row_if="either_value_is_missing",
        mostly=round(1 - fraction, 12),  # rounded: 1 - 0.3 must not ask for 0.7000000000000001
        description=f"reward agrees with the {verifier!r} task's verifier on records with an answer (at most "
                    f"gates.raw.max_reward_disagreement={fraction} disagree; more: the verifier is probably wrong "
                    f"for this data, check it with iwsft score)")]


def curated(settings: dict, lookups: dict) -> dict:
    minimum = settings["min_examples"]
    expectations = [
        gxe.ExpectTableRowCountToBeBetween(min_value=minimum, description=f"at least gates.curated.min_examples={minimum} examples"),
        *_not_null("id", "prompt", "completion"), *_unique_ids(), *_text("prompt", "completion"),
        gxe.ExpectColumnValuesToBeBetween(column="prompt_tokens", min_value=1, max_value=settings["max_prompt_tokens"],
                                          description=f"prompt tokens <= curate.max_prompt_tokens={settings['max_prompt_tokens']}"),
        gxe.ExpectColumnValuesToBeBetween(column="completion_tokens", min_value=1, max_value=settings["max_completion_tokens"],
                                          description=f"completion tokens <= curate.max_completion_tokens={settings['max_completion_tokens']}"),
    ]
    if settings["require_reward"]:  # the plain methods train on D+ (PAPER.md Eq. 5): successes only
        expectations.append(gxe.ExpectColumnValuesToBeInSet(column="reward", value_set=[1], description="reward is 1 (curate.require_reward)"))
        expectations += _not_null("reward")
    fraction = settings["max_duplicate_fraction"]
    if fraction < 1:
        expectations.append(gxe.ExpectColumnValuesToBeInSet(
            column="repeat", value_set=[False], mostly=1 - fraction,
            description=f"at most gates.curated.max_duplicate_fraction={fraction} repeated (prompt, completion) pairs"))
    if settings["forbid_eval_prompts"]:
        expectations.append(gxe.ExpectColumnValuesToNotBeInSet(
            column="prompt_key", value_set=lookups["eval_prompt_keys"],
            description=f"no held-out eval prompt ({settings['eval_prompts']} in curate.eval_prompts) in training"))
    return {"examples": expectations}


def quality(settings: dict, lookups: dict) -> dict:
    levels = len(settings["percentiles"])
    examples = [
        *_not_null("id", "quality", "multiplicity"), *_unique_ids(),
        gxe.ExpectColumnValuesToBeBetween(column="quality", **FINITE, description="quality scores are finite"),
        gxe.ExpectColumnValuesToBeInSet(column="multiplicity", value_set=list(range(levels + 1)),
                                        description=f"multiplicity is 0..{levels} (thresholds reached)"),
    ]
    if settings.get("expected_examples") is not None:
        examples.insert(0, gxe.ExpectTableRowCountToEqual(value=settings["expected_examples"],
                                                          description="one row per curated example"))
    thresholds = [
        gxe.ExpectTableRowCountToEqual(value=levels, description=f"one threshold per quality.percentiles entry ({levels})"),
        gxe.ExpectColumnValuesToBeIncreasing(column="percentile", strictly=True, description="percentiles increase"),
        *_not_null("threshold"),
        gxe.ExpectColumnValuesToBeBetween(column="threshold", **FINITE, description="thresholds are finite"),
        # Equal thresholds are only fine without a (Q) method: a plain Python check says which ones
        # coincide and what to do (iwsft.gates.quality.distinct_bins), which GX's row listing cannot.
        gxe.ExpectColumnValuesToBeIncreasing(column="threshold", strictly=False, description="thresholds never decrease"),
    ]
    return {"examples": examples, "thresholds": thresholds}


def reference(settings: dict, lookups: dict) -> dict:
    examples = [
        *_not_null("id"), *_unique_ids(),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="logprobs", column_B="completion_tokens",
                                            description="one log-prob per completion token"),
        gxe.ExpectColumnValuesToBeBetween(column="nonfinite_logprobs", min_value=0, max_value=0,
                                          description="every log-prob is finite (no NaN or infinity)"),
        gxe.ExpectColumnValuesToBeBetween(column="max_logprob", max_value=0, description="log-probs are <= 0"),
    ]
    if settings.get("expected_examples") is not None:
        examples.insert(0, gxe.ExpectTableRowCountToEqual(value=settings["expected_examples"],
                                                          description="one row per example of the quality stage"))
    return {"examples": examples}


def evaluation(settings: dict, lookups: dict) -> dict:
    from iwsft.gates.evaluation import COUNT_METRICS, FINITE_METRICS, RATE_METRICS, REQUIRED_METRICS

    prompts, samples = settings["eval_prompts"], settings["samples_per_prompt"]
    expected = {"n_prompts": prompts, "n_samples": samples, "k": settings["maj_k"], "n_trajectories": prompts * samples,
                "sample_rows": prompts * samples}
    models = [
        gxe.ExpectTableRowCountToEqual(value=len(settings["models"]), description=f"a row per model: {', '.join(settings['models'])}"),
        *_not_null(*REQUIRED_METRICS, *COUNT_METRICS),
        *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1, description=f"{c} in [0, 1]") for c in RATE_METRICS],
        *[gxe.ExpectColumnValuesToBeBetween(column=c, **FINITE, description=f"{c} is finite") for c in FINITE_METRICS],
        *[gxe.ExpectColumnValuesToBeInSet(column=c, value_set=[n], description=f"{c} = {n} as configured")
          for c, n in expected.items()],
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="pass_at_1", column_B="pass_at_1_ci_low", or_equal=True,
                                                    description="the CI holds pass@1"),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="pass_at_1_ci_high", column_B="pass_at_1", or_equal=True,
                                                    description="the CI holds pass@1"),
    ]
    return {"models": models}


SUITES = {"eval": eval_prompts, "raw": raw, "curated": curated, "quality": quality, "reference": reference, "evaluation": evaluation}
