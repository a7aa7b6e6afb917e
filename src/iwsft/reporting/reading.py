"""The "reading the table" paragraph: sentences generated from the numbers (which methods differ, which
cannot be told apart, which bounds held, where J rests on too few effective samples).

Two methods are compared by their paired per-prompt difference when both have `per_prompt` (as register's
promotion test does; iwsft.evaluation.stats.paired_difference), else by whether their 95 % CIs overlap.
"""

from __future__ import annotations

from iwsft.evaluation.stats import paired_difference
from iwsft.methods import NAMES, comparisons
from iwsft.reporting.tables import finite_or_none, fmt, label, ordered_methods

# Each iw method against the SFT variant trained on the same data: the comparison the paper makes.
PAIRS = comparisons(NAMES)
TOLERANCE = 1e-9  # float noise when checking J >= iw >= SFT (they are equal at theta = pi_ref)


def intervals_overlap(a: dict, b: dict) -> bool | None:
    bounds = [finite_or_none(m.get(key)) for m in (a, b) for key in ("pass_at_1_ci_low", "pass_at_1_ci_high")]
    if None in bounds:
        return None
    low_a, high_a, low_b, high_b = bounds
    return low_a <= high_b and low_b <= high_a


def _verdict(challenger: dict, baseline: dict) -> str | None:
    paired = paired_difference(challenger.get("per_prompt"), baseline.get("per_prompt"))
    if paired is not None:
        mean, low, high = paired
        told_apart = low > 0 or high < 0
        how = (f"difference {mean:+.3f}, paired 95% CI [{low:+.3f}, {high:+.3f}] over {len(challenger['per_prompt'])} "
               f"prompts{'' if told_apart else ', which includes 0'}")
        return f"is {'better' if mean > 0 else 'worse'} ({how})" if told_apart else f"cannot be told apart ({how})"
    overlap = intervals_overlap(challenger["metrics"], baseline["metrics"])
    if overlap is None:
        return None
    if overlap:
        return "cannot be told apart (their 95% CIs overlap)"
    better = challenger["metrics"]["pass_at_1"] > baseline["metrics"]["pass_at_1"]
    return f"is {'better' if better else 'worse'} (95% CIs do not overlap)"


def bound_order(metrics: dict) -> tuple[bool, bool, bool] | None:
    """(J >= iw, J >= SFT, iw >= SFT). The first two hold mathematically; the third is the
    tightening iw-SFT hopes for. None when a number is missing."""
    j, iw, sft = (finite_or_none(metrics.get(k)) for k in ("j_importance", "iw_bound", "sft_bound"))
    if None in (j, iw, sft):
        return None
    return j >= iw - TOLERANCE, j >= sft - TOLERANCE, iw >= sft - TOLERANCE


def reading(results: dict) -> list[str]:
    """Sentences generated from the numbers: what differs, what cannot be told apart, which
    bounds held, and where J rests on too few effective samples to trust."""
    metrics = {m: results[m]["metrics"] for m in ordered_methods(results)}
    sentences = []
    for challenger, baseline in PAIRS + tuple((m, "base") for m in metrics if m != "base"):
        if challenger not in metrics or baseline not in metrics:
            continue
        verdict = _verdict(results[challenger], results[baseline])
        if verdict is None:
            continue
        a, b = metrics[challenger]["pass_at_1"], metrics[baseline]["pass_at_1"]
        sentences.append(f"- {label(challenger)} vs {label(baseline)}: pass@1 {fmt(a)} vs {fmt(b)}, {verdict}.")

    held, failed, sft_only = [], [], []
    for method, m in metrics.items():
        order = bound_order(m)
        if order is not None:
            (held if all(order) else failed).append(f"{label(method)}{'' if all(order) else _which_failed(order)}")
        elif finite_or_none(m.get("iw_bound")) is None and None not in (finite_or_none(m.get("j_importance")), finite_or_none(m.get("sft_bound"))):
            ok = m["j_importance"] >= m["sft_bound"] - TOLERANCE
            (sft_only if ok else failed).append(label(method) + ("" if ok else " (not J ≥ SFT)"))
    if held:
        sentences.append(f"- J ≥ iw bound ≥ SFT bound held for: {', '.join(held)}.")
    if sft_only:
        sentences.append(f"- J ≥ SFT bound held for: {', '.join(sft_only)} (no iw bound: these methods train with w = 1, "
                         "no q).")
    by_construction = [label(method) for method, m in metrics.items() if m.get("bound_q") == "theta"]
    if by_construction:
        sentences.append(f"- {', '.join(by_construction)} trained with q = θ (train.q_mode: current), so their iw bound "
                         "equals J by construction; only q = EMA (q_mode: ema) gives an iw bound of its own.")
    if failed:
        sentences.append(f"- It did not hold for: {'; '.join(failed)}. Only J ≥ each bound is guaranteed "
                         "(x ≥ 1 + log x); iw ≥ SFT is the tightening iw-SFT aims for, not a theorem.")

    for method, m in metrics.items():
        ess, successes = finite_or_none(m.get("j_importance_ess")), finite_or_none(m.get("n_successes"))
        if ess is not None and successes and ess < max(10.0, 0.1 * successes):
            sentences.append(f"- J for {label(method)} rests on an effective sample size of {ess:.1f} out of "
                             f"{successes:.0f} successes: treat it as rough.")
        j, low, high = (finite_or_none(m.get(k)) for k in ("j_importance", "pass_at_1_ci_low", "pass_at_1_ci_high"))
        if None not in (j, low, high) and not low <= j <= high:
            sentences.append(f"- {label(method)}: J = {j:.3f} lies outside its pass@1 CI although both estimate the "
                             "same success rate: the importance weights may be too uneven to trust J (see its ESS).")
        if low is not None and low == high:
            sentences.append(f"- {label(method)}'s CI has zero width (every prompt scored the same): "
                             "that is the normal approximation failing, not certainty.")
    sentences.append("- \"Cannot be told apart\" does not prove two methods equal, only that this evaluation "
                     "cannot separate them. J is estimated on π_ref's held-out samples and targets the same "
                     "quantity as pass@1.")
    return sentences


def _which_failed(order: tuple[bool, bool, bool]) -> str:
    names = ("J ≥ iw", "J ≥ SFT", "iw ≥ SFT")
    return " (" + ", ".join(f"not {n}" for n, ok in zip(names, order) if not ok) + ")"
