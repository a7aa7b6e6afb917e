"""The promotion rule: does a candidate beat the incumbent (the champion, or the base model when
there is no champion yet) by enough to be sure? Pure functions; the registry applies the answer.

Rule: promote iff the lower end of the 95 % interval of (candidate - incumbent) pass@1 exceeds `margin`.
- Paired, when both models' per-prompt success rates on the same eval set are known (the register
  stage reads them from evaluate's samples and keeps them on each version): the difference per
  prompt d_p, its mean, and a CI of mean +- z * sd(d_p) / sqrt(P) -- the same clustering by prompt as
  iwsft.metrics.pass_at_1. Pairing removes the prompt-difficulty noise both models share: on the
  micro run, iw-SFT vs base is +0.065 with a paired CI of [+0.019, +0.111] but [-0.002, +0.137]
  unpaired.
- Unpaired otherwise (a champion registered without per-prompt results): se = half-width / z for
  each model's own CI, se(delta) = sqrt(se_c^2 + se_i^2). Conservative: it may keep a slightly
  better model, it does not promote noise.
- margin = 0: "significantly better"; margin = 0.02: "significantly better by at least 2 points".
- A tie within the CI keeps the incumbent. An incumbent measured on another eval set is not
  comparable: keep it and say so (promote by hand: `iwsft registry promote VERSION`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

Z_95 = 1.959963984540054
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Score:
    """One model's metric on one eval set: the mean and its 95 % CI."""

    value: float
    ci_low: float
    ci_high: float
    eval_set: str = ""  # a fingerprint of the eval prompts and settings; "" = unknown
    per_prompt: tuple = ()  # success rate per eval prompt, in eval-set order; () = unknown

    @classmethod
    def from_metrics(cls, metrics: dict, metric: str = "pass_at_1", eval_set: str = "",
                     per_prompt: tuple = ()) -> "Score":
        try:
            value = float(metrics[metric])
            low = float(metrics.get(f"{metric}_ci_low", value))
            high = float(metrics.get(f"{metric}_ci_high", value))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"metrics have no usable {metric!r} ({error})") from None
        return cls(value, low, high, eval_set, tuple(per_prompt))

    @property
    def standard_error(self) -> float:
        return max(self.ci_high - self.ci_low, 0.0) / (2 * Z_95)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    delta: float | None = None  # candidate - incumbent
    delta_ci_low: float | None = None
    delta_ci_high: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def compare(candidate: Score, incumbent: Score, margin: float = 0.0, z: float = Z_95,
            candidate_name: str = "the candidate", incumbent_name: str = "the incumbent") -> Decision:
    """Promote iff the lower end of delta's CI > margin (see the module docstring)."""
    if candidate.eval_set and incumbent.eval_set and candidate.eval_set != incumbent.eval_set:
        return Decision(False, f"{incumbent_name} was evaluated on another eval set ({incumbent.eval_set[:12]} vs "
                               f"{candidate.eval_set[:12]}): not comparable, kept; promote by hand if you mean it")
    paired = len(candidate.per_prompt) == len(incumbent.per_prompt) > 1 and candidate.eval_set == incumbent.eval_set
    if paired:
        diffs = [c - i for c, i in zip(candidate.per_prompt, incumbent.per_prompt)]
        delta = sum(diffs) / len(diffs)
        sd = math.sqrt(sum((d - delta) ** 2 for d in diffs) / (len(diffs) - 1))
        half_width = z * sd / math.sqrt(len(diffs))
        how = f"paired over {len(diffs)} prompts"
    else:
        delta = candidate.value - incumbent.value
        half_width = z * math.hypot(candidate.standard_error, incumbent.standard_error)
        how = "unpaired"
    low, high = delta - half_width, delta + half_width
    numbers = (f"{candidate_name} {candidate.value:.3f} vs {incumbent_name} {incumbent.value:.3f}: "
               f"delta {delta:+.3f}, 95% CI [{low:+.3f}, {high:+.3f}] ({how}), margin {margin:.3f}")
    if low > margin:
        return Decision(True, f"{numbers}: wins", delta, low, high)
    if high < -margin:
        verdict = "loses"
    elif delta > margin:
        verdict = "better but within the CI: not sure enough, kept"
    else:
        verdict = "tie within the CI, kept"
    return Decision(False, f"{numbers}: {verdict}", delta, low, high)


def decide(candidate: Score, champion: Score | None, base: Score, margin: float = 0.0, z: float = Z_95,
           candidate_name: str = "the candidate", champion_name: str = "the champion") -> Decision:
    """Against the champion if there is one, else against the base model (the first promotion)."""
    if champion is None:
        return compare(candidate, base, margin, z, candidate_name, "base (no champion yet)")
    return compare(candidate, champion, margin, z, candidate_name, champion_name)


def best_candidate(scores: dict[str, dict], metric: str = "pass_at_1") -> str:
    """The method with the highest metric; ties go to the higher greedy accuracy, then to the first listed."""
    order = list(scores)
    return max(order, key=lambda m: (scores[m][metric], scores[m].get("greedy_accuracy", 0.0), -order.index(m)))


def encode_per_prompt(successes, samples_per_prompt: int) -> str:
    """Per-prompt success counts as one tag value: "n:" + one base-36 digit per prompt ("2:0120...")."""
    if not 0 < samples_per_prompt < 36:
        raise ValueError(f"cannot encode {samples_per_prompt} samples per prompt in one digit")
    return f"{samples_per_prompt}:" + "".join(DIGITS[int(count)] for count in successes)


def decode_per_prompt(text: str) -> tuple:
    """The per-prompt success rates of encode_per_prompt's string; () for an empty or foreign value."""
    head, _, digits = (text or "").partition(":")
    if not head.isdigit() or int(head) == 0 or any(d not in DIGITS for d in digits):
        return ()
    n = int(head)
    return tuple(DIGITS.index(d) / n for d in digits)
