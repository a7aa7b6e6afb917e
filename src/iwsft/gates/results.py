"""What a gate found: one `Check` per expectation or Python check, the JSON summary, the message.

No Great Expectations import here: a file that fails before GX runs (unreadable, bad records)
is reported without paying GX's import.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_EXAMPLES = 5
PYTHON = "python"
GX = "great_expectations"


@dataclass
class Check:
    """One line of a gate's summary. `examples` name offending rows (line/row/model and id)."""

    name: str
    success: bool
    column: str | None = None
    description: str = ""
    unexpected: int = 0
    rows: int | None = None
    examples: list[str] = field(default_factory=list)
    engine: str = PYTHON
    table: str | None = None
    observed: Any = None  # a table-level expectation's observed value (e.g. the row count)

    def line(self) -> str:
        """One human line: what was expected of which column, how many rows fail, which ones."""
        if self.engine == PYTHON:
            return f"{self.name}: " + self.description.replace("\n", "\n    ")
        columns = "columns" if self.column and ", " in self.column else "column"
        text = self.name + (f" on {columns} {self.column!r}" if self.column else "")
        text += f" ({self.description})" if self.description else ""
        if self.unexpected:
            text += f": {self.unexpected} of {self.rows} rows fail"
        elif self.observed is not None:
            text += f": observed {self.observed}"
        return text + (f", e.g. {'; '.join(self.examples)}" if self.examples else "")


@dataclass
class GateInput:
    """A boundary's data, ready to check: named DataFrames (each with position columns such as
    `line` and `id` for messages), the thresholds the suites use, and Python checks already run.
    `payload` carries what the calling stage goes on with (e.g. the parsed raw records)."""

    boundary: str
    source: str
    frames: dict[str, Any]
    settings: dict
    checks: list[Check]
    positions: tuple[str, ...] = ("line", "id")
    payload: Any = None
    lookups: dict = field(default_factory=dict)  # large value sets the suites need (not in the summary)


def describe_row(row: dict, positions: tuple[str, ...], columns: list[str]) -> str:
    """"line 4 (id 'p1-0'): 18" from one entry of GX's unexpected_index_list."""
    first, *rest = [name for name in positions if name in row] or ["row"]
    label = f"{first} {_show(row.get(first, '?'), quote=False)}" + "".join(f" ({name} {_show(row[name])})" for name in rest)
    values = [name for name in columns if name in row and name not in positions]
    if len(values) == 1:
        return f"{label}: {_show(row[values[0]])}"
    return label + (": " + ", ".join(f"{name}={_show(row[name])}" for name in values) if values else "")


def _show(value: Any, quote: bool = True) -> str:
    """A cell as people write it: 3 not np.int64(3), NaN, strings quoted and cut to 60 characters."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, str):
        value = value if len(value) <= 60 else value[:57] + "..."
        return repr(value) if quote else value
    return str(value)


def summary(gate: GateInput, checks: list[Check], next_stage: str) -> dict:
    """The JSON a gate writes. Deterministic (no timings, no paths of its own), because the next
    stage depends on it: a gate that re-runs on the same data must not re-run what follows."""
    return {
        "boundary": gate.boundary,
        "next_stage": next_stage,
        "source": gate.source,
        "success": all(check.success for check in checks),
        "rows": {name: len(frame) for name, frame in gate.frames.items()},
        "settings": gate.settings,
        "failed": [check.name + (f"[{check.column}]" if check.column else "") for check in checks if not check.success],
        "checks": [asdict(check) for check in checks],
    }


def failure_message(gate: GateInput, checks: list[Check], next_stage: str, written: list[str]) -> str:
    failed = [check for check in checks if not check.success]
    header = (f"data gate {gate.boundary!r} failed: {gate.source} is not fit for the {next_stage} stage "
              f"({len(failed)} of {len(checks)} checks failed)")
    lines = [header + ":"] + [f"  {check.line()}" for check in failed]
    if not any(check.engine == GX for check in checks):
        lines.append("  (the Great Expectations suite runs once these are fixed)")
    if written:
        lines.append(f"  details: {', '.join(written)}")
    return "\n".join(lines)
