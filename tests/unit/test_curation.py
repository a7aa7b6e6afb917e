"""Curation rules: each drops what it should and keeps what it should, in order, with counts."""

from __future__ import annotations

import copy

import pytest

from iwsft.curation import (
    EmptyCurationError,
    char_ngrams,
    curate,
    decontamination_key,
    jaccard,
    near_duplicate_key,
)

RULES = ["normalize", "empty_completion", "length", "verified", "exact_duplicate", "near_duplicate", "decontaminate"]
CONFIG = {"max_prompt_tokens": 100, "max_completion_tokens": 100}


def record(id, prompt="1+2=", completion="3", reward=1, **extra):
    fields = {"id": id, "prompt": prompt, "completion": completion, **extra}
    if reward is not None:
        fields["reward"] = reward
    return fields


def run(records, eval_prompts=(), token_length=len, **config):
    return curate(records, list(eval_prompts), {**CONFIG, **config}, token_length)


def kept_ids(result):
    return [r["id"] for r in result.kept]


def rule(result, name):
    return next(entry for entry in result.report["rules"] if entry["rule"] == name)


def test_normalize_strips_whitespace_counts_changes_and_drops_nothing():
    records = [record("a", prompt="  1+2=\n", completion=" 3\t"), record("b", prompt="2+2=", completion="4")]
    result = run(records)
    assert [(r["prompt"], r["completion"]) for r in result.kept] == [("1+2=", "3"), ("2+2=", "4")]
    assert result.report["normalized"] == 1
    assert rule(result, "normalize")["dropped"] == 0


def test_normalize_can_be_switched_off():
    result = run([record("a", completion=" 3 ")], normalize_whitespace=False)
    assert result.kept[0]["completion"] == " 3 "
    assert result.report["normalized"] == 0 and rule(result, "normalize")["enabled"] is False


def test_inputs_are_not_modified():
    records = [record("a", prompt=" 1+2= "), record("b", reward=0)]
    before = copy.deepcopy(records)
    run(records)
    assert records == before


def test_empty_completion_drops_empty_and_whitespace_only():
    records = [record("empty", completion=""), record("blank", completion="  \n"), record("ok", completion="3")]
    result = run(records)
    assert kept_ids(result) == ["ok"]
    assert rule(result, "empty_completion")["dropped"] == 2
    assert rule(result, "empty_completion")["examples"] == ["empty", "blank"]


def test_length_drops_over_long_prompts_and_completions_keeps_those_at_the_limit():
    records = [
        record("long-prompt", prompt="1+2+3+4="),
        record("long-completion", completion="333333"),
        record("at-limit", prompt="1+2+3=", completion="66666"),
    ]
    result = run(records, max_prompt_tokens=6, max_completion_tokens=5)
    assert kept_ids(result) == ["at-limit"]
    assert rule(result, "length")["dropped"] == 2


def test_length_counts_tokens_with_the_given_tokenizer_and_none_means_no_limit():
    words = lambda text: len(text.split())  # noqa: E731 - a "tokenizer" that counts words
    records = [record("two-words", completion="three apples"), record("one-word", completion="3")]
    assert kept_ids(run(records, token_length=words, max_completion_tokens=1)) == ["one-word"]
    assert kept_ids(run(records, token_length=words, max_completion_tokens=None)) == ["two-words", "one-word"]


def test_each_distinct_prompt_is_tokenized_once():
    calls = []
    counting = lambda text: calls.append(text) or len(text)  # noqa: E731
    run([record(str(i), completion=str(i)) for i in range(5)], token_length=counting)
    assert calls.count("1+2=") == 1


def test_verified_keeps_reward_one_and_drops_failures_and_unrewarded():
    records = [record("win"), record("loss", reward=0), record("unknown", completion="4", reward=None)]
    result = run(records)
    assert kept_ids(result) == ["win"]
    entry = rule(result, "verified")
    assert entry["dropped"] == 2 and entry["unverified"] == 1


def test_verified_can_be_switched_off():
    records = [record("win"), record("loss", completion="4", reward=0), record("unknown", completion="5", reward=None)]
    assert kept_ids(run(records, require_reward=False)) == ["win", "loss", "unknown"]


def test_exact_duplicate_keeps_the_first_of_each_pair_after_normalising():
    records = [
        record("first"),
        record("again", completion=" 3 "),
        record("other-prompt", prompt="0+3="),
        record("other-completion", completion="3.0"),
    ]
    result = run(records, near_duplicates=False)
    assert kept_ids(result) == ["first", "other-prompt", "other-completion"]
    assert rule(result, "exact_duplicate")["examples"] == ["again"]


def test_near_duplicate_drops_loosely_equal_completions_of_the_same_prompt():
    prompt = "Explain 12*3."
    records = [
        record("first", prompt=prompt, completion="The answer is 36."),
        record("shouting", prompt=prompt, completion="THE  answer is 36."),
        record("punctuated", prompt=prompt, completion="The answer, is: 36."),
        record("negative", prompt=prompt, completion="The answer is -36."),
        record("other-prompt", prompt="Explain 6*6.", completion="The answer is 36."),
    ]
    result = run(records)
    assert kept_ids(result) == ["first", "negative", "other-prompt"]
    assert rule(result, "near_duplicate")["dropped"] == 2


def test_near_duplicate_uses_the_ngram_jaccard_threshold():
    base = "we add the two numbers digit by digit and carry the one so the total is 579"
    records = [record("first", completion=base), record("close", completion=base + " indeed")]
    similarity = jaccard(char_ngrams(near_duplicate_key(base), 3), char_ngrams(near_duplicate_key(base + " indeed"), 3))
    assert 0.85 < similarity < 0.95
    assert kept_ids(run(records, near_duplicate_threshold=0.85)) == ["first"]
    assert kept_ids(run(records, near_duplicate_threshold=0.95)) == ["first", "close"]


def test_near_duplicate_keys_and_ngrams():
    assert near_duplicate_key("  The Answer:\n\n-3.5!! ") == "the answer -3.5"
    assert char_ngrams("abcd", 3) == {"abc", "bcd"}
    assert char_ngrams("ab", 3) == {"ab"}  # shorter than n: itself
    assert jaccard(frozenset({"a", "b"}), frozenset({"b", "c"})) == pytest.approx(1 / 3)


def test_decontaminate_drops_prompts_sharing_a_long_ngram_with_an_eval_prompt():
    evals = ["Natalia sold clips to 48 of her friends in April."]
    records = [
        record("reformatted", prompt="natalia  SOLD clips\nto 48 friends"),  # 'nataliasoldclips' shares 13 chars
        record("unrelated", prompt="Tom has 3 apples and eats one."),
        record("ten-shared", prompt="xx sold clips t yy"),  # shares only "soldclipst" (10 chars)
    ]
    result = run(records, evals)
    assert kept_ids(result) == ["unrelated", "ten-shared"]
    assert rule(result, "decontaminate")["examples"] == ["reformatted"]


def test_decontaminate_catches_short_exact_matches_only():
    records = [record("same", prompt="38 - 57 ="), record("different", prompt="38-56="), record("longer", prompt="38-57=1")]
    result = run(records, ["38-57="])
    assert kept_ids(result) == ["different", "longer"]
    assert decontamination_key(" 38 - 57\t= ") == "38-57="


def test_decontaminate_ngram_and_switch():
    records = [record("a", prompt="abcdef"), record("b", prompt="zzzzzz")]
    assert kept_ids(run(records, ["xxcdexx"], decontaminate_ngram=3)) == ["b"]
    assert kept_ids(run(records, ["abcdef"], decontaminate=False)) == ["a", "b"]


def test_prompt_pass_rate_counts_every_input_record_of_the_prompt():
    records = [
        record("w1", completion="3"),
        record("w2", completion="3"),  # dropped as a duplicate, still counted
        record("l1", completion="4", reward=0),
        record("l2", completion="5", reward=0),
        record("norewards", prompt="9+9=", completion="18", reward=None),
    ]
    result = run(records, require_reward=False)
    rates = {r["id"]: r["prompt_pass_rate"] for r in result.kept}
    assert rates == {"w1": 0.5, "l1": 0.5, "l2": 0.5, "norewards": None}


def test_rules_apply_in_order_and_the_report_adds_up():
    records = [
        record("empty", completion=" "),
        record("long", completion="3" * 50),
        record("loss", completion="4", reward=0),
        record("keep"),
        record("dup"),
        record("near", completion="3!"),
        record("leak", prompt="5+5="),
    ]
    result = run(records, ["5+5="], max_completion_tokens=10)
    report = result.report
    assert kept_ids(result) == ["keep"]
    assert [entry["rule"] for entry in report["rules"]] == RULES
    assert [entry["dropped"] for entry in report["rules"]] == [0, 1, 1, 1, 1, 1, 1]
    assert [entry["remaining"] for entry in report["rules"]] == [7, 6, 5, 4, 3, 2, 1]
    assert report["input"] == 7 and report["kept"] == 1 and report["normalized"] == 1
    assert set(report) == {"input", "kept", "normalized", "rules"}


def test_examples_are_at_most_three_ids():
    result = run([record(str(i), completion=str(i), reward=0) for i in range(5)] + [record("w")])
    assert rule(result, "verified")["examples"] == ["0", "1", "2"]
    assert rule(result, "verified")["dropped"] == 5


def test_disabled_rules_are_reported_as_such():
    result = run([record("a"), record("b")], exact_duplicates=False, near_duplicates=False)
    assert kept_ids(result) == ["a", "b"]
    assert rule(result, "exact_duplicate") == {"rule": "exact_duplicate", "enabled": False, "dropped": 0, "remaining": 2, "examples": []}


def test_empty_result_names_the_rule_and_the_reason():
    with pytest.raises(EmptyCurationError) as error:
        run([record(str(i), completion=str(i), reward=0) for i in range(3)] + [record("e", completion="")])
    assert str(error.value) == "curation removed every record: 'verified' dropped 3 of the 3 remaining (no record has reward 1)"
    assert isinstance(error.value, ValueError)


def test_empty_result_without_rewards_says_how_to_get_them():
    with pytest.raises(EmptyCurationError, match="no record has a reward.*require_reward: false"):
        run([record("a", reward=None)])


def test_empty_result_from_length_names_the_limits():
    with pytest.raises(EmptyCurationError, match="'length' dropped 1 of the 1 remaining.*max_prompt_tokens=2"):
        run([record("a")], max_prompt_tokens=2)


def test_empty_input_and_bad_settings():
    with pytest.raises(EmptyCurationError, match="no records"):
        run([])
    with pytest.raises(ValueError, match="near_duplicate_threshold.*decontaminate_ngram|decontaminate_ngram.*near_duplicate_threshold"):
        run([record("a")], near_duplicate_threshold=1.5, decontaminate_ngram=0)
    with pytest.raises(ValueError, match="max_prompt_tokens must be a positive integer or null"):
        run([record("a")], max_prompt_tokens="32")
    with pytest.raises(ValueError, match="decontaminate must be true or false, got 'false'"):
        run([record("a")], decontaminate="false")
