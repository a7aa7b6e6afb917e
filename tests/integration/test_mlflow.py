"""MLflow tracking and the model registry, against a real MLflow server on a free 127.0.0.1 port.

The micro DAG (conftest's micro_project, run once per session) logs to the project's local store;
the registry tests work on a copy of its outputs, with metrics files rewritten to make the
promotion rule face a win, a loss, a tie within the CI, a first model, two candidates that only
win without Holm's correction, a zero-width interval and metrics of another model.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest
import yaml

from iwsft.tracking import server as mlflow_server
from iwsft.config.loading import load_params
from iwsft.config.schema import check


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
        {"baseline"} | {f"evaluate@{m}" for m in ("sft", "iwsft", "sftq", "iwsftq")}  # named as in dvc.lock
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
    for key in ("pass_at_1", "pass_at_1_ci_low", "pass_at_1_ci_high", "greedy_accuracy", "sft_bound"):
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
    from iwsft.tracking.runs import track_stage

    run_id = track_stage("evaluate@sft", load_params(), sections=["evaluate"], method="sft", metrics={"pass_at_1": 0.5})
    client = client_for(server)
    second = client.get_run(run_id)
    parent = client.get_run(second.data.tags["mlflow.parentRunId"])
    assert {"report", "evaluate@sft"} <= set(nested_runs(client, parent))  # two processes, one parent
    assert second.data.params["evaluate.samples_per_prompt"] == "2"


def test_a_server_that_is_down_stops_a_stage_unless_the_whole_run_falls_back(in_project, monkeypatch, capsys):
    """Down before the work: the stage stops (no run split across two stores). tracking.fallback:
    local sends the whole pipeline run to the local store instead."""
    from iwsft.tracking.runs import track_stage
    from iwsft.tracking.store import TrackingUnavailable, ensure_tracking_store

    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    params = load_params()
    with pytest.raises(TrackingUnavailable) as error:
        ensure_tracking_store(params)
    assert f"{dead} (MLFLOW_TRACKING_URI) is not answering" in str(error.value)
    assert "make serve" in str(error.value) and "tracking.fallback: local" in str(error.value)
    assert track_stage("report", params, metrics={"x": 1.0}) is None  # after the work: said, never raised
    assert "could not log report" in capsys.readouterr().err

    params = check({**load_params(check=False), "tracking": {"fallback": "local"}})
    local_uri = mlflow_server.local_store_uri(in_project.path)
    assert ensure_tracking_store(params) == local_uri
    run_id = track_stage("report", params, metrics={"x": 1.0})
    run = client_for(local_uri).get_run(run_id)
    assert run.data.metrics["x"] == 1.0  # not dropped: in the local store, under this run's own parent
    parent = client_for(local_uri).get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.params["tracking.fallback"] == "local"


# ---------------------------------------------------------------- registry

def write_metrics(project, method, value, se, greedy=0.0):
    """Made-up pass@1 and its standard error; without evaluate's samples the rule is unpaired and
    reads the se's (the CI is written only as evaluate would, for display)."""
    path = project.path / "data/evaluate" / method / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics.update(pass_at_1=value, pass_at_1_se=se, pass_at_1_ci_low=value - 1.96 * se,
                   pass_at_1_ci_high=value + 1.96 * se, greedy_accuracy=greedy)
    path.write_text(json.dumps(metrics))
    (path.parent / "samples.jsonl").unlink(missing_ok=True)


def retrain(project, method):
    """New weights for `method` (a byte more in its config.json, a new file: the copy's may be a hard link)
    and metrics that say they scored them, as `dvc repro train@METHOD evaluate@METHOD` would leave them."""
    from iwsft.model.hashing import directory_sha256

    config = project.path / "models" / method / "config.json"
    text = config.read_text()
    config.unlink()
    config.write_text(text + "\n")
    path = project.path / "data/evaluate" / method / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "model_sha256": directory_sha256(config.parent)}))


def paired_holm(project, methods, incumbent, n, alpha=0.05):
    """Recomputed here from evaluate's samples, not with iwsft.tracking.promotion: per method the paired
    delta, se and one-sided p against `incumbent`, and Holm's adjusted p over `methods`."""
    from statistics import NormalDist

    import numpy as np

    def rates(method):
        samples = project.path / "data/evaluate" / method / "samples.jsonl"
        rewards = [json.loads(line)["reward"] for line in samples.open()]
        return np.array(rewards, dtype=float).reshape(-1, n).mean(axis=1)

    diffs = {m: rates(m) - rates(incumbent) for m in methods}
    rows = {m: {"delta": d.mean(), "se": d.std(ddof=1) / np.sqrt(len(d)), "prompts": len(d)} for m, d in diffs.items()}
    running = 0.0
    for rank, m in enumerate(sorted(methods, key=lambda m: -rows[m]["delta"] / rows[m]["se"])):  # ascending p
        p = NormalDist().cdf(-rows[m]["delta"] / rows[m]["se"])
        running = max(running, min(1.0, (len(methods) - rank) * p))
        rows[m].update(adjusted=running, level=alpha / (len(methods) - rank))
    return rows


def registry_params(name, candidates, margin=0.0):
    return check({**load_params(check=False), "methods": list(candidates),
                  "registry": {"model_name": name, "margin": margin}})


def aliases(name, server):
    return dict(client_for(server).get_registered_model(name).aliases)


def version_count(name, server):
    return len(client_for(server).search_model_versions(f"name = '{name}'"))


def test_the_real_micro_run_is_judged_on_paired_per_prompt_results(in_project, server):
    from statistics import NormalDist

    from iwsft.stages import register

    result = register.run(registry_params("micro", ["sft", "iwsft"]))
    n = json.loads((in_project.path / "data/evaluate/base/metrics.json").read_text())["n_samples"]
    rows = paired_holm(in_project, ["sft", "iwsft"], "base", n)
    significant = [m for m in rows if rows[m]["adjusted"] <= 0.05]
    assert result["promoted"] == bool(significant)
    values = {m: result["versions"][m]["pass_at_1"] for m in rows}
    about = max(significant or rows, key=lambda m: values[m])  # ties: not expected on real runs
    assert result["about"] == about and (result["winner"] or {}).get("method") == (about if significant else None)
    row = rows[about]
    half = NormalDist().inv_cdf(1 - row["level"]) * row["se"]
    assert f"paired over {row['prompts']} prompts" in result["reason"]
    assert "Holm's correction over 2 candidates" in result["reason"]
    assert (result["delta_ci_low"], result["delta_ci_high"]) == (pytest.approx(row["delta"] - half),
                                                                 pytest.approx(row["delta"] + half))
    assert result["p_adjusted"] == pytest.approx(row["adjusted"]) and result["n_tested"] == 2
    assert {m: t["p_adjusted"] for m, t in result["tests"].items()} == {m: pytest.approx(rows[m]["adjusted"])
                                                                       for m in rows}
    version = client_for(server).get_model_version("micro", result["versions"][about]["version"])
    assert len(version.tags["iwsft.per_prompt"]) == len(f"{n}:") + row["prompts"]
    assert version.tags["iwsft.model_sha256"] == json.loads(
        (in_project.path / f"data/evaluate/{about}/metrics.json").read_text())["model_sha256"]


def test_first_model_promotion_idempotency_and_rollback(in_project, server, capsys):
    from iwsft.cli import main as cli
    from iwsft.stages import register

    name = "lifecycle"
    write_metrics(in_project, "base", 0.10, 0.01)
    write_metrics(in_project, "sft", 0.30, 0.01)
    write_metrics(in_project, "iwsft", 0.25, 0.01)
    # both beat the base by far (z = 14.1 and 10.6 with se(delta) 0.0141): Holm keeps both, sft is higher
    first = register.run(registry_params(name, ["sft", "iwsft"]))
    assert first["promoted"] and first["incumbent"]["kind"] == "base" and "base (no champion yet)" in first["reason"]
    assert "2 significant, the best of them promoted" in first["reason"]
    sft_version = first["versions"]["sft"]["version"]
    assert first["winner"] == {"method": "sft", "version": sft_version}
    assert aliases(name, server) == {"champion": sft_version, "candidate": sft_version}
    saved = json.loads((in_project.path / "reports/registry.json").read_text())
    assert saved["promoted"] is True and saved["champion"] == sft_version
    version = client_for(server).get_model_version(name, sft_version)
    assert version.tags["iwsft.method"] == "sft" and float(version.tags["pass_at_1"]) == 0.30
    assert float(version.tags["pass_at_1_se"]) == 0.01 and version.tags["iwsft.decision"] == "promoted"
    assert version.tags["iwsft.content_hash"] and "pass_at_1" in version.description  # the model card

    again = register.run(registry_params(name, ["sft", "iwsft"]))  # same inputs: nothing new, nothing moved
    assert version_count(name, server) == 2 and not any(v["new"] for v in again["versions"].values())
    assert not again["promoted"] and "already the champion" in again["reason"]
    assert "nothing to decide" in again["reason"]
    assert aliases(name, server) == {"champion": sft_version, "candidate": sft_version}

    retrain(in_project, "iwsft")
    write_metrics(in_project, "iwsft", 0.50, 0.01)  # a better iwsft: a new version, and it wins
    win = register.run(registry_params(name, ["sft", "iwsft"]))
    iwsft_version = win["versions"]["iwsft"]["version"]
    assert win["promoted"] and "wins" in win["reason"] and win["incumbent"]["version"] == sft_version
    assert "over 1 candidate tested against champion v" in win["reason"]  # the champion is the bar, not tested
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
    assert aliases(name, server)["champion"] == sft_version
    assert cli.main(["registry", "promote", iwsft_version, "--name", name]) == 0
    assert aliases(name, server)["champion"] == iwsft_version
    assert cli.main(["registry", "show", "--name", name]) == 0
    shown = capsys.readouterr().out
    assert f"registered model '{name}' at {server}" in shown
    assert any(line.startswith(iwsft_version) and "champion" in line and "0.500" in line for line in shown.splitlines())
    assert cli.main(["registry", "show", "--name", "never-registered"]) == 0  # e.g. params.yaml's after a profile run
    shown = capsys.readouterr().out
    assert "no versions yet" in shown and "this store also holds: " in shown and name in shown


def test_promotion_keeps_the_champion_on_a_tie_or_a_loss(in_project, server):
    from iwsft.stages import register

    name = "tie-and-loss"
    write_metrics(in_project, "base", 0.10, 0.01)
    write_metrics(in_project, "sft", 0.40, 0.015)
    champion = register.run(registry_params(name, ["sft"]))["champion"]
    retrain(in_project, "sft")  # each step: new weights, so a new version against the champion
    write_metrics(in_project, "sft", 0.43, 0.015)  # +0.03, se(delta) 0.0212: z 1.41, p 0.079
    tie = register.run(registry_params(name, ["sft"]))
    assert not tie["promoted"] and "within the CI" in tie["reason"] and tie["delta_ci_low"] < 0 < tie["delta"]
    retrain(in_project, "sft")
    write_metrics(in_project, "sft", 0.20, 0.015)
    loss = register.run(registry_params(name, ["sft"]))
    assert not loss["promoted"] and "loses" in loss["reason"]
    assert aliases(name, server) == {"champion": champion, "candidate": loss["candidate"]["version"]}
    retrain(in_project, "sft")
    write_metrics(in_project, "sft", 0.55, 0.015)  # wins, but not by the 0.2 margin
    assert not register.run(registry_params(name, ["sft"], margin=0.2))["promoted"]
    assert version_count(name, server) == 4
    decision = client_for(server).get_model_version(name, loss["candidate"]["version"]).tags
    assert decision["iwsft.decision"] == "kept" and "loses" in decision["iwsft.decision_reason"]


def test_two_mediocre_candidates_win_alone_but_not_after_holm(in_project, server):
    from iwsft.stages import register

    name = "holm"
    write_metrics(in_project, "base", 0.10, 0.01)
    # se(delta) = hypot(0.01, 0.01) = 0.0141: sft z 1.77 -> p 0.0385, iwsft z 1.84 -> p 0.0330. Either alone
    # is significant at 0.05; Holm over both: 2 * 0.0330 = 0.066 > 0.05, neither.
    write_metrics(in_project, "sft", 0.125, 0.01)
    write_metrics(in_project, "iwsft", 0.126, 0.01)
    both = register.run(registry_params(name, ["sft", "iwsft"]))
    assert not both["promoted"] and both["winner"] is None and both["p_adjusted"] == pytest.approx(0.066, abs=1e-3)
    assert "significant alone" in both["reason"] and "Holm's correction over 2 candidates" in both["reason"]
    assert aliases(name, server) == {"candidate": both["versions"]["iwsft"]["version"]}  # best-looking, no champion
    alone = register.run(registry_params(name, ["sft"]))  # the same sft version, tested by itself
    assert alone["promoted"] and alone["champion"] == both["versions"]["sft"]["version"]
    assert version_count(name, server) == 2


def test_a_zero_width_interval_never_promotes(in_project, server):
    from iwsft.stages import register

    name = "zero-width"
    # sft solves every eval sample and base none: each prompt's difference is exactly 1, sd 0, so the
    # paired interval has zero width; certainty is what it looks like, noise-blindness is what it is
    n = json.loads((in_project.path / "data/evaluate/base/metrics.json").read_text())["n_samples"]
    for method, reward in (("base", 0), ("sft", 1)):
        samples = in_project.path / "data/evaluate" / method / "samples.jsonl"
        rows = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
        write_metrics(in_project, method, float(reward), 0.0)  # se 0 too (it deletes the samples: rewritten next)
        samples.write_text("".join(json.dumps({**row, "reward": reward}) + "\n" for row in rows))
    result = register.run(registry_params(name, ["sft"]))
    prompts = len(rows) // n
    assert not result["promoted"] and result["delta"] == pytest.approx(1.0)
    assert f"degenerate interval: the per-prompt differences have sd 0 over {prompts} prompts" in result["reason"]
    assert aliases(name, server) == {"candidate": result["versions"]["sft"]["version"]}


def artifact_files(server) -> int:
    """How many files the server's artifact store holds (served from this machine's disk: --no-serve-artifacts)."""
    from pathlib import Path
    from urllib.parse import urlparse

    location = client_for(server).get_experiment_by_name("iwsft").artifact_location
    return sum(1 for path in Path(urlparse(location).path if "://" in location else location).rglob("*")
               if path.is_file())


def test_re_evaluating_the_same_weights_adds_the_evaluation_not_a_copy(in_project, server):
    """The issue's case: only the eval file's bytes change (integers instead of strings, the same
    prompts). The same weights stay one version each, the new evaluation is added to them, no model is
    logged again; the decision compares results on the new eval set only. New weights: a new version."""
    from iwsft.model.hashing import directory_sha256
    from iwsft.stages import register

    name = "re-evaluated"
    write_metrics(in_project, "base", 0.10, 0.01)
    write_metrics(in_project, "sft", 0.30, 0.01)
    write_metrics(in_project, "iwsft", 0.25, 0.01)
    first = register.run(registry_params(name, ["sft", "iwsft"]))
    sft, iwsft = first["versions"]["sft"]["version"], first["versions"]["iwsft"]["version"]
    assert first["champion"] == sft and version_count(name, server) == 2
    files = artifact_files(server)

    eval_file = in_project.path / load_params().curate.eval_prompts
    rows = [json.loads(line) for line in eval_file.read_text().splitlines() if line.strip()]
    eval_file.unlink()  # DVC's output, maybe a hard link into the micro project's cache: a new file instead
    eval_file.write_text("".join(json.dumps({**row, "answer": int(row["answer"])}) + "\n" for row in rows))
    write_metrics(in_project, "sft", 0.40, 0.01)  # the new eval set is easier: both do better on it
    write_metrics(in_project, "iwsft", 0.50, 0.01)
    second = register.run(registry_params(name, ["sft", "iwsft"]))
    assert second["eval_set"] != first["eval_set"]
    assert {m: (v["version"], v["new"], v["new_evaluation"]) for m, v in second["versions"].items()} == {
        "sft": (sft, False, True), "iwsft": (iwsft, False, True)}
    assert version_count(name, server) == 2 and artifact_files(server) == files  # no second copy of the weights
    version = client_for(server).get_model_version(name, iwsft)
    assert float(version.tags[f"eval.{first['eval_set']}.pass_at_1"]) == 0.25  # both evaluations, each on its set
    assert float(version.tags[f"eval.{second['eval_set']}.pass_at_1"]) == 0.50
    assert version.tags["iwsft.eval_set"] == second["eval_set"] and float(version.tags["pass_at_1"]) == 0.50
    assert version.tags["iwsft.content_hash"] == directory_sha256(in_project.path / "models/iwsft")
    # judged on the new eval set against the champion's own result there (0.40), not its first one (0.30)
    assert second["promoted"] and second["winner"] == {"method": "iwsft", "version": iwsft}
    assert f"v{iwsft} (iwsft) 0.500 vs champion v{sft} 0.400: delta +0.100" in second["reason"]
    assert second["incumbent"] == {"kind": "champion", "version": sft, "eval_set": second["eval_set"], "se": 0.01,
                                   "pass_at_1": 0.40, "ci": [pytest.approx(0.3804), pytest.approx(0.4196)]}
    again = register.run(registry_params(name, ["sft", "iwsft"]))  # nothing new at all: nothing to decide
    assert not any(v["new"] or v["new_evaluation"] for v in again["versions"].values())
    assert "nothing to decide" in again["reason"] and artifact_files(server) == files

    retrain(in_project, "sft")  # new weights: a new version, logged
    third = register.run(registry_params(name, ["sft", "iwsft"]))
    assert third["versions"]["sft"]["new"] and third["versions"]["sft"]["version"] not in (sft, iwsft)
    assert version_count(name, server) == 3 and artifact_files(server) > files


def stage_lines(console: str) -> dict[str, list[str]]:
    """The console's lines per stage, from DVC's `Running stage` line to the next stage or DVC line."""
    sections, current = {}, None
    for line in console.splitlines():
        started = re.match(r"Running stage '([^']+)'", line)
        if started:
            current = sections.setdefault(started.group(1), [])
        elif re.match(r"(Stage '|Restored stage '|ERROR|Use `dvc push`|iwsft run: )", line):
            current = None
        if current is not None:
            current.append(line)
    return sections


def test_iwsft_run_prints_three_lines_per_stage_and_logs_the_rest(micro_project, server, tmp_path):
    """`make run`'s command on the micro project with evaluate@sft and report left out of dvc.lock: those
    two and register really run (a model load, generation, a gate, three MLflow runs, a registration). A
    copy with its DVC cache: `iwsft run` relinks every output to it at the end."""
    in_project = type(micro_project)(tmp_path / "whole")
    shutil.copytree(micro_project.path, in_project.path, symlinks=True)
    # not run before, as far as DVC knows: otherwise it would check their outputs out of its cache
    lock = yaml.safe_load((in_project.path / "dvc.lock").read_text())
    for stage in ("evaluate@sft", "report"):
        del lock["stages"][stage]
    (in_project.path / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    shutil.rmtree(in_project.path / ".dvc/cache/runs")  # nor restore them from its run cache
    done = run(in_project, os.path.join(BIN, "iwsft"), "run", MLFLOW_TRACKING_URI=server)
    assert done.returncode == 0, done.stderr[-4000:]
    sections = stage_lines(done.stderr)
    assert {"evaluate@sft", "report", "register"} <= set(sections), done.stderr
    for stage, lines in sections.items():
        assert len(lines) <= 3, (stage, lines)  # Running stage, its command, one line of outcome
        log = (in_project.path / "logs" / f"{stage}.log").read_text()
        assert lines[-1].startswith("  done in ") and f"; log logs/{stage}.log" in lines[-1]
        assert f"; run {server}/#/experiments/" in lines[-1] and "View run" not in log
        assert f"tracking: {stage} -> {server}/#/experiments/" in log  # the detail is in the log
    assert " s: pass@1 " in sections["evaluate@sft"][-1]
    assert re.search(r" s: \S+: (v\d+ \(\w+\) promoted to champion|champion v\d+ kept|no champion yet, candidate v)",
                     sections["register"][-1])
    assert "Loading weights" not in done.stderr and "it/s" not in done.stderr
    assert sum(1 for _ in (in_project.path / "logs/evaluate@sft.log").open()) > 3
    # register, the last stage, ran in a child of the run's resident stage runner (iwsft.cli.stage_server),
    # which was ready by then (it imports for ~5 s, evaluate@sft alone takes longer), and it exited 0
    served = (in_project.path / "logs/stage-server.log").read_text().splitlines()
    assert f"register in {in_project.path}" in served, served
    assert served[served.index(f"register in {in_project.path}") + 2].endswith(": exit 0")


def test_register_refuses_metrics_computed_for_another_model(in_project, server):
    """train re-run without evaluate (or a metrics file from before model_sha256): refused up front."""
    (in_project.path / "reports/registry.json").write_text("{}")
    config = in_project.path / "models/sft/config.json"
    config.write_text(config.read_text() + "\n")  # the model changed after it was evaluated
    metrics_path = in_project.path / "data/evaluate/iwsft/metrics.json"
    metrics = json.loads(metrics_path.read_text())
    del metrics["model_sha256"]  # an older evaluate run
    metrics_path.write_text(json.dumps(metrics))
    client = client_for(server)
    before = len(client.search_model_versions())
    done = run(in_project, sys.executable, "-m", "iwsft.cli.main", "register", MLFLOW_TRACKING_URI=server)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "nothing was registered" in done.stderr
    assert ("data/evaluate/sft/metrics.json was computed for another model than models/sft" in done.stderr
            and "run `dvc repro evaluate@sft`" in done.stderr)
    assert ("data/evaluate/iwsft/metrics.json has no model_sha256" in done.stderr
            and "run `dvc repro evaluate@iwsft`" in done.stderr)
    assert len(client.search_model_versions()) == before
    assert (in_project.path / "reports/registry.json").read_text() == "{}"


def test_an_interrupted_register_leaves_no_half_version_and_no_moved_alias(in_project, server, monkeypatch):
    from iwsft.tracking.registry import Registry
    from iwsft.stages import register

    name = "interrupted"
    write_metrics(in_project, "base", 0.10, 0.01)
    write_metrics(in_project, "sft", 0.30, 0.01)
    write_metrics(in_project, "iwsft", 0.20, 0.01)
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
    from iwsft.cli import main as cli
    from iwsft.model.artifacts import load_model
    from iwsft.evaluation.generation import generate_completions
    from iwsft.stages import register

    write_metrics(in_project, "base", 0.10, 0.01)
    write_metrics(in_project, "iwsft", 0.60, 0.01)
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
    done = run(in_project, sys.executable, "-m", "iwsft.cli.main", "register", MLFLOW_TRACKING_URI=dead)
    assert done.returncode == 1
    assert f"iwsft register: error: the MLflow server at {dead} (MLFLOW_TRACKING_URI) is not answering" in done.stderr
    assert "make serve" in done.stderr and "Traceback" not in done.stderr
    assert (in_project.path / "reports/registry.json").read_text() == "{}"
    shown = run(in_project, sys.executable, "-m", "iwsft.cli.main", "registry", "show", MLFLOW_TRACKING_URI=dead)
    assert shown.returncode == 1 and "make serve" in shown.stderr
    assert [len(store.search_model_versions()) for store in stores] == before  # no fallback, nothing registered
