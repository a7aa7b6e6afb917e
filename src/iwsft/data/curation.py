"""Curation: the rules that turn raw samples into the curated training set D+ (the curate stage).

Pure: records in, kept records and a report out; `iwsft.stages.curate` does the reading and
writing. Rules, applied in this order, each counted in the report (`RULES`):

  normalize         whitespace-insensitive keys for the rules below (drops nothing, changes no text)
  empty_completion  the completion is empty or only whitespace                       iwsft.data.rules
  unfinished        `finished` is false: cut at max_new_tokens                       iwsft.data.rules
  length            prompt or completion over its token limit                        iwsft.data.rules
  verified          reward != 1 (the paper's D+)                                     iwsft.data.rules
  exact_duplicate   the same (prompt, completion) again: the first is kept           iwsft.data.dedup
  near_duplicate    a completion close to a kept one of the same prompt              iwsft.data.dedup
  decontaminate     the prompt overlaps an eval prompt                               iwsft.data.decontaminate

Text is never changed: the kept records are the input records, every field as it came (prompt,
completion, completion_ids, finished, metadata ...) plus `prompt_pass_rate`. Normalising (strip,
casefold, collapsed whitespace) only builds the keys duplicates and contamination are compared on,
because the tokens trained on must be the tokens pi_ref sampled (w = q/pi_ref is per sequence).

Before the rules, the stage gives a record that has an `answer` but no `reward` the task's verdict
(iwsft.tasks.rewards.fill_missing_rewards), so `verified` sees it.

Each kept record also gets `prompt_pass_rate`: among ALL input records of its prompt that have a
reward, the fraction with reward 1 (None if none has one); the quality stage's difficulty is 1 - it.

Switches (params.yaml `curate:`, checked and defaulted by iwsft.config.schema): require_reward,
exact_duplicates, near_duplicates, decontaminate; keep_unfinished turns the unfinished rule off.
normalize, empty_completion and length have no switch: they always apply. Lengths are counted by
the stage's `TokenLengths` (iwsft.encoding.token_counts): the prompt as the model sees it (rendered
with the chat template) and the completion's text.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from iwsft.data.conversation import exact_key
from iwsft.data.decontaminate import uncontaminated_mask
from iwsft.data.dedup import first_occurrence_mask, near_duplicate_mask, pair_key
from iwsft.data.rules import has_completion, is_finished, is_normalizable, is_verified, within_length_mask
from iwsft.errors import EmptyCurationError  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from iwsft.config.schema import Curate
    from iwsft.encoding.token_counts import TokenLengths

MAX_EXAMPLES = 3
# The rule table: (rule, whether params turn it on) in the order the rules apply. "normalize" drops
# nothing: it is the whitespace-insensitive keys (iwsft.data.dedup.pair_key), reported with a count.
RULES: list[tuple[str, Callable[[Curate], bool]]] = [
    ("normalize", lambda config: True),
    ("empty_completion", lambda config: True),
    ("unfinished", lambda config: not config.keep_unfinished),  # the switch keeps what the rule would drop
    ("length", lambda config: True),
    ("verified", lambda config: config.require_reward),
    ("exact_duplicate", lambda config: config.exact_duplicates),
    ("near_duplicate", lambda config: config.near_duplicates),
    ("decontaminate", lambda config: config.decontaminate),
]


@dataclass(frozen=True)
class CurationResult:
    """The kept records (with `prompt_pass_rate`) and the report (see `curate`)."""

    kept: list[dict]
    report: dict


def _keep_masks(config: Curate, eval_prompts: Sequence, lengths: TokenLengths):
    """rule -> (records -> keep mask), for every rule of RULES that drops records."""
    return {
        "empty_completion": lambda records: [has_completion(record) for record in records],
        "unfinished": lambda records: [is_finished(record) for record in records],
        "length": lambda records: within_length_mask(records, lengths, config.max_prompt_tokens,
                                                     config.max_completion_tokens),
        "verified": lambda records: [is_verified(record) for record in records],
        "exact_duplicate": lambda records: first_occurrence_mask(pair_key(r) for r in records),
        "near_duplicate": lambda records: near_duplicate_mask(records, config.near_duplicate_ngram,
                                                              config.near_duplicate_threshold),
        "decontaminate": lambda records: uncontaminated_mask(records, eval_prompts, config.decontaminate_ngram,
                                                             config.decontaminate_unit),
    }


def prompt_pass_rates(records: Iterable[dict]) -> dict[str, float | None]:
    """Per prompt: the fraction of its records with a reward that have reward 1 (None: no rewards).
    Records without a reward are unknown outcomes, not failures, so they are left out."""
    outcomes: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        outcomes[exact_key(record["prompt"])] += [record["reward"] == 1] if record.get("reward") is not None else []
    return {prompt: (sum(results) / len(results) if results else None) for prompt, results in outcomes.items()}


def rule_report(rule: str, enabled: bool, dropped: Sequence[dict], remaining: int) -> dict:
    entry = {"rule": rule, "enabled": enabled, "dropped": len(dropped), "remaining": remaining,
             "examples": [record.get("id") for record in dropped[:MAX_EXAMPLES]]}
    if rule == "verified":
        entry["unverified"] = sum(1 for record in dropped if record.get("reward") is None)
    return entry


def empty_curation_message(rule: str, dropped: Sequence[dict], config: Curate) -> str:
    """Why nothing is left, and the knob to look at."""
    if rule == "verified" and all(record.get("reward") is None for record in dropped):
        why = "no record has a reward: add `reward`, or an `answer` for the verifier, or set require_reward: false"
    else:
        unit = "word" if config.decontaminate_unit == "word" else "character"
        why = {
            "empty_completion": "every completion is empty or only whitespace",
            "unfinished": "every completion was cut off (finished: false): raise sample.max_new_tokens, "
            "or set keep_unfinished: true",
            "length": f"every record is over max_prompt_tokens={config.max_prompt_tokens} "
            f"or max_completion_tokens={config.max_completion_tokens}",
            "verified": "no record has reward 1",
            "decontaminate": f"every prompt shares a {config.decontaminate_ngram}-{unit} n-gram with an eval prompt",
        }.get(rule, "see the curation report")
    return f"curation removed every record: {rule!r} dropped {len(dropped)} of the {len(dropped)} remaining ({why})"


def curate(records: Sequence[dict], eval_prompts: Sequence, config: Curate, lengths: TokenLengths) -> CurationResult:
    """Apply the rules (module docstring) to `records` with params' `curate:` section `config`; the
    inputs are not modified, and the kept records are copies of them with every field unchanged,
    plus `prompt_pass_rate`.

    Report: {"input": N, "kept": M, "normalized": k, "rules": [{"rule", "enabled", "dropped",
    "remaining", "examples": up to 3 ids}, ...]} with one entry per rule in order ("verified" also
    counts "unverified": dropped records without a reward). `normalized` counts the records whose
    keys ignore surrounding whitespace (their text is kept as it is). EmptyCurationError if nothing
    is left.
    """
    if not records:
        raise EmptyCurationError("curation received no records")
    enabled = {rule: switch(config) for rule, switch in RULES}
    normalized = sum(is_normalizable(record) for record in records)
    pass_rates = prompt_pass_rates(records)
    remaining = [{**record, "prompt_pass_rate": pass_rates[exact_key(record["prompt"])]} for record in records]
    rules = [rule_report("normalize", enabled["normalize"], [], len(remaining))]
    keep_masks = _keep_masks(config, eval_prompts, lengths)
    for rule, _ in RULES[1:]:
        if not enabled[rule]:
            rules.append(rule_report(rule, False, [], len(remaining)))
            continue
        mask = keep_masks[rule](remaining)
        kept = [record for record, keep in zip(remaining, mask) if keep]
        dropped = [record for record, keep in zip(remaining, mask) if not keep]
        rules.append(rule_report(rule, True, dropped, len(kept)))
        if not kept:
            raise EmptyCurationError(empty_curation_message(rule, dropped, config))
        remaining = kept
    report = {"input": len(records), "kept": len(remaining), "normalized": normalized, "rules": rules}
    return CurationResult(remaining, report)
