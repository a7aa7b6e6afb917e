"""Process-wide settings shared by the stages (kept free of heavy imports)."""

import os


def quiet() -> bool:
    """Progress bars off under CI (they flood logs), on for people."""
    return bool(os.environ.get("CI"))
