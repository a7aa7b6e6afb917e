"""iwsft.evaluation.metrics: hand-computed values, and the inequalities of PAPER.md §1 (x >= 1 + log x)."""

import math

import numpy as np
import pytest

from iwsft.evaluation.metrics import (
    LOG_RATIO_CAP,
    kish_ess,
    majority_at_k,
    majority_vote,
    paper_bounds,
    pass_at_1,
    pass_at_k_coverage,
    wilson_interval,
)


# -- pass@1 ------------------------------------------------------------------------------------
def test_pass_at_1_mean_and_clustered_ci_by_hand():
    # per-prompt means: 0.5, 0.5, 0.0, 1.0 -> mean 0.5
    # deviations 0, 0, -0.5, 0.5 -> sample variance (0.25 + 0.25) / 3 = 1/6, sd = 0.408248
    # standard error sd / sqrt(4) = 0.204124; half-width 1.959964 * 0.204124 = 0.400076
    # CI = [0.099924, 0.900076]
    result = pass_at_1([[1, 0], [0, 1], [0, 0], [1, 1]])
    assert result["mean"] == pytest.approx(0.5)
    assert result["se"] == pytest.approx(0.204124, abs=1e-6)
    assert result["ci_low"] == pytest.approx(0.099924, abs=1e-6)
    assert result["ci_high"] == pytest.approx(0.900076, abs=1e-6)
    assert (result["n_prompts"], result["n_samples"]) == (4, 2)


def test_pass_at_1_ci_is_clipped_to_unit_interval_but_the_se_is_not():
    # per-prompt means 0.5, 0.25, 1.0: mean 0.583333, sd 0.381881, se 0.381881 / sqrt(3) = 0.220479,
    # half-width 1.959964 * 0.220479 = 0.432131 -> [0.151202, 1.015464] clipped at 1.
    # The clipped CI's half-widths (0.432, 0.417) no longer give the se back; "se" still does.
    result = pass_at_1([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    assert result["mean"] == pytest.approx(7 / 12)
    assert result["se"] == pytest.approx(0.220479, abs=1e-6)
    assert result["ci_low"] == pytest.approx(0.151202, abs=1e-6)
    assert result["ci_high"] == 1.0


def test_pass_at_1_confidence_sets_the_width():
    # the first test's se 0.204124; 90 %: z = 1.644854 -> half-width 0.335754 around 0.5
    result = pass_at_1([[1, 0], [0, 1], [0, 0], [1, 1]], confidence=0.90)
    assert (result["ci_low"], result["ci_high"]) == (pytest.approx(0.164246, abs=1e-6), pytest.approx(0.835754, abs=1e-6))


def test_pass_at_1_equal_prompts_give_a_zero_se():
    # every prompt at 0.5: sd 0 -> se 0 and a zero-width CI (the promotion rule refuses it)
    result = pass_at_1([[1, 0], [0, 1], [1, 0]])
    assert result["se"] == 0.0 and result["ci_low"] == result["ci_high"] == 0.5


def test_pass_at_1_clustering_widens_the_ci_over_a_naive_binomial():
    # 10 prompts, all-or-nothing: 200 samples but only 10 independent units of evidence
    correct = np.repeat([[1], [0]] * 5, 20, axis=1)
    result = pass_at_1(correct)
    naive_low, naive_high = wilson_interval(100, 200)
    assert result["ci_high"] - result["ci_low"] > 2 * (naive_high - naive_low)


def test_pass_at_1_single_prompt_has_the_whole_interval_and_bad_shapes_fail():
    single = pass_at_1([[1, 0, 1]])
    assert (single["ci_low"], single["ci_high"], single["se"]) == (0.0, 1.0, None)  # spread unknown
    with pytest.raises(ValueError):
        pass_at_1([1, 0, 1])
    with pytest.raises(ValueError):
        pass_at_1(np.zeros((0, 3)))


# -- maj@k and coverage ------------------------------------------------------------------------
def test_majority_vote_breaks_ties_by_first_occurrence():
    assert majority_vote(["7", "5", "5", "7"]) == "7"
    assert majority_vote(["5", "7", "7", "5"]) == "5"
    assert majority_vote(["3", "4", "4"]) == "4"
    assert majority_vote([]) is None


def test_majority_at_k_uses_only_the_first_k_answers():
    answers = [["1", "2", "2", "2"], ["9", "8", "8", "9"], ["4", "4", "5", "5"], []]
    gold = ["1", "8", "4", "0"]
    # k=1: "1" right, "9" wrong, "4" right, empty wrong -> 2/4
    assert majority_at_k(answers, gold, k=1) == pytest.approx(0.5)
    # k=3: "2" wrong, "8" right, "4" right, empty wrong -> 2/4
    assert majority_at_k(answers, gold, k=3) == pytest.approx(0.5)
    # k=4: tie 1-vs-3 -> "2" wrong; tie 9/8 -> "9" (first) wrong; tie 4/5 -> "4" right -> 1/4
    assert majority_at_k(answers, gold, k=4) == pytest.approx(0.25)


def test_majority_at_k_accepts_a_verifier_and_numeric_gold():
    assert majority_at_k([["07", "07", "7"]], [7], k=3) == 0.0  # exact strings by default
    assert majority_at_k([["07", "07", "7"]], [7], k=3, is_correct=lambda a, g: int(a) == int(g)) == 1.0
    assert majority_at_k([["-29"]], [-29], k=1) == 1.0
    with pytest.raises(ValueError):
        majority_at_k([["1"]], ["1", "2"], k=1)
    with pytest.raises(ValueError):
        majority_at_k([["1"]], ["1"], k=0)


def test_coverage_counts_prompts_with_any_success():
    assert pass_at_k_coverage([[0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]]) == pytest.approx(0.75)


def test_wilson_interval_by_reference_values():
    # the textbook example k=0, n=10: [0, 0.2775]; and symmetry about 1/2
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(5, 10)
    assert low + high == pytest.approx(1.0)


def test_the_95_percent_quantile_is_derived_not_typed():
    # statistics.NormalDist().inv_cdf(0.975) = 1.959963984540054; one source for metrics and promotion
    from iwsft.evaluation.stats import Z_95, z_for

    assert Z_95 == z_for(0.95) == pytest.approx(1.959963984540054, abs=1e-12)


def test_kish_ess_extremes():
    assert kish_ess(np.zeros(7)) == pytest.approx(7.0)  # equal weights: every sample counts
    assert kish_ess([0.0, -1000.0, -1000.0]) == pytest.approx(1.0)  # one weight dominates
    assert kish_ess([800.0, 800.0, 0.0]) == pytest.approx(2.0)  # huge log-weights do not overflow
    assert kish_ess([]) == 0.0


# -- the paper's bounds ------------------------------------------------------------------------
@pytest.fixture
def pi_ref_samples():
    rng = np.random.default_rng(0)
    n = 2000
    logp_ref = -rng.gamma(2.0, 3.0, n)
    logp_theta = logp_ref + rng.normal(0.3, 1.5, n)
    logp_q = logp_ref + rng.normal(0.1, 1.0, n)
    rewards = rng.integers(0, 2, n).astype(float)
    return logp_theta, logp_ref, rewards, logp_q


def test_all_estimates_equal_c_ref_at_theta_equal_pi_ref():
    logp = np.array([-3.0, -1.5, -7.2, -0.4, -2.0])
    rewards = np.array([1, 0, 1, 1, 0])
    result = paper_bounds(logp, logp, rewards, logp_q=logp)
    assert result["c_ref"] == pytest.approx(0.6)
    for key in ("j_importance", "sft_bound", "iw_bound"):
        assert result[key] == pytest.approx(0.6)
    assert result["j_importance_ess"] == pytest.approx(3.0)  # all 3 successes have weight 1
    assert result["n_successes"] == 3 and result["n_trajectories"] == 5


def test_bounds_never_exceed_j_term_by_term_on_random_data(pi_ref_samples):
    logp_theta, logp_ref, rewards, logp_q = pi_ref_samples
    result = paper_bounds(logp_theta, logp_ref, rewards, logp_q=logp_q)
    assert result["sft_bound"] <= result["j_importance"]
    assert result["iw_bound"] <= result["j_importance"]
    # and trajectory by trajectory, which is why it holds for any sample
    for i in range(0, len(rewards), 97):
        one = paper_bounds(logp_theta[i:i + 1], logp_ref[i:i + 1], rewards[i:i + 1], logp_q[i:i + 1])
        assert one["sft_bound"] <= one["j_importance"] + 1e-12
        assert one["iw_bound"] <= one["j_importance"] + 1e-12


def test_iw_bound_is_tight_when_q_is_theta(pi_ref_samples):
    logp_theta, logp_ref, rewards, _ = pi_ref_samples
    result = paper_bounds(logp_theta, logp_ref, rewards, logp_q=logp_theta)
    assert result["iw_bound"] == pytest.approx(result["j_importance"], rel=1e-12)


def test_bounds_by_hand_on_two_trajectories():
    # trajectory 1: success, log-ratio theta/ref = log 2, q/ref = 0 (q = pi_ref)
    # trajectory 2: failure, contributes nothing
    # J = (2 * 1 + 0) / 2 = 1; SFT = (1 + log 2) / 2 = 0.846574; iw with q = pi_ref equals SFT
    logp_ref = np.array([-2.0, -1.0])
    logp_theta = logp_ref + np.array([math.log(2), 5.0])
    result = paper_bounds(logp_theta, logp_ref, [1, 0], logp_q=logp_ref)
    assert result["c_ref"] == pytest.approx(0.5)
    assert result["j_importance"] == pytest.approx(1.0)
    assert result["sft_bound"] == pytest.approx((1 + math.log(2)) / 2)
    assert result["iw_bound"] == pytest.approx(result["sft_bound"])


def test_no_q_gives_no_iw_bound():
    assert paper_bounds([-1.0], [-1.0], [1])["iw_bound"] is None


def test_huge_log_ratios_are_capped_not_overflowing():
    logp_ref = np.array([-500.0, -1.0, -2.0])
    logp_theta = np.array([-1.0, -1.0, -2.0])  # 499 nats likelier under theta
    result = paper_bounds(logp_theta, logp_ref, [1, 1, 1], logp_q=logp_theta)
    assert math.isfinite(result["j_importance"])
    assert result["j_importance"] == pytest.approx((math.exp(LOG_RATIO_CAP) + 2) / 3)
    assert result["iw_bound"] == pytest.approx(result["j_importance"])  # q = theta still tight
    assert result["log_ratios_capped"] == 1
    assert result["j_importance_ess"] == pytest.approx(1.0)


def test_capping_keeps_the_inequalities():
    # q and theta both far above the cap, theta further: without capping theta's ratio inside the
    # iw bound too, iw would exceed the (capped) J
    logp_ref = np.zeros(2)
    result = paper_bounds(np.array([80.0, 0.0]), logp_ref, [1, 1], logp_q=np.array([60.0, 0.0]))
    assert result["iw_bound"] <= result["j_importance"]


def test_bad_inputs_fail():
    with pytest.raises(ValueError):
        paper_bounds([-1.0, -2.0], [-1.0], [1, 0])
    with pytest.raises(ValueError):
        paper_bounds([], [], [])
    with pytest.raises(ValueError):
        paper_bounds([-1.0], [-1.0], [-1])
