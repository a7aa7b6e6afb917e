"""MLflow tracking and the model registry, against a real MLflow server on a free 127.0.0.1 port.

The micro DAG (conftest's micro_project, run once per session) logs to the project's local store;
the registry tests work on a copy of its outputs, with metrics files rewritten to make the
promotion rule face a win, a loss, a tie within the CI and a first model.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import yaml

from iwsft import mlflow_server
from iwsft.params import load_params


pytestmark = pytest.mark.integration
BIN = os.path.dirname(sys.executable)  # the venv's bin: iwsft lives here


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A real `mlflow server` (SQLite store in a temp dir); stopped with its worker processes."""
    root = tmp_path_factory.mktemp("mlflow-server")
    started = mlflow_server.start(root, free_port(), timeout=180)
    print(f"\nmlflow server healthy after {started.seconds_to_healthy:.1f} s")
    yield started.url
    assert mlflow_server.stop(root / ".run" / "mlflow.pid")
    with pytest.raises(ProcessLookupError):  # the whole group is gone: uvicorn's worker too
        os.killpg(started.pid, 0)


@pytest.fixture
def project(micro_project, tmp_path):
    """A copy of the reproduced micro project that a test may change (no DVC cache; ~5 MB)."""
    path = tmp_path / "project"
    shutil.copytree(micro_project.path, path, ignore=shutil.ignore_patterns("cache"), symlinks=True)
    return type(micro_project)(path)


@pytest.fixture
def in_project(project, server, monkeypatch):
    monkeypatch.chdir(project.path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    return project


def client_for(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def nested_runs(client, parent):
    return {r.info.run_name: r for r in client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}


# ---------------------------------------------------------------- tracking

def test_dvc_repro_logs_one_parent_and_a_run_per_stage(micro_project):
    """No server, no MLFLOW_TRACKING_URI: the stages logged to the project's own store."""
    client = client_for(mlflow_server.local_store_uri(micro_project.path))
    experiment = client.get_experiment_by_name("iwsft")
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`iwsft.pipeline_key` != ''")
    assert len(parents) == 1
    parent = parents[0]
    commit = micro_project.run("git", "rev-parse", "HEAD").stdout.strip()
    assert parent.data.tags["mlflow.source.git.commit"] == commit
    assert parent.data.params["train.steps"] == "100"  # the whole config, micro profile
    runs = nested_runs(client, parent)
    expected = {"curate", "report"} | {f"train@{m}" for m in ("sft", "iwsft", "sftq", "iwsftq")} | \
        {f"evaluate@{m}" for m in ("base", "sft", "iwsft", "sftq", "iwsftq")}
    assert expected <= set(runs)

    train = runs["train@iwsft"]
    assert train.data.tags["iwsft.method"] == "iwsft" and train.data.tags["iwsft.data_fingerprint"]
    assert train.data.params["train.steps"] == "100" and train.data.params["seed"] == "0"
    log = json.loads((micro_project.path / "data/train/iwsft/train_log.json").read_text())
    loss_steps = [e["step"] for e in log if "loss" in e]
    history = client.get_metric_history(train.info.run_id, "loss")
    assert sorted(m.step for m in history) == sorted(loss_steps) and len(history) > 5
    assert len(client.get_metric_history(train.info.run_id, "ess")) == len([e for e in log if "ess" in e]) > 0
    lock = yaml.safe_load((micro_project.path / "dvc.lock").read_text())["stages"]["train@iwsft"]
    out_md5 = {o["path"]: o["md5"] for o in lock["outs"]}["models/iwsft"]
    assert client.get_run(train.info.run_id).data.tags["dvc.outs.models/iwsft"] == out_md5  # back-filled

    evaluation = runs["evaluate@sft"].data
    metrics = json.loads((micro_project.path / "data/evaluate/sft/metrics.json").read_text())
    for key in ("pass_at_1", "pass_at_1_ci_low", "pass_at_1_ci_high", "greedy_accuracy", "iw_bound"):
        assert evaluation.metrics[key] == pytest.approx(metrics[key])
    curate = runs["curate"]
    report = json.loads((micro_project.path / "data/curate/report.json").read_text())
    assert curate.data.metrics["kept"] == report["kept"]
    assert "report.json" in {a.path for a in client.list_artifacts(curate.info.run_id)}
    assert {"report.md", "accuracy.png"} <= {a.path for a in client.list_artifacts(runs["report"].info.run_id)}


def run(project, *command, **env):
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "CI": "1", "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(command, cwd=project.path, env=env, capture_output=True, text=True, timeout=300)


def test_a_stage_logs_to_the_server_and_reuses_the_pipeline_parent(in_project, server):
    done = run(in_project, os.path.join(BIN, "iwsft"), "report", MLFLOW_TRACKING_URI=server)
    assert done.returncode == 0, done.stderr
    assert f"report -> {server}" in done.stderr
    from iwsft.tracking import track_stage

    run_id = track_stage("evaluate@sft", load_params(), sections=["evaluate"], method="sft", metrics={"pass_at_1": 0.5})
    client = client_for(server)
    second = client.get_run(run_id)
    parent = client.get_run(second.data.tags["mlflow.parentRunId"])
    assert {"report", "evaluate@sft"} <= set(nested_runs(client, parent))  # two processes, one parent
    assert second.data.params["evaluate.samples_per_prompt"] == "2"


def test_a_server_that_is_down_does_not_block_tracking_only_stages(in_project, monkeypatch, capsys):
    from iwsft.tracking import track_stage

    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    run_id = track_stage("report", load_params(), metrics={"x": 1.0})
    err = capsys.readouterr().err
    assert f"{dead} (MLFLOW_TRACKING_URI) is not answering" in err and "make serve" in err
    local = client_for(mlflow_server.local_store_uri(in_project.path))
    assert local.get_run(run_id).data.metrics["x"] == 1.0  # not dropped: in the local store


# ---------------------------------------------------------------- registry

def write_metrics(project, method, value, half_width, greedy=0.0):
    """Made-up pass@1 and CI; without evaluate's samples the rule compares the CIs (unpaired)."""
    path = project.path / "data/evaluate" / method / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics.update(pass_at_1=value, pass_at_1_ci_low=value - half_width, pass_at_1_ci_high=value + half_width,
                   greedy_accuracy=greedy)
    path.write_text(json.dumps(metrics))
    (path.parent / "samples.jsonl").unlink(missing_ok=True)


def per_prompt_delta_ci(project, candidate, incumbent, n):
    """The paired 95% CI of pass@1(candidate) - pass@1(incumbent), from evaluate's samples."""
    import numpy as np

    def rates(method):
        samples = project.path / "data/evaluate" / method / "samples.jsonl"
        rewards = [json.loads(line)["reward"] for line in samples.open()]
        return np.array(rewards, dtype=float).reshape(-1, n).mean(axis=1)

    diffs = rates(candidate) - rates(incumbent)
    half = 1.959963984540054 * diffs.std(ddof=1) / np.sqrt(len(diffs))
    return diffs.mean() - half, diffs.mean() + half, len(diffs)


def registry_params(name, candidates, margin=0.0):
    params = load_params()
    params["registry"] = {"model_name": name, "candidates": list(candidates), "margin": margin}
    return params


def aliases(name, server):
    return dict(client_for(server).get_registered_model(name).aliases)


def version_count(name, server):
    return len(client_for(server).search_model_versions(f"name = '{name}'"))


def test_the_real_micro_run_is_judged_on_paired_per_prompt_results(in_project, server):
    from iwsft.stages import register

    result = register.run(registry_params("micro", ["sft", "iwsft"]))
    best = result["candidate"]["method"]
    n = json.loads((in_project.path / "data/evaluate/base/metrics.json").read_text())["n_samples"]
    low, high, prompts = per_prompt_delta_ci(in_project, best, "base", n)
    assert f"paired over {prompts} prompts" in result["reason"]
    assert (result["delta_ci_low"], result["delta_ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert result["promoted"] == (low > 0)
    version = client_for(server).get_model_version("micro", result["candidate"]["version"])
    assert len(version.tags["iwsft.per_prompt"]) == len(f"{n}:") + prompts


def test_first_model_promotion_idempotency_and_rollback(in_project, server, capsys):
    from iwsft import cli
    from iwsft.stages import register

    name = "lifecycle"
    write_metrics(in_project, "base", 0.10, 0.02)
    write_metrics(in_project, "sft", 0.30, 0.02)
    write_metrics(in_project, "iwsft", 0.25, 0.02)
    first = register.run(registry_params(name, ["sft", "iwsft"]))
    assert first["promoted"] and first["incumbent"]["kind"] == "base" and "base (no champion yet)" in first["reason"]
    sft_version = first["versions"]["sft"]["version"]
    assert aliases(name, server) == {"champion": sft_version, "candidate": sft_version}
    saved = json.loads((in_project.path / "reports/registry.json").read_text())
    assert saved["promoted"] is True and saved["champion"] == sft_version
    version = client_for(server).get_model_version(name, sft_version)
    assert version.tags["iwsft.method"] == "sft" and float(version.tags["pass_at_1"]) == 0.30
    assert version.tags["iwsft.content_hash"] and "pass_at_1" in version.description  # the model card

    again = register.run(registry_params(name, ["sft", "iwsft"]))  # same inputs: nothing new, nothing moved
    assert version_count(name, server) == 2 and not any(v["new"] for v in again["versions"].values())
    assert not again["promoted"] and "already the champion" in again["reason"]
    assert aliases(name, server) == {"champion": sft_version, "candidate": sft_version}

    write_metrics(in_project, "iwsft", 0.50, 0.02)  # a better iwsft: a new version, and it wins
    win = register.run(registry_params(name, ["sft", "iwsft"]))
    iwsft_version = win["versions"]["iwsft"]["version"]
    assert win["promoted"] and "wins" in win["reason"] and win["incumbent"]["version"] == sft_version
    assert aliases(name, server) == {"champion": iwsft_version, "previous-champion": sft_version,
                                     "candidate": iwsft_version}

    capsys.readouterr()
    assert cli.main(["registry", "rollback", "--name", name]) == 0
    assert f"champion v{iwsft_version} -> v{sft_version}" in capsys.readouterr().out
    assert aliases(name, server) == {"champion": sft_version, "candidate": iwsft_version}
    assert cli.main(["registry", "rollback", "--name", name]) == 1  # nothing left to roll back
    assert "no previous-champion" in capsys.readouterr().err

    kept = register.run(registry_params(name, ["sft", "iwsft"]))  # a rolled-back version stays out
    assert not kept["promoted"] and "rolled back by hand" in kept["reason"]
    assert cli.main(["registry", "promote", iwsft_version, "--name", name]) == 0
    assert aliases(name, server)["champion"] == iwsft_version
    assert cli.main(["registry", "show", "--name", name]) == 0
    shown = capsys.readouterr().out
    assert f"registered model '{name}' at {server}" in shown
    assert any(line.startswith(iwsft_version) and "champion" in line and "0.500" in line for line in shown.splitlines())


def test_promotion_keeps_the_champion_on_a_tie_or_a_loss(in_project, server):
    from iwsft.stages import register

    name = "tie-and-loss"
    write_metrics(in_project, "base", 0.10, 0.02)
    write_metrics(in_project, "sft", 0.40, 0.03)
    champion = register.run(registry_params(name, ["sft"]))["champion"]
    write_metrics(in_project, "sft", 0.43, 0.03)  # +0.03 with a +-0.042 CI on the difference
    tie = register.run(registry_params(name, ["sft"]))
    assert not tie["promoted"] and "within the CI" in tie["reason"] and tie["delta_ci_low"] < 0 < tie["delta"]
    write_metrics(in_project, "sft", 0.20, 0.03)
    loss = register.run(registry_params(name, ["sft"]))
    assert not loss["promoted"] and "loses" in loss["reason"]
    assert aliases(name, server) == {"champion": champion, "candidate": loss["candidate"]["version"]}
    write_metrics(in_project, "sft", 0.55, 0.03)  # wins, but not by the 0.2 margin
    assert not register.run(registry_params(name, ["sft"], margin=0.2))["promoted"]
    assert version_count(name, server) == 4
    decision = client_for(server).get_model_version(name, loss["candidate"]["version"]).tags
    assert decision["iwsft.decision"] == "kept" and "loses" in decision["iwsft.decision_reason"]


def test_an_interrupted_register_leaves_no_half_version_and_no_moved_alias(in_project, server, monkeypatch):
    from iwsft.registry import Registry
    from iwsft.stages import register

    name = "interrupted"
    write_metrics(in_project, "base", 0.10, 0.02)
    write_metrics(in_project, "sft", 0.30, 0.02)
    write_metrics(in_project, "iwsft", 0.20, 0.02)
    (in_project.path / "reports/registry.json").write_text("{}")
    log_model = Registry._log_model

    def dies_on_iwsft(self, model_dir, method, *args):
        if method == "iwsft":
            raise ConnectionError("server went away")
        return log_model(self, model_dir, method, *args)

    monkeypatch.setattr(Registry, "_log_model", dies_on_iwsft)
    with pytest.raises(ConnectionError):
        register.run(registry_params(name, ["sft", "iwsft"]))
    versions = client_for(server).search_model_versions(f"name = '{name}'")
    assert len(versions) == 1 and versions[0].tags["iwsft.content_hash"]  # sft complete, with its hash
    assert aliases(name, server) == {}  # no candidate, no champion
    assert (in_project.path / "reports/registry.json").read_text() == "{}"
    monkeypatch.setattr(Registry, "_log_model", log_model)
    done = register.run(registry_params(name, ["sft", "iwsft"]))
    assert done["promoted"] and not done["versions"]["sft"]["new"] and version_count(name, server) == 2


def test_the_champion_loads_back_by_alias_and_generates(in_project, server, capsys):
    from iwsft import cli
    from iwsft.artifacts import load_model
    from iwsft.generation import generate_completions
    from iwsft.stages import register

    write_metrics(in_project, "base", 0.10, 0.02)
    write_metrics(in_project, "iwsft", 0.60, 0.02)
    assert register.run(registry_params("generate", ["iwsft"]))["promoted"]
    prompts = ["12+7=", "38-57-10="]
    capsys.readouterr()
    assert cli.main(["generate", "--model", "models:/generate@champion", "--max-new-tokens", "6",
                              *[arg for p in prompts for arg in ("--prompt", p)]]) == 0
    printed = capsys.readouterr().out.splitlines()
    model, tokenizer = load_model(in_project.path / "models/iwsft")
    local = generate_completions(model, tokenizer, prompts, greedy=True, max_new_tokens=6, show_progress=False)
    assert printed == [p + c[0] for p, c in zip(prompts, local)]  # the same weights, the same greedy answers


def test_register_with_the_server_down_fails_clearly_and_changes_nothing(in_project, server):
    dead = f"http://127.0.0.1:{free_port()}"
    (in_project.path / "reports/registry.json").write_text("{}")
    stores = [client_for(server), client_for(mlflow_server.local_store_uri(in_project.path))]
    before = [len(store.search_model_versions()) for store in stores]
    done = run(in_project, sys.executable, "-m", "iwsft.cli", "register", MLFLOW_TRACKING_URI=dead)
    assert done.returncode == 1
    assert f"iwsft register: error: the MLflow server at {dead} (MLFLOW_TRACKING_URI) is not answering" in done.stderr
    assert "make serve" in done.stderr and "Traceback" not in done.stderr
    assert (in_project.path / "reports/registry.json").read_text() == "{}"
    shown = run(in_project, sys.executable, "-m", "iwsft.cli", "registry", "show", MLFLOW_TRACKING_URI=dead)
    assert shown.returncode == 1 and "make serve" in shown.stderr
    assert [len(store.search_model_versions()) for store in stores] == before  # no fallback, nothing registered
