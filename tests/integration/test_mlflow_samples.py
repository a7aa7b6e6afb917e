"""Evaluation you can browse: the micro DAG's evaluate stage logged its per-sample table to its MLflow run
(iwsft.tracking.sample_table), the report links it, and the MLflow UI draws it as a table, checked in
headless Chromium (tests/browser.py) against a control that must fail the check: the same JSON logged as a
plain file, which the UI shows as text.

The server serves a copy of the micro project's store (its database; the artifacts stay where the runs
recorded them), so the control run changes nothing other tests read.
IWSFT_UI_SHOTS=DIR keeps the screenshot in DIR; the committed one:
  IWSFT_UI_SHOTS=docs pytest tests/integration/test_mlflow_samples.py
"""

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

import browser  # tests/browser.py (tests/ is on sys.path by tests/conftest.py)
from iwsft.data.records import read_jsonl
from iwsft.tracking import server as mlflow_server
from iwsft.tracking.sample_table import ARTIFACT, COLUMNS, link_file, read_link

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
needs_browser = pytest.mark.skipif(browser.find() is None, reason=(
    "no Chromium on PATH (apt-get install chromium; .ci/run installs it): the UI is not checked in a browser"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def shown_table(dom: browser.Node):
    """The artifact viewer's table (role=table): its header texts and its body rows' cell texts; None: not drawn."""
    tables = dom.find_all(role="table")
    if not tables:
        return None
    headers = [h.text() for h in tables[0].find_all(role="columnheader")]
    rows = [[cell.text() for cell in row.find_all(role="cell")] for row in tables[0].find_all(role="row")]
    return headers, [row for row in rows if row]


def artifact_page(url: str, run: dict, experiment_id: str) -> str:
    return f"{url}/#/experiments/{experiment_id}/runs/{run}/artifacts/{ARTIFACT}"


@pytest.fixture(scope="module")
def store_copy(micro_project, tmp_path_factory):
    """An MLflow server on a copy of the micro project's store, on a free 127.0.0.1 port."""
    root = tmp_path_factory.mktemp("samples-ui")
    (root / "mlruns").mkdir()
    shutil.copy2(micro_project.path / "mlruns" / "mlflow.db", root / "mlruns" / "mlflow.db")
    started = mlflow_server.start(root, free_port(), timeout=180)
    yield started.url, root
    assert mlflow_server.stop(root / ".run" / "mlflow.pid")


def test_evaluate_wrote_the_link_and_the_report_names_it(micro_project):
    for method in ("base", "iwsft"):
        link = read_link(micro_project.path / link_file(method))
        assert link is not None and link["artifact"] == ARTIFACT, method
        samples = read_jsonl(micro_project.path / "data" / "evaluate" / method / "samples.jsonl")
        per_prompt = link["rows"] // link["prompts"]  # n samples + the greedy one
        assert link["prompts"] == min(50, len({s["prompt"] for s in samples}))  # evaluate.log_samples: 50
        assert per_prompt == len(samples) // len({s["prompt"] for s in samples}) + 1
        report = (micro_project.path / "reports" / "report.md").read_text()
        assert f"run `{link['run_id']}`, artifact `{ARTIFACT}`" in report


@needs_browser
def test_the_mlflow_ui_shows_an_evaluate_runs_sample_table(micro_project, store_copy, tmp_path):
    url, root = store_copy
    link = read_link(micro_project.path / link_file("iwsft"))
    samples = read_jsonl(micro_project.path / "data" / "evaluate" / "iwsft" / "samples.jsonl")
    page = artifact_page(url, link["run_id"], link["experiment_id"])
    dom = browser.render(page, ready=lambda d: shown_table(d) is not None and shown_table(d)[1])
    headers, rows = shown_table(dom)
    assert headers == list(COLUMNS), headers
    first = dict(zip(headers, rows[0]))
    # the first sample of the first prompt, as samples.jsonl has it (the cells show text whitespace-collapsed)
    assert (first["prompt_index"], first["sample"], first["greedy"]) == ("0", "0", "false")
    assert first["prompt"] == " ".join(str(samples[0]["prompt"]).split())
    assert first["completion"] == " ".join(samples[0]["completion"].split())
    assert first["reward"] == str(samples[0]["reward"])
    assert "evaluate@iwsft" in dom.text()  # the run's own page

    # control: the very same JSON as a plain artifact (no `mlflow.loggedArtifacts` tag) is shown as text
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    logged = client.download_artifacts(link["run_id"], ARTIFACT, str(tmp_path))
    experiment = client.create_experiment("control", artifact_location=str(root / "control-artifacts"))
    control = client.create_run(experiment, run_name="control")
    client.log_artifact(control.info.run_id, logged, os.path.dirname(ARTIFACT))
    client.set_terminated(control.info.run_id)
    control_dom = browser.render(artifact_page(url, control.info.run_id, experiment),
                                 ready=lambda d: "completion" in d.text())
    assert shown_table(control_dom) is None, control_dom.text()[:500]

    keep = os.environ.get("IWSFT_UI_SHOTS")
    png = browser.screenshot(page, (ROOT / keep if keep else tmp_path) / "mlflow-samples.png", window=(2000, 1000))
    assert browser.looks_drawn(png, window=(2000, 1000))
    assert json.loads(Path(logged).read_text())["columns"] == list(COLUMNS)
