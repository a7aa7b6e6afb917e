"""Prefect flows over the DVC stages of dvc.yaml (issue 6).

- `dag`: which stages to run and in what order, asked of DVC itself, plus params overrides.
- `stages`: runs one stage (`dvc repro --single-item`) as a subprocess and classifies failures.
- `publish`: the Prefect artifacts (report table, gate summaries, registry decision, MLflow links).
- `pipeline`: the tasks and the three flows that prefect.yaml deploys.

The flows hold no pipeline logic of their own: `dvc repro` alone does the same work; the flows add
retries, timeouts, logs in the Prefect UI, artifacts and schedules.
"""
