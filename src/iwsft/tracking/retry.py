"""Retries for MLflow calls: a whole operation is tried again on a transient error (a server that is
restarting, a 5xx / 429 answer, a busy SQLite file), with exponential backoff; anything else re-raises
at once. Every MLflow call of the tracking and the registry goes through `with_retries`.
"""

from __future__ import annotations

import time

TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "INTERNAL_ERROR", "DEADLINE_EXCEEDED"}


def is_transient(error: BaseException) -> bool:
    """Worth retrying: connection trouble, 5xx / 429 answers, a busy SQLite file."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    text = str(error)
    if "database is locked" in text or "Max retries exceeded" in text or "Connection refused" in text:
        return True
    return getattr(error, "error_code", None) in TRANSIENT_CODES


def with_retries(call, *args, attempts: int = 3, first_delay: float = 0.5, **kwargs):
    """call(*args, **kwargs), retried on transient errors with exponential backoff (0.5 s, 1 s, ...)."""
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - is_transient decides, everything else re-raises
            if attempt == attempts - 1 or not is_transient(error):
                raise
            time.sleep(first_delay * 2 ** attempt)
