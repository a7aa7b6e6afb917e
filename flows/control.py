"""The control pipeline (control/dvc.yaml) as a Prefect flow: its stages in DVC's order, one task
each (`dvc repro --single-item STAGE`, flows.stages), so that DVC still skips what is up to date and
`cd control && dvc repro` alone does the same work. The flow adds retries for crashes (never for a
failed gate or a user error: those fail the same way again), per-stage logs and a schedule
(prefect.yaml's `control-weekly`).

    python -m flows.control                  # the whole control pipeline, on an ephemeral server
    python -m flows.control --target report  # up to the report
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.dag import load_dag
from flows.stages import StageFailed, repro_stage

ROOT = Path(__file__).resolve().parents[1]
DVC_FILE = "control/dvc.yaml"


def plan(root: Path = ROOT, target: str | None = None) -> tuple[str, ...]:
    """The control stages `dvc repro` would check for `target` (a stage of control/dvc.yaml), in order."""
    return load_dag(root, f"{DVC_FILE}:{target}" if target else DVC_FILE).order


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=30,
      retry_condition_fn=lambda task, run, state: _retriable(state))
def control_stage(stage: str, root: str, timeout_s: float | None) -> dict:
    logger = get_run_logger()
    result = repro_stage(stage, root, timeout_s, logger.info)
    logger.info(f"{stage}: {result.outcome} in {result.seconds:.1f} s")
    return {"stage": stage, "outcome": result.outcome, "seconds": result.seconds}


def _retriable(state) -> bool:
    try:
        state.result()
    except StageFailed as failure:
        return failure.retriable
    except Exception:
        return True
    return False


@flow(name="iwsft-control", log_prints=True)
def control_pipeline(target: str | None = None, timeout_s: float = 3600.0) -> list[dict]:
    """Every control stage up to `target` (default: all), stopping at the first failure."""
    return [control_stage(stage, str(ROOT), timeout_s) for stage in plan(ROOT, target)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target")
    args = parser.parse_args(argv)
    state = control_pipeline(target=args.target, return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
