"""The promotion rule (iwsft.tracking.promotion): numbers worked by hand, no MLflow.

Phi is the standard normal CDF; z_for(0.95) = 1.959964 (two-sided 95 %), z_for(0.95, 1) = 1.644854.
"""

import math
from pathlib import Path

import pytest

from iwsft.evaluation.stats import z_for
from iwsft.tracking.per_prompt import decode_per_prompt, encode_per_prompt
from iwsft.tracking.promotion import (
    TIE_RULE,
    Score,
    best_candidate,
    decide,
    holm,
    one_sided_test,
    ingredients,
    ranked,
    select,
)


def score(value, se, eval_set=""):
    """An unpaired score: the CI is only for display, the rule reads se."""
    return Score(value, value - 1.96 * se, value + 1.96 * se, eval_set, (), se)


def test_z_comes_from_the_confidence():
    assert z_for(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert z_for(0.95, sides=1) == pytest.approx(1.644854, abs=1e-6)
    assert z_for(0.99) == pytest.approx(2.575829, abs=1e-6)
    for bad in (0.0, 1.0, 1.96):
        with pytest.raises(ValueError, match="confidence"):
            z_for(bad)
    with pytest.raises(ValueError, match="sides"):
        z_for(0.95, sides=3)


def test_holm_adjusted_p_values_by_hand():
    # sorted: 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04, but never below the previous: 0.06)
    adjusted, ranks = holm([0.01, 0.04, 0.03])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06]) and ranks == [0, 2, 1]
    assert holm([0.6, 0.7])[0] == [1.0, 1.0]  # capped at 1
    assert holm([]) == ([], [])


def test_one_sided_paired_p_value_by_hand():
    # 4 prompts; differences 1, 1, 0, 1 -> mean 0.75, sd 0.5, se 0.25; z = 0.75 / 0.25 = 3
    # p = 1 - Phi(3) = 0.0013499
    candidate = Score(1.0, 1.0, 1.0, "e", (1.0, 1.0, 1.0, 1.0))
    incumbent = Score(0.25, 0.0, 0.74, "e", (0.0, 0.0, 1.0, 0.0))
    test = one_sided_test(candidate, incumbent)
    assert (test.delta, test.se, test.how) == (pytest.approx(0.75), pytest.approx(0.25), "paired over 4 prompts")
    assert test.p_value == pytest.approx(0.0013499, abs=1e-7) and not test.problem
    # margin 0.5: z = (0.75 - 0.5) / 0.25 = 1 -> p = 1 - Phi(1) = 0.158655
    assert one_sided_test(candidate, incumbent, margin=0.5).p_value == pytest.approx(0.158655, abs=1e-6)


def test_a_single_clear_win_is_promoted_with_its_interval():
    # the same 4 prompts, one candidate: m = 1, Holm's level is alpha = 0.05 itself, one-sided
    # z = 1.644854: lower bound 0.75 - 1.644854 * 0.25 = 0.338787, upper 1.161213; a two-sided 90 % CI
    candidate = Score(1.0, 1.0, 1.0, "e", (1.0, 1.0, 1.0, 1.0))
    incumbent = Score(0.25, 0.0, 0.74, "e", (0.0, 0.0, 1.0, 0.0))
    decision = select({"v2 (sft)": candidate}, incumbent, incumbent_name="base")
    assert decision.promote and decision.winner == "v2 (sft)" and decision.n_tested == 1
    assert decision.delta == pytest.approx(0.75)
    assert decision.delta_ci_low == pytest.approx(0.338787, abs=1e-6)
    assert decision.delta_ci_high == pytest.approx(1.161213, abs=1e-6)
    assert decision.p_value == decision.p_adjusted == pytest.approx(0.0013499, abs=1e-7)
    assert "90% CI [+0.339, +1.161] (paired over 4 prompts)" in decision.reason
    assert "wins" in decision.reason and "Holm's correction over 1 candidate tested against base" in decision.reason
    # margin 0.5: p 0.158655 > 0.05 -> kept
    assert not select({"v2": candidate}, incumbent, margin=0.5).promote


def test_two_mediocre_candidates_win_alone_but_not_after_holm():
    # base 0.10, se 0.01; unpaired se(delta) = hypot(0.01, 0.01) = 0.0141421
    # A 0.125: z = 0.025 / 0.0141421 = 1.76777 -> p = 0.038550
    # B 0.126: z = 0.026 / 0.0141421 = 1.83848 -> p = 0.032996
    # Uncorrected, both are below 0.05. Holm, m = 2: B first, 2 * 0.032996 = 0.065992 > 0.05: stop,
    # nothing rejected; A's adjusted p = max(0.065992, 0.038550) = 0.065992.
    base, a, b = score(0.10, 0.01), score(0.125, 0.01), score(0.126, 0.01)
    decision = select({"A": a, "B": b}, base)
    assert not decision.promote and decision.winner is None
    assert decision.about == "B"  # the best-looking one is the one reported
    assert decision.p_value == pytest.approx(0.032996, abs=1e-6)
    assert decision.p_adjusted == pytest.approx(0.065992, abs=1e-6)
    rows = {row["name"]: row for row in decision.tests}
    assert rows["A"]["p_adjusted"] == pytest.approx(0.065992, abs=1e-6) and not rows["A"]["significant"]
    assert "significant alone" in decision.reason and "not after Holm's correction" in decision.reason
    assert "Holm's correction over 2 candidates" in decision.reason and "none significant" in decision.reason
    # each alone would have been promoted: the correction is what keeps them out
    assert select({"A": a}, base).promote and select({"B": b}, base).promote


def test_holm_steps_down_and_the_best_significant_candidate_wins():
    # incumbent 0.20 se 0.01; unpaired
    # A 0.30 se 0.01: se(delta) 0.0141421, z 7.0711  -> p 7.69e-13
    # B 0.32 se 0.03: se(delta) 0.0316228, z 3.7947  -> p 7.39e-05
    # C 0.22 se 0.01: se(delta) 0.0141421, z 1.4142  -> p 0.078650
    # Holm, m = 3, alpha 0.05: A at 0.05/3 rejected, B at 0.05/2 rejected, C at 0.05 not.
    # The rejected with the highest pass@1 is B (0.32 > 0.30). Its step's level 0.025 one-sided:
    # z_for(0.975) = 1.959964 -> 0.12 +- 1.959964 * 0.0316228 = [0.058020, 0.181980], a 95 % interval;
    # adjusted p = max(3 * 7.69e-13, 2 * 7.39e-05) = 1.478e-04.
    decision = select({"A": score(0.30, 0.01), "B": score(0.32, 0.03), "C": score(0.22, 0.01)}, score(0.20, 0.01),
                      incumbent_name="champion v1")
    assert decision.promote and decision.winner == "B" and decision.n_tested == 3
    assert decision.delta == pytest.approx(0.12)
    assert (decision.delta_ci_low, decision.delta_ci_high) == (pytest.approx(0.058020, abs=1e-6),
                                                               pytest.approx(0.181980, abs=1e-6))
    assert decision.p_adjusted == pytest.approx(2 * 7.390116e-05, rel=1e-5)
    assert "95% CI [+0.058, +0.182] (unpaired)" in decision.reason
    assert "Holm's correction over 3 candidates tested against champion v1" in decision.reason
    assert "2 significant, the best of them promoted" in decision.reason
    rows = {row["name"]: row for row in decision.tests}
    assert rows["A"]["significant"] and "B has the higher pass@1" in rows["A"]["reason"]
    assert not rows["C"]["significant"] and rows["C"]["p_adjusted"] == pytest.approx(0.078650, abs=1e-6)


def test_an_exact_tie_is_reported_as_one_with_the_rule_that_broke_it():
    # the case: SFT and iw-SFT with identical per-prompt results, both clearly above the base.
    # Differences 1, 1, 0, 1 -> p 0.0013499 each; Holm m = 2: 0.0027 <= 0.05, both significant.
    base = Score(0.25, 0, 1, "e", (0.0, 0.0, 1.0, 0.0))
    same = (1.0, 1.0, 1.0, 1.0)
    decision = select({"v2 (sft)": Score(1.0, 1, 1, "e", same), "v3 (iwsft)": Score(1.0, 1, 1, "e", same)}, base,
                      incumbent_name="base", tie_rule=TIE_RULE)
    assert decision.winner == "v2 (sft)" and decision.tied == ("v2 (sft)", "v3 (iwsft)")
    assert decision.tie_rule == TIE_RULE and "SFT before iw-SFT" in TIE_RULE
    assert "2 significant, the best of them promoted" not in decision.reason
    assert ("2 significant; an exact tie between v2 (sft) and v3 (iwsft) (identical per-prompt results): "
            "v2 (sft) promoted, as the tie goes to the simpler method") in decision.reason
    assert "wins, in an exact tie" in decision.reason
    rows = {row["name"]: row for row in decision.tests}
    assert "in an exact tie with v2 (sft): not promoted (the tie goes to the simpler" in rows["v3 (iwsft)"]["reason"]
    assert "higher pass@1" not in rows["v3 (iwsft)"]["reason"]


def test_the_same_pass_at_1_is_a_tie_and_without_a_rule_the_first_listed_wins():
    decision = select({"first": score(0.5, 0.01), "second": score(0.5, 0.01)}, score(0.1, 0.01))
    assert decision.winner == "first" and decision.tied == ("first", "second")
    assert "an exact tie between first and second (the same pass@1 0.500): first promoted, as the tie goes to " \
           "the first listed" in decision.reason


def test_no_tie_is_reported_when_the_best_is_strictly_better_or_alone_significant():
    strict = select({"A": score(0.50, 0.01), "B": score(0.51, 0.01)}, score(0.1, 0.01), tie_rule=TIE_RULE)
    assert strict.winner == "B" and strict.tied == () and strict.tie_rule == ""
    assert "2 significant, the best of them promoted" in strict.reason and "tie" not in strict.reason
    # the same pass@1 but only one is significant (B's se is too wide): no tie to break, A wins on its own
    # B: se(delta) = hypot(0.3, 0.01) = 0.30017, z = 0.4 / 0.30017 = 1.3326 -> p 0.0913, not significant
    alone = select({"A": score(0.5, 0.01), "B": score(0.5, 0.3)}, score(0.1, 0.01), tie_rule=TIE_RULE)
    assert alone.winner == "A" and alone.tied == () and "1 significant, the best of them promoted" in alone.reason


def test_within_the_ci_a_tie_and_a_loss_are_kept_and_named():
    # delta 0.03, se(delta) = hypot(0.03, 0.03) = 0.042426, z 0.7071 -> p 0.2398: better, not sure
    better = select({"c": score(0.43, 0.03)}, score(0.40, 0.03))
    assert not better.promote and "within the CI" in better.reason and better.delta_ci_low < 0 < better.delta
    tie = select({"c": score(0.30, 0.02)}, score(0.30, 0.02))
    assert not tie.promote and tie.delta == 0 and "tie" in tie.reason
    # delta -0.2, se 0.0141421: the 90 % interval's upper end -0.2 + 0.023 < 0
    loss = select({"c": score(0.10, 0.01)}, score(0.30, 0.01))
    assert not loss.promote and "loses" in loss.reason


def test_margin_raises_the_bar():
    # delta 0.1, se 0.0141421: (0.1 - 0.05) / se = 3.5355 -> p 2.0e-4 wins; (0.1 - 0.08) / se = 1.4142 -> p 0.0786
    candidate, incumbent = score(0.40, 0.01), score(0.30, 0.01)
    assert select({"c": candidate}, incumbent, margin=0.05).promote
    assert not select({"c": candidate}, incumbent, margin=0.08).promote


def test_a_zero_width_paired_interval_never_promotes():
    # the candidate gains 0.5 on every prompt: the differences have sd 0, the interval zero width.
    # That is the normal approximation's blind spot (6 prompts!), not certainty: not promoted.
    incumbent = (0.0, 0.5, 0.0, 0.5, 0.0, 0.5)
    candidate = tuple(v + 0.5 for v in incumbent)
    decision = select({"c": Score(0.75, 0.3, 1.0, "e", candidate)}, Score(0.25, 0.0, 0.7, "e", incumbent))
    assert not decision.promote and decision.delta == pytest.approx(0.5)
    assert "degenerate interval: the per-prompt differences have sd 0 over 6 prompts" in decision.reason
    assert decision.delta_ci_low is None and decision.p_value is None


def test_fewer_than_two_prompts_never_promote():
    decision = select({"c": Score(1.0, 0, 1, "e", (1.0,))}, Score(0.0, 0, 1, "e", (0.0,)))
    assert not decision.promote and "degenerate interval: fewer than 2 prompts" in decision.reason


@pytest.mark.parametrize("bad", [None, 0.0, math.nan])
def test_unpaired_needs_a_usable_standard_error(bad):
    # no per-prompt results: the rule needs both se's, and never rebuilds one from a (clipped) CI
    candidate = Score(0.9, 0.85, 0.95, "e", (), 0.02)
    incumbent = Score(0.1, 0.05, 0.15, "e", (), bad)
    decision = select({"c": candidate}, incumbent, incumbent_name="champion v1")
    assert not decision.promote and "degenerate interval: no usable standard error for champion v1" in decision.reason
    assert "unpaired" in decision.reason and decision.delta == pytest.approx(0.8)


def test_one_degenerate_candidate_does_not_block_the_others_but_counts():
    # "bad" equals the incumbent on every prompt: differences 0, sd 0, degenerate, p = 1 by convention;
    # "good": differences 1, 1, 0, 1 -> p 0.0013499.
    # Holm, m = 2: good first, 2 * 0.0013499 = 0.0027 <= 0.05 -> rejected; bad is never rejected.
    incumbent = Score(0.25, 0, 1, "e", (0.0, 0.0, 1.0, 0.0))
    decision = select({"bad": Score(0.25, 0, 1, "e", (0.0, 0.0, 1.0, 0.0)), "good": Score(1.0, 1, 1, "e", (1.0,) * 4)},
                      incumbent)
    assert decision.winner == "good" and decision.p_adjusted == pytest.approx(2 * 0.0013499, abs=1e-6)
    bad = next(row for row in decision.tests if row["name"] == "bad")
    assert not bad["significant"] and bad["p_adjusted"] is None and "degenerate interval" in bad["reason"]


def test_different_eval_sets_are_not_comparable():
    decision = select({"c": score(0.9, 0.01, "aaa")}, score(0.1, 0.01, "bbb"))
    assert not decision.promote and "another eval set" in decision.reason and decision.delta is None


def test_pairing_needs_the_same_prompts():
    short = Score(0.5, 0.4, 0.6, "e", (1.0, 0.0), 0.05)
    assert one_sided_test(short, Score(0.5, 0.4, 0.6, "e", (1.0, 0.0, 1.0), 0.05)).how == "unpaired"
    assert one_sided_test(short, Score(0.5, 0.4, 0.6, "e", (), 0.05)).how == "unpaired"


def test_first_model_is_compared_with_the_base_and_later_ones_with_the_champion():
    base = score(0.19, 0.02)
    assert decide({"c": score(0.30, 0.02)}, None, base).promote
    first = decide({"c": score(0.20, 0.02)}, None, base)
    assert not first.promote and "base (no champion yet)" in first.reason
    decision = decide({"c": score(0.30, 0.01)}, score(0.40, 0.01), score(0.10, 0.01), champion_name="champion v2")
    assert not decision.promote and "champion v2" in decision.reason


def test_scores_come_from_metrics_files_and_version_tags():
    from_file = Score.from_metrics({"pass_at_1": 0.25, "pass_at_1_ci_low": 0.2, "pass_at_1_ci_high": 0.3,
                                    "pass_at_1_se": 0.025})
    from_tags = Score.from_metrics({"pass_at_1": "0.25", "pass_at_1_ci_low": "0.2", "pass_at_1_ci_high": "0.3",
                                    "pass_at_1_se": "0.025"})
    assert from_file == from_tags and from_file.se == 0.025
    assert Score.from_metrics({"pass_at_1": 0.25}).se is None  # an older version: no se recorded
    assert Score.from_metrics({"pass_at_1": 0.25, "pass_at_1_se": None}).se is None  # one prompt
    with pytest.raises(ValueError, match="pass_at_1"):
        Score.from_metrics({"greedy_accuracy": 0.3})


def test_ranked_breaks_exact_ties_by_the_simpler_method_then_the_order_of_methods():
    assert [ingredients(m) for m in ("sft", "iwsft", "sftq", "iwsftq", "dft")] == [0, 1, 1, 2, 1]
    # iw-SFT listed first and with the better greedy accuracy: the same pass@1 still goes to SFT
    scores = {"iwsft": {"pass_at_1": 0.3, "greedy_accuracy": 0.4}, "sftq": {"pass_at_1": 0.3},
              "sft": {"pass_at_1": 0.3, "greedy_accuracy": 0.2}, "iwsftq": {"pass_at_1": 0.3}}
    assert best_candidate(scores) == "sft" and ranked(scores) == ["sft", "iwsft", "sftq", "iwsftq"]
    # no tie: the higher metric wins whatever its ingredients
    assert ranked({"sft": {"pass_at_1": 0.3}, "iwsftq": {"pass_at_1": 0.31}}) == ["iwsftq", "sft"]
    assert best_candidate({"a": {"pass_at_1": 0.3}, "b": {"pass_at_1": 0.3}}) == "a"  # unknown names: listed order


def test_per_prompt_successes_round_trip_through_a_tag_value():
    text = encode_per_prompt([0, 1, 2, 2, 0], samples_per_prompt=2)
    assert text == "2:01220"
    assert decode_per_prompt(text) == (0.0, 0.5, 1.0, 1.0, 0.0)
    assert decode_per_prompt("") == () and decode_per_prompt("x:12") == () and decode_per_prompt("2:0!") == ()
    with pytest.raises(ValueError):
        encode_per_prompt([1], samples_per_prompt=64)


def test_one_confidence_setting_and_old_keys_are_named():
    from iwsft.config.loading import load_params, merge
    from iwsft.config.schema import check
    from iwsft.errors import UserError

    raw = load_params(Path(__file__).resolve().parents[3] / "params.yaml", check=False)
    raw.pop("registry", None)

    def registry(section):
        return check(merge(raw, {"registry": section} if section is not None else {})).registry

    assert registry({"confidence": 0.9}).confidence == 0.9
    assert registry(None).confidence == 0.95
    with pytest.raises(UserError, match=r"registry.z: unknown key"):  # moved to registry.confidence
        registry({"z": 1.96})
    with pytest.raises(UserError, match=r"registry.candidates: unknown key"):  # moved to the top-level methods:
        registry({"candidates": ["sft"]})
    with pytest.raises(UserError, match="registry.margn: unknown key"):
        registry({"margn": 0.1})
    with pytest.raises(UserError, match="confidence"):
        registry({"confidence": 1.5})
