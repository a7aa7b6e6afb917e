"""The promotion rule: which candidate, if any, beats the incumbent (the champion, or the base model
when there is no champion yet) by enough to be sure? Pure functions; the registry applies the answer.

Rule (params.yaml `registry.confidence`, alpha = 1 - confidence; `registry.margin`):
- Every candidate is tested against the incumbent, one-sided: H0 "delta <= margin", with
  delta = pass@1(candidate) - pass@1(incumbent) and a p-value from the normal approximation,
  p = 1 - Phi((delta - margin) / se(delta)).
- The candidates are all tested on the same eval set, so taking the best of them and testing only
  that one would test a winner picked by the same noise (with 4 candidates, "one of them looks
  significant" happens far more often than alpha). Holm's step-down corrects for it: sort the m
  p-values, the i-th smallest (i = 1..m) is compared with alpha / (m - i + 1), stop at the first that
  fails. Equivalently, reject where the Holm-adjusted p-value (`holm`) is <= alpha. It controls the
  chance of promoting any candidate that is not really better, at alpha, whatever the candidates'
  correlation, and never rejects less than plain Bonferroni.
- Among the rejected candidates, the one with the highest pass@1 is promoted. An exact tie among them
  (the same pass@1, or the same per-prompt successes) is said to be a tie, with the rule that broke it:
  the candidates come in order of preference (the register stage: `ranked`, TIE_RULE), the first wins.
  Its interval is reported
  at the level Holm used for it: a two-sided 1 - 2 * alpha_i interval whose lower end is the one-sided
  1 - alpha_i bound, alpha_i = alpha / (m - i + 1); that lower end clears the margin iff its step rejects.
- Paired, when both models' per-prompt success rates on the same eval set are known (the register
  stage reads them from evaluate's samples and keeps them on each version): per-prompt differences
  d_p, delta = mean(d_p), se = sd(d_p) / sqrt(P) -- the same clustering by prompt as
  iwsft.evaluation.metrics.pass_at_1. Pairing removes the prompt-difficulty noise both models share: on the
  micro run, iw-SFT vs base is +0.065 with a paired 95 % CI of [+0.019, +0.111] but [-0.002, +0.137]
  unpaired.
- Unpaired otherwise (an incumbent registered without per-prompt results): se(delta) =
  sqrt(se_c^2 + se_i^2) from each model's own unclipped standard error (metrics `pass_at_1_se`), never
  rebuilt from CIs that were clipped to [0, 1] (a clipped CI understates the se, and so overstates
  significance, near 0 and 1).
- Degenerate intervals never promote: fewer than 2 prompts, paired differences with sd 0 (every
  prompt moved by the same amount, or none moved), an se that is missing, 0 or NaN. A zero-width
  interval is the normal approximation's blind spot, not certainty; the reason says which it was.
- margin = 0: "significantly better"; margin = 0.02: "significantly better by at least 2 points".
  Only results on the same eval set count: a registered version keeps one result per eval set
  (iwsft.tracking.evaluations), and the register stage gives the rule the champion's result on the
  current one. An incumbent measured only on another eval set is not comparable: keep it and say so
  (promote by hand: `iwsft registry promote VERSION`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# The statistics (z, the paired mean and se) live in iwsft.evaluation.stats, shared with evaluate's CIs
# and the report; evaluate must not depend on this file (a change to the promotion rule would
# otherwise re-run every evaluation).
from iwsft.evaluation.stats import normal_cdf, paired_mean_se, z_for
from iwsft.methods import METHODS

@dataclass(frozen=True)
class Score:
    """One model's metric on one eval set: the mean, its (display) CI and its unclipped standard error."""

    value: float
    ci_low: float
    ci_high: float
    eval_set: str = ""  # a fingerprint of the eval prompts and settings; "" = unknown
    per_prompt: tuple = ()  # success rate per eval prompt, in eval-set order; () = unknown
    se: float | None = None  # standard error of value (metrics `pass_at_1_se`); None = unknown

    @classmethod
    def from_metrics(cls, metrics: dict, metric: str = "pass_at_1", eval_set: str = "",
                     per_prompt: tuple = ()) -> "Score":
        """From a metrics file (numbers) or a version's tags (the same keys, as strings)."""
        try:
            value = float(metrics[metric])
            low = float(metrics.get(f"{metric}_ci_low", value))
            high = float(metrics.get(f"{metric}_ci_high", value))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"metrics have no usable {metric!r} ({error})") from None
        return cls(value, low, high, eval_set, tuple(per_prompt), float_or_none(metrics.get(f"{metric}_se")))


def float_or_none(value) -> float | None:
    """A metrics value or a tag's text as a float (NaN stays NaN); None for absent, "" or unparseable."""
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _usable(se) -> bool:
    return se is not None and math.isfinite(se) and se > 0


@dataclass(frozen=True)
class Test:
    """One candidate against the incumbent: H0 "delta <= margin", one-sided."""

    name: str
    value: float  # the candidate's own metric
    delta: float | None = None  # candidate - incumbent; None when not comparable
    se: float | None = None  # se(delta)
    how: str = ""  # "paired over P prompts" | "unpaired"
    p_value: float = 1.0  # unadjusted; 1.0 when it could not be tested
    problem: str = ""  # why it could not be tested (it never promotes then); "" = tested


def one_sided_test(candidate: Score, incumbent: Score, margin: float = 0.0, name: str = "the candidate",
                   incumbent_name: str = "the incumbent") -> Test:
    """The p-value of H0 "delta <= margin" (see the module docstring), or why there is none."""
    if candidate.eval_set and incumbent.eval_set and candidate.eval_set != incumbent.eval_set:
        return Test(name, candidate.value, problem=(
            f"{incumbent_name} was evaluated on another eval set ({incumbent.eval_set[:12]} vs "
            f"{candidate.eval_set[:12]}): not comparable, kept; promote by hand if you mean it"))
    paired = (len(candidate.per_prompt) == len(incumbent.per_prompt) > 0
              and candidate.eval_set == incumbent.eval_set)
    if paired:
        n = len(candidate.per_prompt)
        delta, se = paired_mean_se(candidate.per_prompt, incumbent.per_prompt)
        how = f"paired over {n} prompt{'s' if n != 1 else ''}"
        if se is None:
            return Test(name, candidate.value, delta, None, how, problem=(
                "degenerate interval: fewer than 2 prompts, so the spread of the differences is unknown"))
        sd = se * math.sqrt(n)
        if not _usable(se):
            return Test(name, candidate.value, delta, se, how, problem=(
                f"degenerate interval: the per-prompt differences have sd {sd:g} over {n} prompts "
                f"(zero width is the normal approximation's blind spot, not certainty)"))
    else:
        delta, how = candidate.value - incumbent.value, "unpaired"
        missing = [f"{who} (se {'missing' if s is None else f'{s:g}'})"
                   for who, s in ((name, candidate.se), (incumbent_name, incumbent.se)) if not _usable(s)]
        if missing:
            return Test(name, candidate.value, delta, None, how, problem=(
                f"degenerate interval: no usable standard error for {' and '.join(missing)} (missing: metrics "
                f"from before pass_at_1_se; 0 or NaN: no spread), so the unpaired comparison cannot be made"))
        se = math.hypot(candidate.se, incumbent.se)
    return Test(name, candidate.value, delta, se, how, normal_cdf(-(delta - margin) / se))


def holm(p_values) -> tuple[list[float], list[int]]:
    """(Holm-adjusted p-values, 0-based rank of each in ascending order), both in the input's order.

    adjusted p_(i) = max over j <= i of min(1, (m - j + 1) * p_(j)) for the sorted p_(1) <= ... <= p_(m);
    rejecting where it is <= alpha is exactly Holm's step-down. Ties keep the input order.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, ranks, running = [1.0] * m, [0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i], ranks[i] = running, rank
    return adjusted, ranks


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    delta: float | None = None  # of the candidate the decision is about: the winner, else the best-looking
    delta_ci_low: float | None = None  # at the Holm-adjusted level (see the module docstring)
    delta_ci_high: float | None = None
    p_value: float | None = None  # one-sided, unadjusted
    p_adjusted: float | None = None  # Holm
    winner: str | None = None  # the name of the candidate to promote
    about: str | None = None  # the name of the candidate the numbers are about
    n_tested: int = 0
    tests: tuple = ()  # one dict per candidate: name, delta, ci, p-values, significant, reason
    tied: tuple = ()  # the significant candidates in an exact tie with the winner, winner first; () = no tie
    tie_rule: str = ""  # what broke the tie (the winner came first in it); "" = no tie

    def as_dict(self) -> dict:
        return asdict(self)


def tied(a: Score, b: Score) -> bool:
    """An exact tie: the same metric, or the same per-prompt successes (when both are known)."""
    return a.value == b.value or (bool(a.per_prompt) and a.per_prompt == b.per_prompt)


def select(candidates: dict[str, Score], incumbent: Score, margin: float = 0.0, confidence: float = 0.95,
           incumbent_name: str = "the incumbent", tie_rule: str = "the first listed") -> Decision:
    """Holm over all `candidates` ({display name: score}, in order of preference for ties, which
    `tie_rule` names) against `incumbent`; the best significant one is the winner (see the module
    docstring), and an exact tie among the significant is reported as one."""
    if not candidates:
        return Decision(False, "no candidate to test")
    alpha = 1.0 - confidence
    z_for(confidence)  # validates confidence
    tests = [one_sided_test(score, incumbent, margin, name, incumbent_name) for name, score in candidates.items()]
    adjusted, ranks = holm([t.p_value for t in tests])
    m = len(tests)
    significant = [not t.problem and p <= alpha for t, p in zip(tests, adjusted)]
    winners = [i for i in range(m) if significant[i]]
    # max() keeps the first of equal values: the caller's order (tie_rule) breaks exact ties
    winner = max(winners, key=lambda i: tests[i].value) if winners else None
    ties = [winner] + [i for i in winners if i != winner and tied(candidates[tests[i].name],
                                                                  candidates[tests[winner].name])] if winners else []
    ties = ties if len(ties) > 1 else []
    winner_name = tests[winner].name if winner is not None else ""
    rows = []
    for i, test in enumerate(tests):
        level = alpha / (m - ranks[i])  # Holm's threshold for this candidate's step
        low = high = None
        if test.se is not None and not test.problem:
            half = z_for(1.0 - level, sides=1) * test.se
            low, high = test.delta - half, test.delta + half
        numbers = _numbers(test, candidates[test.name], incumbent, incumbent_name, margin, level, low, high,
                           test.p_value, adjusted[i])
        verdict = _verdict(test, i == winner, significant[i], alpha, margin, high, winner_name,
                           tie_rule if i in ties else "")
        rows.append({"name": test.name, "delta": test.delta, "ci_low": low, "ci_high": high,
                     "level": 1.0 - 2.0 * level, "how": test.how,
                     "p_value": None if test.problem else test.p_value,
                     "p_adjusted": None if test.problem else adjusted[i], "significant": significant[i],
                     "reason": f"{numbers or test.name}: {verdict}"})
    about = winner if winner is not None else max(range(m), key=lambda i: tests[i].value)
    row = rows[about]
    if ties:
        outcome = (f"{len(winners)} significant; {_tie(ties, tests, candidates)}: {winner_name} promoted, as the "
                   f"tie goes to {tie_rule}")
    elif winners:
        outcome = f"{len(winners)} significant, the best of them promoted"
    else:
        outcome = "none significant, kept"
    holm_note = (f"Holm's correction over {m} candidate{'s' if m != 1 else ''} tested against {incumbent_name} at "
                 f"alpha {alpha:g}: {outcome}")
    return Decision(winner is not None, f"{row['reason']} ({holm_note})", row["delta"], row["ci_low"],
                    row["ci_high"], row["p_value"], row["p_adjusted"], winner_name or None, tests[about].name, m,
                    tuple(rows), tuple(tests[i].name for i in ties), tie_rule if ties else "")


def _tie(ties: list, tests: list, candidates: dict) -> str:
    names = [tests[i].name for i in ties]
    scores = [candidates[name] for name in names]
    same = ("identical per-prompt results" if scores[0].per_prompt and all(s.per_prompt == scores[0].per_prompt
                                                                           for s in scores)
            else f"the same pass@1 {scores[0].value:.3f}")
    return f"an exact tie between {' and '.join(names)} ({same})"



def _numbers(test: Test, candidate: Score, incumbent: Score, incumbent_name: str, margin: float,
             level: float, low, high, p: float, p_adjusted: float) -> str:
    if test.delta is None:
        return ""
    head = f"{test.name} {candidate.value:.3f} vs {incumbent_name} {incumbent.value:.3f}: delta {test.delta:+.3f}"
    if low is None:
        return f"{head} ({test.how})"
    return (f"{head}, {_percent(1.0 - 2.0 * level)} CI [{low:+.3f}, {high:+.3f}] ({test.how}), margin {margin:.3f}, "
            f"p {_p(p)}, Holm-adjusted p {_p(p_adjusted)}")


def _verdict(test: Test, wins: bool, significant: bool, alpha: float, margin: float, high, winner: str,
             tie_rule: str = "") -> str:
    if test.problem:
        return test.problem + ("" if test.delta is None else ": not promoted")
    if wins:
        return "wins, in an exact tie" if tie_rule else "wins"
    if significant and tie_rule:
        return f"significant too, in an exact tie with {winner}: not promoted (the tie goes to {tie_rule})"
    if significant:
        return f"significant too, but {winner} has the higher pass@1: not promoted"
    if high < 0:
        return "loses"
    if test.p_value <= alpha:  # the case the correction exists for: it would have won uncorrected
        return f"significant alone (p {_p(test.p_value)} <= {alpha:g}) but not after Holm's correction: kept"
    if test.delta > margin:
        return "better but within the CI: not sure enough, kept"
    return "tie within the CI, kept"


def _percent(level: float) -> str:
    return f"{100 * level:.4g}%"


def _p(p: float) -> str:
    return f"{p:.3g}"


def decide(candidates: dict[str, Score], champion: Score | None, base: Score, margin: float = 0.0,
           confidence: float = 0.95, champion_name: str = "the champion",
           tie_rule: str = "the first listed") -> Decision:
    """Against the champion if there is one, else against the base model (the first promotion)."""
    if champion is None:
        return select(candidates, base, margin, confidence, "base (no champion yet)", tie_rule)
    return select(candidates, champion, margin, confidence, champion_name, tie_rule)


TIE_RULE = ("the simpler method (fewer of iwsft.methods' ingredients: importance weighting, quality bins, "
            "probability weighting; SFT before iw-SFT), then to the first in params.yaml's `methods:`")


def ingredients(method: str) -> int:
    """How many ingredients `method` adds to plain SFT (iwsft.methods): 0 for SFT, 1 for iw-SFT, 2 for
    iw-SFT(Q). An unknown name counts as the most complex."""
    spec = METHODS.get(method)
    if spec is None:
        return 99
    return int(spec.importance_weighted) + int(spec.uses_quality) + int(spec.probability_weighted)


def ranked(scores: dict[str, dict], metric: str = "pass_at_1") -> list[str]:
    """Methods best first by metric; an exact tie goes to the simpler method, then to the first listed
    (TIE_RULE): equal results do not justify an extra ingredient."""
    order = list(scores)
    return sorted(order, key=lambda m: (-scores[m][metric], ingredients(m), order.index(m)))


def best_candidate(scores: dict[str, dict], metric: str = "pass_at_1") -> str:
    """The best-looking method (the `candidate` alias): the first of `ranked`. Not a test."""
    return ranked(scores, metric)[0]
