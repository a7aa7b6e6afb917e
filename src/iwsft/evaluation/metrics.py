"""Evaluation metrics and the paper's bounds, as pure numpy functions (no I/O, no torch).

- `pass_at_1`: mean accuracy of n samples per prompt at T=1, with its standard error and a 95 % CI,
  both clustered by prompt.
- `majority_at_k`, `pass_at_k_coverage`: maj@k and "any of n correct".
- `paper_bounds`: on trajectories sampled from pi_ref, the importance-sampling estimate of J(theta)
  (PAPER.md Eq. 3) and the two lower bounds the methods optimise: SFT's (Eq. 4/17) and iw-SFT's
  (Eq. 19). Comparing them shows how loose each bound is for a trained model.
- `wilson_interval`: a binomial CI for k successes in n independent trials.

Simplifications, stated honestly: the CIs are normal approximations (good for hundreds of prompts,
rough for a handful), and the importance-sampling estimate caps log-ratios (see `LOG_RATIO_CAP`).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

import numpy as np

from iwsft.evaluation.stats import Z_95, standard_error, z_for

# exp(50) ~ 5e21: a trajectory 50 nats likelier under theta than under pi_ref already dominates any
# realistic sample, so capping there changes nothing readable while keeping sums far from overflow.
LOG_RATIO_CAP = 50.0


def pass_at_1(correct, confidence: float = 0.95) -> dict:
    """pass@1 of a [P, n] 0/1 array (P prompts, n samples each at T=1) with its se and a CI (95 %).

    The n samples of one prompt are correlated (an easy prompt is solved by all of them), so the
    P*n samples are not independent trials: a binomial CI on P*n would be too narrow. We treat the
    per-prompt means m_p as the independent units instead:
        mean = average(m_p)  (= average of all samples, since every prompt has n of them)
        se   = sd(m_p, ddof=1) / sqrt(P)             (not clipped)
        CI   = mean +- z * se, clipped to [0, 1]     (z = z_for(confidence), iwsft.evaluation.stats)
    The CI is for reading; comparisons use `se`, because a CI clipped at 0 or 1 no longer says how
    wide the sampling noise is. Limits: with P = 1 the spread between prompts is unknown, so the CI
    is the whole [0, 1] and se is None; when every prompt has the same mean (e.g. all 0) sd = 0, se = 0
    and the CI has zero width, which is the normal approximation's blind spot, not certainty (the
    promotion rule refuses both).

    Returns dict(mean, se, ci_low, ci_high, n_prompts, n_samples) where n_samples is per prompt.
    """
    values = np.asarray(correct, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"pass_at_1 needs a non-empty [prompts, samples] array, got shape {values.shape}")
    n_prompts, n_samples = values.shape
    per_prompt = values.mean(axis=1)
    mean = float(per_prompt.mean())
    if n_prompts < 2:
        se, low, high = None, 0.0, 1.0
    else:
        se = standard_error(per_prompt)
        half_width = z_for(confidence) * se
        low, high = float(max(0.0, mean - half_width)), float(min(1.0, mean + half_width))
    return {"mean": mean, "se": se, "ci_low": low, "ci_high": high, "n_prompts": int(n_prompts),
            "n_samples": int(n_samples)}


def majority_vote(answers: Sequence[str]) -> str | None:
    """The most frequent answer; a tie goes to the answer seen first (stable, so reproducible)."""
    if not answers:
        return None
    counts = Counter(answers)
    top = max(counts.values())
    return next(answer for answer in answers if counts[answer] == top)


def majority_at_k(
    answers: Sequence[Sequence[str]],
    gold: Sequence,
    k: int,
    is_correct: Callable[[str, object], bool] | None = None,
) -> float:
    """maj@k: the fraction of prompts whose majority answer among the first k samples is right.

    `answers` holds one list of (caller-normalised) answer strings per prompt. Votes count exact
    strings; `is_correct(answer, gold)` judges the winner (default: `answer == str(gold)`), so a
    verifier that accepts `07` for `7` can be passed without changing how votes are counted.
    A prompt with no answers counts as wrong.
    """
    if k < 1:
        raise ValueError(f"majority_at_k needs k >= 1, got {k}")
    if len(answers) != len(gold):
        raise ValueError(f"majority_at_k: {len(answers)} prompts of answers but {len(gold)} gold answers")
    if not answers:
        raise ValueError("majority_at_k needs at least one prompt")
    judge = is_correct or (lambda answer, target: answer == str(target))
    wins = [
        (winner := majority_vote(list(samples)[:k])) is not None and bool(judge(winner, target))
        for samples, target in zip(answers, gold)
    ]
    return float(np.mean(wins))


def pass_at_k_coverage(correct) -> float:
    """Fraction of prompts with at least one correct sample among the n drawn (pass@n)."""
    values = np.asarray(correct)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"pass_at_k_coverage needs a non-empty [prompts, samples] array, got shape {values.shape}")
    return float((values > 0).any(axis=1).mean())


def wilson_interval(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for k successes in n independent trials (stays inside [0, 1] and is
    sensible at k = 0 or k = n, where the plain normal interval collapses to a point)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half_width = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # at k = 0 (k = n) the bound is exactly 0 (1); computed, it is off by rounding (~1e-17)
    low = 0.0 if k == 0 else float(max(0.0, centre - half_width))
    high = 1.0 if k == n else float(min(1.0, centre + half_width))
    return low, high


def kish_ess(log_weights) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2, computed from log-weights.

    ESS is unchanged by scaling all weights, so we subtract the max log-weight first: this is
    exact and cannot overflow, unlike exponentiating raw sequence log-ratios.
    """
    values = np.asarray(log_weights, dtype=np.float64)
    if values.size == 0 or values.max() == -np.inf:
        return 0.0  # no weights, or all of them zero
    if values.max() == np.inf:
        return float((values == np.inf).sum())  # infinite weights share everything equally
    shifted = np.exp(values - values.max())
    return float(shifted.sum() ** 2 / np.square(shifted).sum())


def paper_bounds(logp_theta, logp_ref, rewards, logp_q=None) -> dict:
    """J(theta) and the SFT / iw-SFT lower bounds, estimated on trajectories drawn from pi_ref.

    Inputs are one value per trajectory: log-probabilities summed over completion tokens under
    theta, pi_ref and (optionally) q, and the reward R in {0, 1} (any R >= 0 works). Returns:
      c_ref        = mean(R)                                        pi_ref's success rate (Eq. 5)
      j_importance = mean(exp(lt - lr) * R)                         J(theta), unbiased (Eq. 3)
      sft_bound    = mean((1 + lt - lr) * R)                        SFT's bound with its constant (Eq. 4/17)
      iw_bound     = mean(exp(lq - lr) * (1 + lt - lq) * R)         iw-SFT's bound (Eq. 19); None without logp_q
      j_importance_ess  Kish ESS of the weights exp(lt - lr) on the R > 0 trajectories: close to
                        n_successes means j_importance is trustworthy, close to 1 means one
                        trajectory decides it
      n_successes, n_trajectories, log_ratios_capped

    Because x >= 1 + log x, sft_bound <= j_importance and iw_bound <= j_importance hold term by term;
    at theta = pi_ref all three equal c_ref, and with q = theta iw_bound equals j_importance.

    Overflow: the log-ratios lt - lr and lq - lr are capped at LOG_RATIO_CAP before use in the
    exponentiated estimators (j_importance, iw_bound), i.e. they are evaluated for a theta and q whose
    likelihood ratio to pi_ref is capped at exp(50). Capping lt - lr inside iw_bound too keeps both
    inequalities and the q = theta equality exact. `log_ratios_capped` counts the trajectories
    affected; if it is not 0 the estimate of J is biased low, and the ESS will say it is unreliable.
    sft_bound needs no exponential and uses the raw ratio.
    """
    theta, ref, reward = (np.asarray(a, dtype=np.float64) for a in (logp_theta, logp_ref, rewards))
    q = None if logp_q is None else np.asarray(logp_q, dtype=np.float64)
    shapes = {theta.shape, ref.shape, reward.shape} | ({q.shape} if q is not None else set())
    if len(shapes) != 1 or theta.ndim != 1 or theta.size == 0:
        raise ValueError(f"paper_bounds needs equal-length, non-empty 1-D arrays, got shapes {sorted(shapes)}")
    if (reward < 0).any():
        raise ValueError("paper_bounds: rewards must be >= 0 (the bound x >= 1 + log x is multiplied by R)")

    theta_ratio = theta - ref
    capped_theta_ratio = np.minimum(theta_ratio, LOG_RATIO_CAP)
    capped = theta_ratio > LOG_RATIO_CAP
    iw_bound = None
    if q is not None:
        q_ratio = q - ref
        capped_q_ratio = np.minimum(q_ratio, LOG_RATIO_CAP)
        capped |= q_ratio > LOG_RATIO_CAP
        # log(p_theta / q) written through the capped ratios, so that q = theta gives exactly 1.
        iw_terms = np.exp(capped_q_ratio) * (1.0 + capped_theta_ratio - capped_q_ratio) * reward
        iw_bound = float(iw_terms.mean())

    successes = reward > 0
    return {
        "c_ref": float(reward.mean()),
        "j_importance": float((np.exp(capped_theta_ratio) * reward).mean()),
        "sft_bound": float(((1.0 + theta_ratio) * reward).mean()),
        "iw_bound": iw_bound,
        "j_importance_ess": kish_ess(theta_ratio[successes]),
        "n_successes": int(successes.sum()),
        "n_trajectories": int(theta.size),
        "log_ratios_capped": int(capped.sum()),
    }
