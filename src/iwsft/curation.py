"""Curation: the rules that turn raw samples into the curated training set D+ (the curate stage).

Pure: records in, kept records and a report out; `iwsft.stages.curate` does the reading and
writing. Rules, applied in this order, each counted in the report:

  normalize         strip whitespace around prompt and completion (changes text, drops nothing)
  empty_completion  the completion is empty after normalising
  length            prompt tokens > max_prompt_tokens or completion tokens > max_completion_tokens
  verified          reward != 1 (the paper's D+); a record without a reward is dropped as unverified
  exact_duplicate   the same (prompt, completion) again: the first is kept
  near_duplicate    within one prompt, a completion equal to a kept one after loose normalisation, or
                    whose character n-gram Jaccard similarity to one is >= near_duplicate_threshold
  decontaminate     the prompt shares a character n-gram with an eval prompt

Before the rules, `fill_missing_rewards` gives a record that has an `answer` but no `reward` the
task's verdict (iwsft.tasks, params `task:`; 1 = full credit), so `verified` sees it.

Each kept record also gets `prompt_pass_rate`: among ALL input records of its prompt that have a
reward, the fraction with reward 1 (None if none has one); the quality stage's difficulty is 1 - it.

Switches (params.yaml `curate:`), all on by default: normalize_whitespace, drop_empty_completions,
length_filter, require_reward, exact_duplicates, near_duplicates, decontaminate. A missing or null
max_prompt_tokens / max_completion_tokens means no limit on that side.

Limits: near duplicates are only looked for within a prompt (O(sum of k^2) comparisons, k samples
per prompt); decontamination matches characters, so a paraphrased eval prompt gets through, and a
prompt shorter than the n-gram only matches an equally short eval prompt exactly.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Mapping, Sequence
from iwsft.errors import EmptyCurationError  # noqa: F401  (re-exported)

# rule name -> the params.yaml switch that turns it off
RULE_SWITCHES = {
    "normalize": "normalize_whitespace",
    "empty_completion": "drop_empty_completions",
    "length": "length_filter",
    "verified": "require_reward",
    "exact_duplicate": "exact_duplicates",
    "near_duplicate": "near_duplicates",
    "decontaminate": "decontaminate",
}
MAX_EXAMPLES = 3


@dataclass(frozen=True)
class CurationResult:
    """The kept records (with `prompt_pass_rate`) and the report (see `curate`)."""

    kept: list[dict]
    report: dict


@dataclass(frozen=True)
class CurationSettings:
    """The curate knobs, defaults filled in and checked once (`curation_settings`)."""

    enabled: dict[str, bool]
    max_prompt_tokens: int | None
    max_completion_tokens: int | None
    near_duplicate_threshold: float
    near_duplicate_ngram: int
    decontaminate_ngram: int


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def curation_settings(config: Mapping) -> CurationSettings:
    """The curate section of params with defaults filled in; ValueError naming every bad knob."""
    settings = CurationSettings(
        enabled={rule: config.get(switch, True) for rule, switch in RULE_SWITCHES.items()},
        max_prompt_tokens=config.get("max_prompt_tokens"),
        max_completion_tokens=config.get("max_completion_tokens"),
        near_duplicate_threshold=config.get("near_duplicate_threshold", 0.9),
        near_duplicate_ngram=config.get("near_duplicate_ngram", 3),
        decontaminate_ngram=config.get("decontaminate_ngram", 13),
    )
    problems = _settings_problems(settings)
    if problems:
        raise ValueError("curate settings (params.yaml): " + "; ".join(problems))
    return settings


def _settings_problems(settings: CurationSettings) -> list[str]:
    # A quoted "false" in YAML is a true-ish string: refuse it rather than run the rule.
    problems = [f"{RULE_SWITCHES[rule]} must be true or false, got {value!r}"
                for rule, value in settings.enabled.items() if not isinstance(value, bool)]
    for name in ("max_prompt_tokens", "max_completion_tokens", "near_duplicate_ngram", "decontaminate_ngram"):
        value = getattr(settings, name)
        may_be_null = name.startswith("max_")  # no limit
        if not (_is_positive_int(value) or (may_be_null and value is None)):
            problems.append(f"{name} must be a positive integer{' or null' if may_be_null else ''}, got {value!r}")
    threshold = settings.near_duplicate_threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        problems.append(f"near_duplicate_threshold must be in (0, 1], got {threshold!r}")
    return problems


def strip_whitespace(record: dict) -> dict:
    """A copy with prompt and completion stripped of surrounding whitespace."""
    return {**record, "prompt": record["prompt"].strip(), "completion": record["completion"].strip()}


def near_duplicate_key(text: str) -> str:
    """Lowercased, whitespace collapsed, punctuation dropped except '-' and '.' (they change a
    number: -3 vs 3, 1.5 vs 15)."""
    kept = "".join(char for char in text.lower() if char.isalnum() or char.isspace() or char in "-.")
    return " ".join(kept.split())


def decontamination_key(text: str) -> str:
    """Lowercased with all whitespace removed, so reformatting does not hide an eval prompt."""
    return "".join(text.lower().split())


def char_ngrams(text: str, n: int) -> frozenset[str]:
    """The set of length-n substrings; a text shorter than n is its own single gram, so short
    texts still compare (exactly)."""
    if len(text) < n:
        return frozenset({text})
    return frozenset(text[start : start + n] for start in range(len(text) - n + 1))


def jaccard(first: frozenset, second: frozenset) -> float:
    union = first | second
    return len(first & second) / len(union) if union else 1.0


def has_completion(record: dict) -> bool:
    return bool(record["completion"])


def fill_missing_rewards(records: Iterable[dict], task) -> int:
    """Reward, in place, each record that has an `answer` but no `reward` with `task.success`
    (an iwsft.tasks.Task); returns how many were rewarded. The task is passed in, not built here,
    so this module (which the reference and report stages also import) does not depend on it."""
    rewarded = 0
    for record in records:
        if record.get("reward") is None and record.get("answer") is not None:
            record["reward"] = task.success(record["completion"], record["answer"], record.get("metadata"))
            rewarded += 1
    return rewarded


def is_verified(record: dict) -> bool:
    return record.get("reward") == 1


def within_length_mask(
    records: Sequence[dict],
    token_length: Callable[[str], int],
    max_prompt_tokens: int | None,
    max_completion_tokens: int | None,
) -> list[bool]:
    # K samples share a prompt: tokenize each distinct prompt once.
    prompt_length = functools.lru_cache(maxsize=None)(token_length)
    return [
        (max_prompt_tokens is None or prompt_length(record["prompt"]) <= max_prompt_tokens)
        and (max_completion_tokens is None or token_length(record["completion"]) <= max_completion_tokens)
        for record in records
    ]


def first_occurrence_mask(keys: Iterable[Hashable]) -> list[bool]:
    """True for the first record with each key."""
    seen: set = set()
    mask = []
    for key in keys:
        mask.append(key not in seen)
        seen.add(key)
    return mask


def near_duplicate_mask(records: Sequence[dict], ngram: int, threshold: float) -> list[bool]:
    """False for a completion too close to an earlier kept completion of the same prompt."""
    kept_by_prompt: dict[str, list[tuple[str, frozenset]]] = defaultdict(list)
    mask = []
    for record in records:
        key = near_duplicate_key(record["completion"])
        grams = char_ngrams(key, ngram)
        kept = kept_by_prompt[record["prompt"]]
        is_duplicate = any(key == other_key or jaccard(grams, other_grams) >= threshold for other_key, other_grams in kept)
        if not is_duplicate:
            kept.append((key, grams))
        mask.append(not is_duplicate)
    return mask


def uncontaminated_mask(records: Sequence[dict], eval_prompts: Iterable[str], ngram: int) -> list[bool]:
    """False for a record whose prompt shares a character n-gram with any eval prompt."""
    eval_grams = set().union(*(char_ngrams(decontamination_key(prompt), ngram) for prompt in eval_prompts if prompt.strip()))

    @functools.lru_cache(maxsize=None)
    def is_clean(prompt: str) -> bool:
        return char_ngrams(decontamination_key(prompt), ngram).isdisjoint(eval_grams)

    return [is_clean(record["prompt"]) for record in records]


def prompt_pass_rates(records: Iterable[dict]) -> dict[str, float | None]:
    """Per prompt: the fraction of its records with a reward that have reward 1 (None: no rewards).
    Records without a reward are unknown outcomes, not failures, so they are left out."""
    outcomes: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        outcomes[record["prompt"]] += [record["reward"] == 1] if record.get("reward") is not None else []
    return {prompt: (sum(results) / len(results) if results else None) for prompt, results in outcomes.items()}


def _filter_rules(settings: CurationSettings, eval_prompts: Sequence[str], token_length: Callable[[str], int]):
    """(rule, records -> keep mask) in the order they apply."""
    max_prompt, max_completion = settings.max_prompt_tokens, settings.max_completion_tokens
    ngram, threshold = settings.near_duplicate_ngram, settings.near_duplicate_threshold
    return [
        ("empty_completion", lambda records: [has_completion(record) for record in records]),
        ("length", lambda records: within_length_mask(records, token_length, max_prompt, max_completion)),
        ("verified", lambda records: [is_verified(record) for record in records]),
        ("exact_duplicate", lambda records: first_occurrence_mask((r["prompt"], r["completion"]) for r in records)),
        ("near_duplicate", lambda records: near_duplicate_mask(records, ngram, threshold)),
        ("decontaminate", lambda records: uncontaminated_mask(records, eval_prompts, settings.decontaminate_ngram)),
    ]


def rule_report(rule: str, enabled: bool, dropped: Sequence[dict], remaining: int) -> dict:
    entry = {"rule": rule, "enabled": enabled, "dropped": len(dropped), "remaining": remaining,
             "examples": [record.get("id") for record in dropped[:MAX_EXAMPLES]]}
    if rule == "verified":
        entry["unverified"] = sum(1 for record in dropped if record.get("reward") is None)
    return entry


def empty_curation_message(rule: str, dropped: Sequence[dict], settings: CurationSettings) -> str:
    """Why nothing is left, and the knob to look at."""
    if rule == "verified" and all(record.get("reward") is None for record in dropped):
        why = "no record has a reward: add `reward`, or an `answer` for the verifier, or set require_reward: false"
    else:
        why = {
            "empty_completion": "every completion is empty after stripping whitespace",
            "length": f"every record is over max_prompt_tokens={settings.max_prompt_tokens} "
            f"or max_completion_tokens={settings.max_completion_tokens}",
            "verified": "no record has reward 1",
            "decontaminate": f"every prompt shares a {settings.decontaminate_ngram}-character n-gram with an eval prompt",
        }.get(rule, "see the curation report")
    return f"curation removed every record: {rule!r} dropped {len(dropped)} of the {len(dropped)} remaining ({why})"


def curate(
    records: Sequence[dict], eval_prompts: Sequence[str], config: Mapping, token_length: Callable[[str], int]
) -> CurationResult:
    """Apply the rules (module docstring) to `records`; the inputs are not modified.

    Report: {"input": N, "kept": M, "normalized": k, "rules": [{"rule", "enabled", "dropped",
    "remaining", "examples": up to 3 ids}, ...]} with one entry per rule in order ("verified" also
    counts "unverified": dropped records without a reward). EmptyCurationError if nothing is left.
    """
    settings = curation_settings(config)
    if not records:
        raise EmptyCurationError("curation received no records")
    normalize = settings.enabled["normalize"]
    remaining = [strip_whitespace(record) if normalize else dict(record) for record in records]
    normalized = sum(new != old for new, old in zip(remaining, records))
    pass_rates = prompt_pass_rates(remaining)
    remaining = [{**record, "prompt_pass_rate": pass_rates[record["prompt"]]} for record in remaining]
    rules = [rule_report("normalize", normalize, [], len(remaining))]
    for rule, keep_mask in _filter_rules(settings, eval_prompts, token_length):
        if not settings.enabled[rule]:
            rules.append(rule_report(rule, False, [], len(remaining)))
            continue
        mask = keep_mask(remaining)
        kept = [record for record, keep in zip(remaining, mask) if keep]
        dropped = [record for record, keep in zip(remaining, mask) if not keep]
        rules.append(rule_report(rule, True, dropped, len(kept)))
        if not kept:
            raise EmptyCurationError(empty_curation_message(rule, dropped, settings))
        remaining = kept
    report = {"input": len(records), "kept": len(remaining), "normalized": normalized, "rules": rules}
    return CurationResult(remaining, report)
