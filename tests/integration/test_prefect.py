"""Prefect end to end: scripts/serve.sh on free loopback ports (server, MLflow if the project has
it, the deployments of prefect.yaml, a process worker), deployment runs triggered with the CLI and
watched through the REST API, then scripts/stop.sh.

Speed: the project is a copy of the `micro_project` DAG (already reproduced), so most stages are
up to date; the report stage really runs (its output is deleted first), and the bad-data case
really runs curate. About 2-3 min in all on 2 cores, most of it process start-up.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: prefect, dvc, iwsft
sys.path.insert(0, str(ROOT))
from flows import dag  # noqa: E402

pytestmark = pytest.mark.integration
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
BAD_RAW = '{"prompt": "1+2=", "completion": "3", "reward": 1}\n{"prompt": 5, "completion": null}\nnot json\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    return json.loads(text) if text.lstrip().startswith(("{", "[")) else text


def environment() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass
class Served:
    project: Path
    env: dict
    api: str  # http://127.0.0.1:PORT/api
    mlflow: str | None  # http://127.0.0.1:PORT when the project has scripts/mlflow_server.sh

    def run(self, deployment: str, **params) -> str:
        """`prefect deployment run`; returns the flow run id."""
        done = subprocess.run([str(BIN / "prefect"), "deployment", "run", deployment, "--params", json.dumps(params)],
                              env=self.env, capture_output=True, text=True, timeout=120, check=True)
        return re.search(r"UUID: ([0-9a-f-]{36})", done.stdout).group(1)

    def wait(self, run_id: str, timeout_s: float = 360) -> dict:
        deadline = time.time() + timeout_s
        while (run := http(f"{self.api}/flow_runs/{run_id}"))["state_type"] not in TERMINAL:
            assert time.time() < deadline, f"flow run still {run['state_type']} after {timeout_s} s"
            time.sleep(1)
        return run

    def tasks(self, run_id: str) -> dict:
        runs = http(f"{self.api}/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
        return {t["name"]: (t["state_type"], t["run_count"]) for t in runs}

    def artifacts(self, run_id: str) -> dict:
        found = http(f"{self.api}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
        return {a["key"]: a["data"] for a in found}

    def logs(self, run_id: str) -> str:
        found = http(f"{self.api}/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
        return "\n".join(entry["message"] for entry in found)


@pytest.fixture(scope="module")
def served(micro_project, tmp_path_factory):
    base = tmp_path_factory.mktemp("prefect")
    project = base / "project"
    shutil.copytree(micro_project.path, project, symlinks=True)
    env = environment()
    # the scheduler is off so that 02:00 UTC cannot start a nightly run mid-test; schedules are still stored
    env.update(IWSFT_BIN=str(BIN), PREFECT_HOME=str(base / "home"), PREFECT_PORT=str(free_port()),
               MLFLOW_PORT=str(free_port()), PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="60")
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    started = time.perf_counter()
    done = subprocess.run(["bash", "scripts/serve.sh"], cwd=project, env=env, capture_output=True, text=True,
                          timeout=300)
    print(f"serve.sh: {time.perf_counter() - started:.1f} s\n{done.stdout}")
    pids = {p.stem: int(p.read_text()) for p in (project / ".run").glob("*.pid")}
    try:
        assert done.returncode == 0, f"serve.sh failed:\n{done.stdout}\n{done.stderr}\n" + "\n".join(
            f"--- {log.name}\n{log.read_text()[-3000:]}" for log in (project / ".run").glob("*.log"))
        api = re.search(r"PREFECT_API_URL=(\S+)", (project / ".run/prefect.env").read_text()).group(1)
        env["PREFECT_API_URL"] = api
        mlflow = f"http://127.0.0.1:{env['MLFLOW_PORT']}" if (project / "scripts/mlflow_server.sh").exists() else None
        yield Served(project, env, api, mlflow)
    finally:
        stopped = subprocess.run(["bash", "scripts/stop.sh"], cwd=project, env=env, capture_output=True, text=True,
                                 timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        for name, pid in pids.items():  # stop.sh stopped exactly these groups
            assert not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text(), name
        assert not list((project / ".run").glob("*.pid"))


def test_ui_and_deployments(served):
    ui = served.api.removesuffix("/api")
    assert "<title>Prefect Server</title>" in http(ui + "/")
    assert http(ui + "/ui-settings")["api_url"] == served.api  # the browser is sent to this server, not :4200
    deployments = {d["name"]: d for d in http(f"{served.api}/deployments/filter", {})}
    assert set(deployments) == {"nightly", "evaluate-and-promote", "retrain-on-new-data"}  # no docker pool here
    assert [s["schedule"]["cron"] for s in deployments["nightly"]["schedules"]] == ["0 2 * * *"]
    assert not deployments["evaluate-and-promote"]["schedules"]
    assert http(f"{served.api}/work_pools/iwsft-process")["concurrency_limit"] == 1


@pytest.fixture(scope="module")
def completed_run(served):
    """The nightly deployment, run now, with reports/report.md removed so that `report` really runs."""
    (served.project / "reports/report.md").unlink()
    started = time.time()
    run_id = served.run("iwsft-pipeline/nightly")
    run = served.wait(run_id)
    print(f"flow run: {run['total_run_time']:.1f} s in the flow, {time.time() - started:.1f} s from trigger to end")
    return run, started


def test_deployment_run_completes(served, completed_run):
    run, _ = completed_run
    assert run["state_type"] == "COMPLETED", run["state"]["message"]
    stages = dag.load_dag(served.project).order
    assert served.tasks(run["id"]) == {stage: ("COMPLETED", 1) for stage in stages}
    logs = served.logs(run["id"])
    assert "Running stage 'report'" in logs and "Stage 'prepare' didn't change, skipping" in logs

    artifacts = served.artifacts(run["id"])
    gates = (served.project / "data/gates").glob("*.json")
    expected = {"iwsft-stages", "iwsft-report"} | {f"iwsft-gate-{path.stem}" for path in gates}
    if (served.project / "reports/registry.json").exists():
        expected.add("iwsft-registry")
    assert expected <= set(artifacts)
    assert "| iw-SFT |" in artifacts["iwsft-report"]
    assert {row["stage"]: row["result"] for row in json.loads(artifacts["iwsft-stages"])}["report"] == "ran"

    assert (served.project / "reports/report.md").stat().st_size > 0
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=served.project, env=served.env, capture_output=True,
                            text=True, timeout=120)
    assert "Data and pipelines are up to date." in status.stdout


def test_mlflow_runs_of_the_flow(served, completed_run):
    if served.mlflow is None:
        pytest.skip("no scripts/mlflow_server.sh in this project: MLflow runs not checked")
    run, started = completed_run
    found = http(f"{served.mlflow}/api/2.0/mlflow/runs/search", {
        "experiment_ids": [e["experiment_id"] for e in http(f"{served.mlflow}/api/2.0/mlflow/experiments/search",
                                                                {"max_results": 100})["experiments"]],
        "filter": f"attributes.start_time >= {int(started * 1000)}", "max_results": 100})
    names = {r["info"].get("run_name", "") for r in found.get("runs", [])}
    assert "report" in names  # the stage the flow really ran logged to the server serve.sh started
    links = [key for key in served.artifacts(run["id"]) if key == "iwsft-mlflow-run"]
    assert links, "the flow links its MLflow runs"


def test_bad_raw_file_fails_at_the_gate(served, micro_project, tmp_path):
    project = tmp_path / "bad"
    shutil.copytree(micro_project.path, project, symlinks=True)
    (project / "data/raw/bad.jsonl").write_text(BAD_RAW)
    registry = project / "reports/registry.json"
    registry_before = registry.read_bytes() if registry.exists() else None
    later = [project / name for name in ("data/quality/train.jsonl", "models/iwsft/model.safetensors",
                                         "reports/report.md")]
    later_before = [path.stat().st_mtime_ns for path in later]
    versions_before = model_versions(served)

    run_id = served.run("iwsft-pipeline/nightly", project_dir=str(project), overrides=["curate.raw=data/raw/bad.jsonl"])
    run = served.wait(run_id)
    assert run["state_type"] == "FAILED"
    message = run["state"]["message"]
    gated = (project / "data/gates/raw.json").exists()  # the gates issue's raw gate runs inside curate
    assert "stage 'curate' failed" in message and (not gated or "data gate 'raw' failed" in message), message
    assert served.tasks(run_id) == {"prepare": ("COMPLETED", 1), "sample": ("COMPLETED", 1), "curate": ("FAILED", 1)}
    artifacts = served.artifacts(run_id)
    assert "iwsft-failure" in artifacts and "bad.jsonl" in artifacts["iwsft-failure"]
    assert not gated or "FAILED" in artifacts["iwsft-gate-raw"]
    assert "line 3: is not valid JSON" in served.logs(run_id)
    # nothing downstream ran, nothing was registered
    assert [path.stat().st_mtime_ns for path in later] == later_before
    assert (registry.read_bytes() if registry.exists() else None) == registry_before
    assert model_versions(served) == versions_before


def model_versions(served) -> list | None:
    """Every model version in the MLflow registry (None without MLflow)."""
    if served.mlflow is None:
        return None
    found = http(f"{served.mlflow}/api/2.0/mlflow/model-versions/search?max_results=1000")
    return sorted((v["name"], v["version"]) for v in found.get("model_versions", []))
