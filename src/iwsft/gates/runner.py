"""Run a boundary's suite with Great Expectations, write the summary and data docs, fail loudly.

GX 1.x in-process recipe (STACK.md 5): an ephemeral context, a pandas data source, one dataframe
asset + whole-dataframe batch definition + suite + ValidationDefinition per table; the DataFrame
goes in at run time through batch_parameters. GX is imported on the first gate of a process only
(~3 s), and not at all when a Python check already failed for want of readable data.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from iwsft.io.durable import atomic_directory
from iwsft.errors import DataError
from iwsft.gates import GATES_DIR, next_stage_for, registered_suite
from iwsft.gates.results import GX, MAX_EXAMPLES, Check, GateInput, describe_row, failure_message, summary
from iwsft.io.durable import write_json_atomic


def run_gate(gate: GateInput, out_dir: Path | None = GATES_DIR) -> dict:
    """Check `gate`; write out_dir/<boundary>.json (+ out_dir/<boundary>/<table>.html) unless
    out_dir is None; DataError with the failure message when any check fails. Returns the summary."""
    checks, results = list(gate.checks), {}
    if gate.frames:  # empty when the data could not be read at all: the Python checks say why
        _load_gx()  # timed on its own: per process, not per gate
    started = time.perf_counter()
    if gate.frames:
        results = _validate(gate)
        checks += [check for table, result in results.items() for check in _checks(table, result, gate.positions)]
    next_stage = next_stage_for(gate.boundary)
    written, docs = [], []
    if out_dir is not None and results:
        docs = _write_docs(results, out_dir / gate.boundary)
    report = summary(gate, checks, next_stage)
    if out_dir is not None:
        path = out_dir / f"{gate.boundary}.json"
        write_json_atomic(path, report)
        written = [str(path)] + docs
    if not report["success"]:
        raise DataError(failure_message(gate, checks, next_stage, written))
    rows = ", ".join(f"{len(frame)} {name}" for name, frame in gate.frames.items())
    print(f"gate {gate.boundary}: {len(checks)} checks passed on {gate.source} ({rows}) in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return report


_GX = None


def _load_gx():
    """Import GX once per process, quietly (no analytics, no progress bars on stderr)."""
    global _GX
    if _GX is None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        started = time.perf_counter()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a cosmetic sre_constants DeprecationWarning on import
            import great_expectations as gx
        # Said once per process: the import is most of what a gate costs.
        print(f"gates: Great Expectations loaded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        _GX = gx
    return _GX


def _validate(gate: GateInput) -> dict:
    """{table: ExpectationSuiteValidationResult} for every frame of `gate`."""
    gx = _load_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from iwsft.gates.suites import SUITES

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(gate.boundary)
    expectations = (registered_suite(gate.boundary) or SUITES[gate.boundary])(gate.settings, gate.lookups)
    results = {}
    for table, frame in gate.frames.items():
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(table)
        suite = context.suites.add(gx.ExpectationSuite(name=f"{gate.boundary}.{table}", expectations=expectations[table]))
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=suite.name, data=batch, suite=suite))
        index = [name for name in gate.positions if name in frame.columns]
        results[table] = definition.run(batch_parameters={"dataframe": frame}, result_format={
            "result_format": "COMPLETE", "unexpected_index_column_names": index, "partial_unexpected_count": MAX_EXAMPLES})
    return results


def _checks(table: str, result, positions: tuple[str, ...]) -> list[Check]:
    """One Check per expectation result, with up to MAX_EXAMPLES offending rows named."""
    checks = []
    for outcome in result.results:
        config, found = outcome.expectation_config, outcome.result or {}
        kwargs = config.kwargs
        columns = [kwargs[key] for key in ("column", "column_A", "column_B") if kwargs.get(key)]
        error = _exception(outcome.exception_info)
        rows = found.get("unexpected_index_list") or []
        checks.append(Check(
            name=config.type, success=bool(outcome.success), column=", ".join(columns) or None,
            description=(config.description or "") + (f"; GX could not evaluate it: {error}" if error else ""),
            unexpected=int(found.get("unexpected_count") or 0), rows=found.get("element_count"),
            examples=[describe_row(row, positions, columns) for row in rows[:MAX_EXAMPLES]],
            engine=GX, table=table, observed=found.get("observed_value"),
        ))
    return checks


def _exception(info) -> str | None:
    """GX reports a failure to evaluate (e.g. a missing column) in exception_info, flat or per metric."""
    entries = [info] if info and "raised_exception" in info else list((info or {}).values())
    messages = [entry.get("exception_message") for entry in entries if isinstance(entry, dict) and entry.get("raised_exception")]
    return messages[0].splitlines()[0] if messages else None


def _write_docs(results: dict, directory: Path) -> list[str]:
    """GX's own HTML rendering of each table's validation result (the data docs people open), written
    as one directory swap (iwsft.io.durable): a crash leaves the old pages or the new ones, never a mix,
    and a table from an older version of the suite leaves no stale page behind."""
    pages = _render_pages(results)  # before the swap: a rendering error leaves the old docs alone
    with atomic_directory(directory) as staging:
        for table, page in pages.items():
            (staging / f"{table}.html").write_text(page, encoding="utf-8")
    return [str(directory / f"{table}.html") for table in pages]


def _render_pages(results: dict) -> dict[str, str]:
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return {table: DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
            for table, result in results.items()}
