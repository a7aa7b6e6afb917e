"""Curation rules: each drops what it should and keeps what it should, in order, with counts."""

from __future__ import annotations

import copy

import pytest

from iwsft.config.schema import Curate
from iwsft.data.curation import EmptyCurationError, curate
from iwsft.data.decontaminate import decontamination_key, word_ngrams
from iwsft.data.dedup import char_ngrams, jaccard, near_duplicate_key
from iwsft.encoding.token_counts import TokenLengths
from iwsft.tasks.rewards import reward_agreement, verifier_rewards

RULES = ["normalize", "empty_completion", "unfinished", "length", "verified", "exact_duplicate", "near_duplicate",
         "decontaminate"]
# the demo's duplicate switches are off (params.yaml); these tests turn every rule on unless they say otherwise
CONFIG = {"raw": "raw.jsonl", "eval_prompts": "eval.jsonl", "max_prompt_tokens": 100, "max_completion_tokens": 100,
          "exact_duplicates": True, "near_duplicates": True}


def record(id, prompt="1+2=", completion="3", reward=1, **extra):
    fields = {"id": id, "prompt": prompt, "completion": completion, **extra}
    if reward is not None:
        fields["reward"] = reward
    return fields


def run(records, eval_prompts=(), token_length=len, **config):
    lengths = token_length if isinstance(token_length, TokenLengths) else TokenLengths.same(token_length)
    return curate(records, list(eval_prompts), Curate.model_validate({**CONFIG, **config}), lengths)


def kept_ids(result):
    return [r["id"] for r in result.kept]


def rule(result, name):
    return next(entry for entry in result.report["rules"] if entry["rule"] == name)


def test_normalize_counts_whitespace_but_never_changes_the_text():
    # BPE tokens of " 3\t" are not those of "3": the text trained on must be the text pi_ref sampled.
    records = [record("a", prompt="  1+2=\n", completion=" 3\t"), record("b", prompt="2+2=", completion="4")]
    result = run(records)
    assert [(r["prompt"], r["completion"]) for r in result.kept] == [("  1+2=\n", " 3\t"), ("2+2=", "4")]
    assert result.report["normalized"] == 1
    assert rule(result, "normalize")["dropped"] == 0


def test_normalize_makes_whitespace_variants_one_pair():
    records = [record("a", completion=" 3 "), record("b", completion="3")]
    result = run(records, near_duplicates=False)
    assert kept_ids(result) == ["a"] and rule(result, "exact_duplicate")["examples"] == ["b"]
    assert result.report["normalized"] == 1 and rule(result, "normalize")["enabled"] is True


def test_kept_records_keep_every_field_and_their_text_exactly():
    fields = {"completion_ids": [5, 7, 2], "finished": True, "metadata": {"source": "x"}, "answer": "3", "score": 0.5}
    records = [record("a", prompt="You are  helpful.\n1+2=", completion=" 3\n", **fields)]
    kept = run(records, exact_duplicates=True, near_duplicates=True).kept[0]
    assert kept == {**records[0], "prompt_pass_rate": 1.0}


def test_unfinished_completions_are_dropped_and_counted_unless_kept():
    records = [record("cut", completion="3 because", finished=False), record("done", finished=True),
               record("user-file", prompt="2+1=")]  # no `finished`: a user's text file, taken as finished
    result = run(records)
    assert kept_ids(result) == ["done", "user-file"]
    assert rule(result, "unfinished") == {"rule": "unfinished", "enabled": True, "dropped": 1, "remaining": 2,
                                          "examples": ["cut"]}
    kept = run(records, keep_unfinished=True)
    assert kept_ids(kept) == ["cut", "done", "user-file"] and rule(kept, "unfinished")["enabled"] is False
    with pytest.raises(EmptyCurationError, match="'unfinished' dropped 1.*keep_unfinished: true"):
        run([records[0]])


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


def test_length_counts_tokens_with_the_given_tokenizer():
    words = lambda text: len(text.split())  # noqa: E731 - a "tokenizer" that counts words
    records = [record("two-words", completion="three apples"), record("one-word", completion="3")]
    assert kept_ids(run(records, token_length=words, max_completion_tokens=1)) == ["one-word"]
    assert kept_ids(run(records, token_length=words, max_completion_tokens=2)) == ["two-words", "one-word"]


def test_length_counts_the_prompt_as_rendered_and_the_completion_as_its_text():
    # A chat template adds ~30 tokens around a short string prompt: the limit applies to what the model sees.
    rendered = TokenLengths(prompt=lambda prompt: 30 + len(prompt), completion=len)
    records = [record("short", prompt="1+2="), record("long", prompt="1+2+3+4+5+6=")]
    result = run(records, token_length=rendered, max_prompt_tokens=34, max_completion_tokens=1)
    assert kept_ids(result) == ["short"] and rule(result, "length")["examples"] == ["long"]
    conversational = [record("c", prompt=[{"role": "user", "content": "1+2="}], completion=[{"role": "assistant", "content": "3"}])]
    counted = []
    lengths = TokenLengths(prompt=lambda prompt: counted.append(prompt) or 34, completion=lambda completion: counted.append(completion) or 1)
    assert kept_ids(run(conversational, token_length=lengths, max_prompt_tokens=34, max_completion_tokens=1)) == ["c"]
    assert counted == [conversational[0]["prompt"], conversational[0]["completion"]]  # message lists, not text


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


def test_decontaminate_by_characters_drops_prompts_sharing_a_long_ngram_with_an_eval_prompt():
    evals = ["Natalia sold clips to 48 of her friends in April."]
    records = [
        record("reformatted", prompt="natalia  SOLD clips\nto 48 friends"),  # 'nataliasoldclips' shares 13 chars
        record("unrelated", prompt="Tom has 3 apples and eats one."),
        record("ten-shared", prompt="xx sold clips t yy"),  # shares only "soldclipst" (10 chars)
    ]
    result = run(records, evals, decontaminate_unit="char")
    assert kept_ids(result) == ["unrelated", "ten-shared"]
    assert rule(result, "decontaminate")["examples"] == ["reformatted"]


@pytest.mark.parametrize("unit", ["word", "char"])
def test_decontaminate_catches_short_exact_matches_only(unit):
    # The demo's prompts are one "word" each: both units compare them whole, and drop the same ones.
    records = [record("same", prompt="38 - 57 ="), record("different", prompt="38-56="), record("longer", prompt="38-57=1")]
    result = run(records, ["38-57="], decontaminate_unit=unit)
    assert kept_ids(result) == ["different", "longer"]
    assert decontamination_key(" 38 - 57\t= ") == "38-57="


def test_decontaminate_by_words_shares_a_13_word_ngram():
    question = "Natalia sold clips to 48 of her friends in April and then she sold half as many in May"
    records = [
        record("reworded-ends", prompt="Q: NATALIA sold clips to 48 of\nher friends in April and then she sold? x"),
        record("twelve-shared", prompt="Natalia sold clips to 48 of her friends in April and then bought"),
        record("short-equal", prompt="what  is 2+2?"),
        record("short-other", prompt="what is 2+3?"),
    ]
    result = run(records, [question, "What is 2+2?"])
    assert kept_ids(result) == ["twelve-shared", "short-other"]
    assert word_ngrams(("a", "b"), 3) == {("a", "b")} and word_ngrams("abcd", 3) == {("a", "b", "c"), ("b", "c", "d")}


def test_a_shared_chat_system_prompt_does_not_contaminate_everything():
    # The issue-11 trial: a system prompt in every prompt made 13-char decontamination drop 96 of 96.
    system = ("You are a helpful assistant. Think step by step, show your work, and put the final answer "
              "on the last line after 'Answer:'.")  # 24 words, longer than the n-gram
    evals = [f"{system}\nWhat is {a} plus {b}?" for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]]
    train = [record(f"t{i}", prompt=f"{system}\nWhat is {i} times {i + 10}?") for i in range(96)]
    leaked = record("leaked", prompt=evals[2].upper())  # a copy, case aside
    result = run([*train, leaked], evals, max_prompt_tokens=1000)
    assert len(result.kept) == 96 and rule(result, "decontaminate")["examples"] == ["leaked"]
    # The same in TRL's conversational format: the system message is not part of the key.
    chat = lambda text: [{"role": "system", "content": system}, {"role": "user", "content": text}]  # noqa: E731
    records = [record(f"c{i}", prompt=chat(f"What is {i} times {i + 10}?")) for i in range(8)]
    copy = record("copy", prompt=chat("What is 5 plus 6?"))
    conversational = run([*records, copy], [chat("What is 5 plus 6?")], token_length=lambda text: 1)
    assert kept_ids(conversational) == [f"c{i}" for i in range(8)]
    assert conversational.kept[0]["prompt"] == records[0]["prompt"]


def test_decontaminate_ngram_and_switch():
    records = [record("a", prompt="abcdef"), record("b", prompt="zzzzzz")]
    assert kept_ids(run(records, ["xxcdexx"], decontaminate_ngram=3, decontaminate_unit="char")) == ["b"]
    words = [record("a", prompt="one two three four"), record("b", prompt="one three two four")]
    assert kept_ids(run(words, ["zero two three five"], decontaminate_ngram=2)) == ["b"]
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
        record("cut", completion="33", finished=False),
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
    assert [entry["dropped"] for entry in report["rules"]] == [0, 1, 1, 1, 1, 1, 1, 1]
    assert [entry["remaining"] for entry in report["rules"]] == [8, 7, 6, 5, 4, 3, 2, 1]
    assert report["input"] == 8 and report["kept"] == 1 and report["normalized"] == 1
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


def test_empty_input():
    with pytest.raises(EmptyCurationError, match="no records"):
        run([])


class Verifier:
    """A stand-in task: success when the completion is the answer (what chain_sum does for '3')."""

    name = "stub"

    def success(self, completion, answer, metadata=None, prompt=None):  # the Task signature (iwsft.tasks.base)
        return int(completion.strip() == str(answer))


def test_reward_agreement_rescores_records_with_an_answer_and_a_reward():
    records = [record("ok", answer="3"), record("lie", completion="4", answer="3", reward=1),
               record("no-answer", completion="4"), record("no-reward", answer="3", reward=None),
               record("ok-loss", completion="5", answer="3", reward=0)]
    rescored = verifier_rewards(records, Verifier())
    assert rescored == [1, 0, None, None, 0]
    assert reward_agreement(records, rescored) == {"checked": 3, "disagreeing": 1, "fraction": 1 / 3, "examples": ["lie"]}
    wrong = [record(f"w{i}", completion="3", answer="9") for i in range(7)]
    summary = reward_agreement(wrong, verifier_rewards(wrong, Verifier()))
    assert summary["fraction"] == 1.0 and summary["examples"] == [f"w{i}" for i in range(5)]  # at most 5
    assert reward_agreement([record("a")], [None]) == {"checked": 0, "disagreeing": 0, "fraction": None, "examples": []}
