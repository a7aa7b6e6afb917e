"""The promotion rule (iwsft.promotion): numbers worked by hand, no MLflow."""

import math

import pytest

from iwsft.promotion import Z_95, Score, best_candidate, compare, decide, decode_per_prompt, encode_per_prompt


def score(value, half_width, eval_set=""):
    return Score(value, value - half_width, value + half_width, eval_set)


def test_standard_error_is_the_half_width_over_z():
    assert score(0.5, Z_95 * 0.03).standard_error == pytest.approx(0.03)


def test_clear_win_is_promoted_with_the_delta_interval():
    # se 0.03 and 0.04 -> se(delta) = 0.05; delta 0.2 -> 95% CI 0.2 +- 0.098
    decision = compare(score(0.45, Z_95 * 0.03), score(0.25, Z_95 * 0.04))
    assert decision.promote
    assert decision.delta == pytest.approx(0.2)
    assert decision.delta_ci_low == pytest.approx(0.2 - Z_95 * 0.05)
    assert decision.delta_ci_high == pytest.approx(0.2 + Z_95 * 0.05)
    assert "wins" in decision.reason


def test_better_but_inside_the_ci_is_kept():
    # delta 0.07, se(delta) = hypot(0.025, 0.025) = 0.0354 -> low = 0.07 - 0.0693 > 0 by a hair
    assert compare(score(0.257, Z_95 * 0.025), score(0.187, Z_95 * 0.025)).promote
    # the same delta with wider CIs is not enough
    decision = compare(score(0.257, Z_95 * 0.04), score(0.187, Z_95 * 0.04))
    assert not decision.promote and decision.delta_ci_low < 0 < decision.delta
    assert "within the CI" in decision.reason


def test_margin_raises_the_bar():
    candidate, incumbent = score(0.40, Z_95 * 0.01), score(0.30, Z_95 * 0.01)  # low = 0.1 - 0.0277 = 0.072
    assert compare(candidate, incumbent, margin=0.05).promote
    assert not compare(candidate, incumbent, margin=0.08).promote


def test_tie_and_loss_are_kept_and_named():
    tie = compare(score(0.30, 0.05), score(0.30, 0.05))
    assert not tie.promote and tie.delta == 0 and "tie" in tie.reason
    loss = compare(score(0.10, 0.01), score(0.30, 0.01))
    assert not loss.promote and "loses" in loss.reason


def test_zero_width_cis_compare_point_estimates():
    # every prompt scored the same: sd 0, the CI has zero width (iwsft.metrics.pass_at_1 says so)
    assert compare(score(0.2, 0.0), score(0.1, 0.0)).promote
    assert not compare(score(0.1, 0.0), score(0.1, 0.0)).promote


def test_different_eval_sets_are_not_comparable():
    decision = compare(score(0.9, 0.01, "aaa"), score(0.1, 0.01, "bbb"))
    assert not decision.promote and "another eval set" in decision.reason and decision.delta is None


def test_first_model_is_compared_with_the_base():
    base = score(0.19, Z_95 * 0.02)
    assert decide(score(0.30, Z_95 * 0.02), None, base).promote
    first = decide(score(0.20, Z_95 * 0.02), None, base)
    assert not first.promote and "base (no champion yet)" in first.reason


def test_a_champion_is_the_bar_when_there_is_one():
    base, champion = score(0.10, 0.01), score(0.40, 0.01)
    decision = decide(score(0.30, 0.01), champion, base, champion_name="champion v2")
    assert not decision.promote and "champion v2" in decision.reason


def test_scores_come_from_metrics_files_and_version_tags():
    from_file = Score.from_metrics({"pass_at_1": 0.25, "pass_at_1_ci_low": 0.2, "pass_at_1_ci_high": 0.3})
    from_tags = Score.from_metrics({"pass_at_1": "0.25", "pass_at_1_ci_low": "0.2", "pass_at_1_ci_high": "0.3"})
    assert from_file == from_tags and math.isclose(from_file.standard_error, 0.05 / Z_95)
    with pytest.raises(ValueError, match="pass_at_1"):
        Score.from_metrics({"greedy_accuracy": 0.3})


def test_best_candidate_breaks_ties_by_greedy_accuracy_then_order():
    scores = {"sft": {"pass_at_1": 0.3, "greedy_accuracy": 0.2}, "iwsft": {"pass_at_1": 0.3, "greedy_accuracy": 0.4},
              "sftq": {"pass_at_1": 0.1}}
    assert best_candidate(scores) == "iwsft"
    assert best_candidate({"a": {"pass_at_1": 0.3}, "b": {"pass_at_1": 0.3}}) == "a"


def test_paired_comparison_uses_the_per_prompt_differences():
    # 4 prompts; differences 1, 1, 0, 1 -> mean 0.75, sd 0.5, se 0.25
    candidate = Score(1.0, 1.0, 1.0, "e", (1.0, 1.0, 1.0, 1.0))
    incumbent = Score(0.25, 0.0, 0.74, "e", (0.0, 0.0, 1.0, 0.0))
    decision = compare(candidate, incumbent)
    assert decision.delta == pytest.approx(0.75)
    assert decision.delta_ci_low == pytest.approx(0.75 - Z_95 * 0.25) and decision.promote
    assert "paired over 4 prompts" in decision.reason
    # differences 1, 0, 0, 1: mean 0.5, sd sqrt(1/3), low = 0.5 - 1.96 * 0.289 < 0
    one_of_two = Score(0.5, 0, 1, "e", (1.0, 1.0, 0.0, 1.0)), Score(0.25, 0, 1, "e", (0.0, 1.0, 0.0, 0.0))
    assert not compare(*one_of_two).promote


def test_a_shared_hard_prompt_does_not_hide_a_consistent_gain():
    # the candidate gains 0.5 on every prompt: no spread in the differences -> a zero-width CI
    incumbent = (0.0, 0.5, 0.0, 0.5, 0.0, 0.5)
    candidate = tuple(v + 0.5 for v in incumbent)
    decision = compare(Score(0.75, 0.3, 1.0, "e", candidate), Score(0.25, 0.0, 0.7, "e", incumbent))
    assert decision.promote and decision.delta_ci_low == pytest.approx(0.5)


def test_pairing_needs_the_same_prompts():
    short = Score(0.5, 0.4, 0.6, "e", (1.0, 0.0))
    assert "unpaired" in compare(short, Score(0.5, 0.4, 0.6, "e", (1.0, 0.0, 1.0))).reason
    assert "unpaired" in compare(short, Score(0.5, 0.4, 0.6, "e")).reason


def test_per_prompt_successes_round_trip_through_a_tag_value():
    text = encode_per_prompt([0, 1, 2, 2, 0], samples_per_prompt=2)
    assert text == "2:01220"
    assert decode_per_prompt(text) == (0.0, 0.5, 1.0, 1.0, 0.0)
    assert decode_per_prompt("") == () and decode_per_prompt("x:12") == () and decode_per_prompt("2:0!") == ()
    with pytest.raises(ValueError):
        encode_per_prompt([1], samples_per_prompt=64)
