"""The micro study: real `dvc exp run --queue` experiments over two seeds and one ablation, run by
DVC's queue workers, interrupted, resumed, and reported (iwsft.study.plan)."""

import json
import shutil
import signal
import subprocess
import time

import yaml

from conftest import BIN, Project, environment

STUDY = {"seeds": [0, 1], "jobs": 2, "ablations": [{"param": "train.temp", "values": [2.0], "methods": ["iwsft"]}]}


def exp_states(project: Project) -> dict:
    shown = json.loads(project.dvc("exp", "show", "--json").stdout)
    return {e["name"]: (e.get("executor") or {}).get("state", "success")
            for baseline in shown for e in baseline.get("experiments") or []}


def test_micro_study_runs_resumes_after_an_interruption_and_reports_paired_by_seed(micro_project, tmp_path):
    project = Project(tmp_path / "project")
    shutil.copytree(micro_project.path, project.path, symlinks=True)
    (project.path / "configs/study.yaml").write_text(yaml.safe_dump(STUDY))
    project.run("git", "commit", "-qm", "micro study", "--", "configs/study.yaml")

    # 1. seed 0 alone: the micro DAG already ran at seed 0, so DVC's run cache restores every stage
    first = project.iwsft("study", "--seeds", "0", "--no-ablations")
    assert "1 queued now" in first.stderr
    shown = {e["name"]: e for b in json.loads(project.dvc("exp", "show", "--json").stdout) for e in b.get("experiments") or []}
    metrics = shown["study-s0"]["revs"][0]["data"]["metrics"]
    for model in ("base", "sft", "iwsft", "sftq", "iwsftq"):  # the same numbers as the workspace's own run
        own = json.loads((micro_project.path / f"data/evaluate/{model}/metrics.json").read_text())
        assert metrics[f"data/evaluate/{model}/metrics.json"]["data"]["pass_at_1"] == own["pass_at_1"]

    # 2. the whole study, interrupted once its experiments are queued: DVC's workers go on without it
    # SIGINT as at a terminal, even where the test runner was started with it ignored (a background job)
    runner = subprocess.Popen([str(BIN / "iwsft"), "study"], cwd=project.path, env=environment(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in runner.stderr:  # until it has queued the experiments and waits for them
        seen.append(line)
        if "queued now" in line:
            break
    time.sleep(5)
    runner.send_signal(signal.SIGINT)
    stderr = "".join(seen) + runner.communicate(timeout=120)[1]
    assert runner.returncode == 1 and "interrupted: the queued experiments go on" in stderr, stderr[-2000:]
    assert "1 finished (skipped), 3 queued now" in stderr  # seed 0 is not run again

    # 3. resumed: nothing queued twice, it waits for the workers, then reports
    resumed = project.run(str(BIN / "iwsft"), "study", timeout=1500)
    assert " 0 queued now" in resumed.stderr, resumed.stderr[-2000:]
    states = exp_states(project)
    assert sorted(states) == ["study-s0", "study-s0-temp-2", "study-s1", "study-s1-temp-2"]
    assert set(states.values()) == {"success"}
    summary = json.loads((project.path / "reports/study.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["failed"] == []
    rows = {r["model"]: r for r in summary["rows"]}
    assert all(r["seeds"] == 2 for r in rows.values())
    assert rows["iwsft"]["bound_q"] == ["theta"] and rows["sft"]["bound_q"] == []
    assert rows["sft"]["bounds_checked"] == 2  # J >= SFT bound, checked on both seeds
    ablation = summary["ablations"][0]
    assert ablation["param"] == "train.temp" and ablation["seeds"] == 2
    assert ablation["effects"][0]["effect"]["n"] == 2
    text = (project.path / "reports/study.md").read_text()
    assert "# Study: 2 seeds, 4 methods, 1 ablation settings" in text and "| train.temp | 2 (1) | 2 | iw-SFT |" in text
    assert (project.path / "reports/study/methods.png").stat().st_size > 0
    assert (project.path / "reports/study/ablations.png").stat().st_size > 0
