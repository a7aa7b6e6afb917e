"""Curation: the rules that turn raw samples into the curated training set D+ (the curate stage).

Pure: records in, kept records and a report out; `iwsft.stages.curate` does the reading and
writing. Rules, applied in this order, each counted in the report:

  normalize         whitespace-insensitive keys for the rules below (drops nothing, changes no text)
  empty_completion  the completion is empty or only whitespace
  unfinished        `finished` is false: cut at max_new_tokens (absent = finished; keep_unfinished)
  length            prompt tokens > max_prompt_tokens or completion tokens > max_completion_tokens
  verified          reward != 1 (the paper's D+); a record without a reward is dropped as unverified
  exact_duplicate   the same (prompt, completion) again: the first is kept
  near_duplicate    within one prompt, a completion equal to a kept one after loose normalisation, or
                    whose character n-gram Jaccard similarity to one is >= near_duplicate_threshold
  decontaminate     the prompt shares a word n-gram (or a character n-gram: decontaminate_unit: char)
                    with an eval prompt

Text is never changed: the kept records are the input records, every field as it came (prompt,
completion, completion_ids, finished, metadata ...) plus `prompt_pass_rate`. Normalising (strip,
casefold, collapsed whitespace) only builds the keys duplicates and contamination are compared on,
because the tokens trained on must be the tokens pi_ref sampled (w = q/pi_ref is per sequence).

Before the rules, `fill_missing_rewards` gives a record that has an `answer` but no `reward` the
task's verdict (iwsft.tasks, params `task:`; 1 = full credit), so `verified` sees it, and
`reward_agreement` re-scores records that carry both, so a wrong verifier is caught at the raw gate.

Each kept record also gets `prompt_pass_rate`: among ALL input records of its prompt that have a
reward, the fraction with reward 1 (None if none has one); the quality stage's difficulty is 1 - it.

Switches (params.yaml `curate:`), all on by default: normalize_whitespace, drop_empty_completions,
length_filter, require_reward, exact_duplicates, near_duplicates, decontaminate; keep_unfinished
(default false) turns the unfinished rule off. A missing or null max_prompt_tokens /
max_completion_tokens means no limit on that side.

Limits: near duplicates are only looked for within a prompt (O(sum of k^2) comparisons, k samples
per prompt); decontamination matches words (or characters), so a paraphrased eval prompt gets
through, and a prompt shorter than the n-gram only matches an equally short eval prompt exactly.
Words covered by an n-gram found in more than half of the eval prompts (a shared system prompt or
instruction) are boilerplate, not evidence of a leak, and are left out; an exact copy of an eval
prompt is always caught. A conversational prompt (a message list) is compared on its non-system
messages. Lengths are counted by the stage's `TokenLengths`: in iwsft.gates.pipeline.token_counter, the prompt
as the model sees it (rendered with the chat template) and the completion's text.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Mapping, NamedTuple, Sequence

from iwsft.data.conversation import completion_content, exact_key, prompt_key_text
from iwsft.errors import EmptyCurationError  # noqa: F401  (re-exported)

# rule name -> the params.yaml switch that turns it off (unfinished: keep_unfinished, inverted)
RULE_SWITCHES = {
    "normalize": "normalize_whitespace",
    "empty_completion": "drop_empty_completions",
    "unfinished": "keep_unfinished",
    "length": "length_filter",
    "verified": "require_reward",
    "exact_duplicate": "exact_duplicates",
    "near_duplicate": "near_duplicates",
    "decontaminate": "decontaminate",
}
INVERTED_SWITCHES = {"unfinished"}  # the switch keeps what the rule would drop; default false
DECONTAMINATE_UNITS = ("word", "char")
MAX_EXAMPLES = 3
MAX_AGREEMENT_EXAMPLES = 5


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
    decontaminate_unit: str = "word"


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _switch(config: Mapping, rule: str):
    value = config.get(RULE_SWITCHES[rule], rule not in INVERTED_SWITCHES)
    return (not value) if rule in INVERTED_SWITCHES and isinstance(value, bool) else value


def curation_settings(config: Mapping) -> CurationSettings:
    """The curate section of params with defaults filled in; ValueError naming every bad knob."""
    settings = CurationSettings(
        enabled={rule: _switch(config, rule) for rule in RULE_SWITCHES},
        max_prompt_tokens=config.get("max_prompt_tokens"),
        max_completion_tokens=config.get("max_completion_tokens"),
        near_duplicate_threshold=config.get("near_duplicate_threshold", 0.9),
        near_duplicate_ngram=config.get("near_duplicate_ngram", 3),
        decontaminate_ngram=config.get("decontaminate_ngram", 13),
        decontaminate_unit=config.get("decontaminate_unit", "word"),
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
    if settings.decontaminate_unit not in DECONTAMINATE_UNITS:
        problems.append(f"decontaminate_unit must be word or char, got {settings.decontaminate_unit!r}")
    return problems


def near_duplicate_key(text: str) -> str:
    """Lowercased, whitespace collapsed, punctuation dropped except '-' and '.' (they change a
    number: -3 vs 3, 1.5 vs 15)."""
    kept = "".join(char for char in text.lower() if char.isalnum() or char.isspace() or char in "-.")
    return " ".join(kept.split())


def decontamination_key(text) -> str:
    """Lowercased with all whitespace removed, so reformatting does not hide an eval prompt (the
    char unit, and the curated gate's exact-match check)."""
    return "".join(prompt_key_text(text).lower().split())


def word_key(text) -> tuple[str, ...]:
    """The words of a prompt, casefolded (the word unit; whitespace runs count as one)."""
    return tuple(prompt_key_text(text).casefold().split())


def char_ngrams(text: str, n: int) -> frozenset[str]:
    """The set of length-n substrings; a text shorter than n is its own single gram, so short
    texts still compare (exactly)."""
    if len(text) < n:
        return frozenset({text})
    return frozenset(text[start : start + n] for start in range(len(text) - n + 1))


def word_ngrams(words: Sequence[str], n: int) -> frozenset[tuple[str, ...]]:
    """The set of n-word windows; fewer than n words are one gram, the whole prompt, so a short
    prompt only matches an equally short one (tuples of other lengths never compare equal)."""
    words = tuple(words)
    if len(words) < n:
        return frozenset({words})
    return frozenset(words[start : start + n] for start in range(len(words) - n + 1))


def jaccard(first: frozenset, second: frozenset) -> float:
    union = first | second
    return len(first & second) / len(union) if union else 1.0


def has_completion(record: dict) -> bool:
    return bool(completion_content(record["completion"]).strip())


def is_finished(record: dict) -> bool:
    # absent (a user's text file) or null = finished: only an explicit false was cut off
    return record.get("finished") is not False


def fill_missing_rewards(records: Iterable[dict], task) -> int:
    """Reward, in place, each record that has an `answer` but no `reward` with `task.success`
    (an iwsft.tasks.Task); returns how many were rewarded. The task is passed in, not built here,
    so this module (which the reference and report stages also import) does not depend on it."""
    rewarded = 0
    for record in records:
        if record.get("reward") is None and record.get("answer") is not None:
            record["reward"] = task.success(completion_content(record["completion"]), record["answer"], record.get("metadata"))
            rewarded += 1
    return rewarded


def verifier_rewards(records: Sequence[dict], task) -> list[int | None]:
    """Per record, the task's reward for a record that carries both `answer` and `reward` (None
    for the others): what the raw gate compares the file's own reward with."""
    return [task.success(completion_content(r["completion"]), r["answer"], r.get("metadata"))
            if r.get("answer") is not None and r.get("reward") is not None else None for r in records]


def reward_agreement(records: Sequence[dict], rescored: Sequence[int | None]) -> dict:
    """{checked, disagreeing, fraction, examples (up to 5 ids)}: how often the file's reward and
    the verifier's (`verifier_rewards`) differ; fraction is None when nothing could be checked."""
    checked = [(r, v) for r, v in zip(records, rescored) if v is not None]
    disagreeing = [r for r, v in checked if int(r["reward"]) != int(v)]
    return {"checked": len(checked), "disagreeing": len(disagreeing),
            "fraction": len(disagreeing) / len(checked) if checked else None,
            "examples": [r.get("id") for r in disagreeing[:MAX_AGREEMENT_EXAMPLES]]}


def is_verified(record: dict) -> bool:
    return record.get("reward") == 1


class TokenLengths(NamedTuple):
    """How many tokens a prompt and a completion take: two counters, because a prompt is counted as the
    model sees it (rendered with its chat template) and a completion as its text."""

    prompt: Callable[[Any], int]
    completion: Callable[[Any], int]

    @classmethod
    def same(cls, count: Callable[[Any], int]) -> "TokenLengths":
        return cls(count, count)


def within_length_mask(
    records: Sequence[dict],
    lengths: TokenLengths,
    max_prompt_tokens: int | None,
    max_completion_tokens: int | None,
) -> list[bool]:
    """False for a record over either limit: it is dropped, never cut (a truncated sequence would
    carry another weight)."""
    # K samples share a prompt: count each distinct prompt once.
    prompt_tokens: dict[str, int] = {}

    def prompt_length(prompt) -> int:
        key = exact_key(prompt)
        if key not in prompt_tokens:
            prompt_tokens[key] = lengths.prompt(prompt)
        return prompt_tokens[key]

    return [
        (max_prompt_tokens is None or prompt_length(record["prompt"]) <= max_prompt_tokens)
        and (max_completion_tokens is None or lengths.completion(record["completion"]) <= max_completion_tokens)
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
        key = near_duplicate_key(completion_content(record["completion"]))
        grams = char_ngrams(key, ngram)
        kept = kept_by_prompt[exact_key(record["prompt"])]
        is_duplicate = any(key == other_key or jaccard(grams, other_grams) >= threshold for other_key, other_grams in kept)
        if not is_duplicate:
            kept.append((key, grams))
        mask.append(not is_duplicate)
    return mask


def content_words(words: tuple[str, ...], boilerplate: set, n: int) -> tuple[str, ...]:
    """The words not covered by a boilerplate n-gram (`uncontaminated_mask`)."""
    covered = [False] * len(words)
    for start in range(len(words) - n + 1):
        if words[start : start + n] in boilerplate:
            covered[start : start + n] = [True] * n
    return tuple(word for word, hidden in zip(words, covered) if not hidden)


def uncontaminated_mask(records: Sequence[dict], eval_prompts: Iterable, ngram: int, unit: str = "word") -> list[bool]:
    """False for a record whose prompt shares a word n-gram (unit word) or a character n-gram
    (unit char, with whitespace removed) with any eval prompt, or equals one whole.

    Word unit: an n-gram found in more than half of the eval prompts (and in two at least) is
    boilerplate, such as a shared system prompt; its words are removed from every prompt before
    comparing, so what is left (the problem itself) is compared: by n-grams, or whole if short."""
    evals = [prompt for prompt in eval_prompts if prompt_key_text(prompt).strip()]
    if unit == "char":
        grams_of = lambda prompt: char_ngrams(decontamination_key(prompt), ngram)  # noqa: E731
    else:
        counts = Counter(gram for prompt in evals for gram in word_ngrams(word_key(prompt), ngram) if len(gram) == ngram)
        boilerplate = {gram for gram, count in counts.items() if count >= 2 and count > len(evals) / 2}

        def grams_of(prompt) -> frozenset:
            words = content_words(word_key(prompt), boilerplate, ngram)
            return word_ngrams(words, ngram) if words else frozenset()

    eval_grams = set().union(*(grams_of(prompt) for prompt in evals))
    # A copy, whitespace and case aside, is always a leak (the curated gate's check, so the two agree).
    whole = {decontamination_key(prompt) for prompt in evals}

    verdicts: dict[str, bool] = {}  # K samples share a prompt: judge each distinct prompt once

    def is_clean(prompt) -> bool:
        key = exact_key(prompt)
        if key not in verdicts:
            verdicts[key] = decontamination_key(prompt) not in whole and grams_of(prompt).isdisjoint(eval_grams)
        return verdicts[key]

    return [is_clean(record["prompt"]) for record in records]


def prompt_pass_rates(records: Iterable[dict]) -> dict[str, float | None]:
    """Per prompt: the fraction of its records with a reward that have reward 1 (None: no rewards).
    Records without a reward are unknown outcomes, not failures, so they are left out."""
    outcomes: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        outcomes[exact_key(record["prompt"])] += [record["reward"] == 1] if record.get("reward") is not None else []
    return {prompt: (sum(results) / len(results) if results else None) for prompt, results in outcomes.items()}


def _pair_key(record: dict, normalize: bool) -> tuple:
    # normalize_whitespace: surrounding whitespace ignored (in the key only)
    prompt, completion = exact_key(record["prompt"]), completion_content(record["completion"])
    return (prompt.strip(), completion.strip()) if normalize else (prompt, completion)


def _filter_rules(settings: CurationSettings, eval_prompts: Sequence, lengths: TokenLengths):
    """(rule, records -> keep mask) in the order they apply."""
    max_prompt, max_completion = settings.max_prompt_tokens, settings.max_completion_tokens
    ngram, threshold = settings.near_duplicate_ngram, settings.near_duplicate_threshold
    normalize, unit = settings.enabled["normalize"], settings.decontaminate_unit
    return [
        ("empty_completion", lambda records: [has_completion(record) for record in records]),
        ("unfinished", lambda records: [is_finished(record) for record in records]),
        ("length", lambda records: within_length_mask(records, lengths, max_prompt, max_completion)),
        ("verified", lambda records: [is_verified(record) for record in records]),
        ("exact_duplicate", lambda records: first_occurrence_mask(_pair_key(r, normalize) for r in records)),
        ("near_duplicate", lambda records: near_duplicate_mask(records, ngram, threshold)),
        ("decontaminate", lambda records: uncontaminated_mask(records, eval_prompts, settings.decontaminate_ngram, unit)),
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
        unit = "word" if settings.decontaminate_unit == "word" else "character"
        why = {
            "empty_completion": "every completion is empty or only whitespace",
            "unfinished": "every completion was cut off (finished: false): raise sample.max_new_tokens, "
            "or set keep_unfinished: true",
            "length": f"every record is over max_prompt_tokens={settings.max_prompt_tokens} "
            f"or max_completion_tokens={settings.max_completion_tokens}",
            "verified": "no record has reward 1",
            "decontaminate": f"every prompt shares a {settings.decontaminate_ngram}-{unit} n-gram with an eval prompt",
        }.get(rule, "see the curation report")
    return f"curation removed every record: {rule!r} dropped {len(dropped)} of the {len(dropped)} remaining ({why})"


def _normalizable(record: dict) -> bool:
    """Whether whitespace normalisation changes this record's keys (reported, never applied)."""
    return any(isinstance(text, str) and text != text.strip() for text in (record["prompt"], record["completion"]))


def curate(
    records: Sequence[dict], eval_prompts: Sequence, config: Mapping, lengths: TokenLengths
) -> CurationResult:
    """Apply the rules (module docstring) to `records`; the inputs are not modified, and the kept
    records are copies of them with every field unchanged, plus `prompt_pass_rate`.

    Report: {"input": N, "kept": M, "normalized": k, "rules": [{"rule", "enabled", "dropped",
    "remaining", "examples": up to 3 ids}, ...]} with one entry per rule in order ("verified" also
    counts "unverified": dropped records without a reward). `normalized` counts the records whose
    keys ignore surrounding whitespace (their text is kept as it is). EmptyCurationError if nothing
    is left.
    """
    settings = curation_settings(config)
    if not records:
        raise EmptyCurationError("curation received no records")
    normalize = settings.enabled["normalize"]
    normalized = sum(_normalizable(record) for record in records) if normalize else 0
    pass_rates = prompt_pass_rates(records)
    remaining = [{**record, "prompt_pass_rate": pass_rates[exact_key(record["prompt"])]} for record in records]
    rules = [rule_report("normalize", normalize, [], len(remaining))]
    for rule, keep_mask in _filter_rules(settings, eval_prompts, lengths):
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
