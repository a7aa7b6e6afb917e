"""Per-prompt success counts as one MLflow tag value, so that a registered version carries what the
promotion rule pairs by prompt (iwsft.tracking.promotion) without an artifact download."""

from __future__ import annotations

DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


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
