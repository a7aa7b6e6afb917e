"""The micro study: real `dvc exp run --queue` experiments over two data regimes (pi_ref's own samples on
two seeds, a teacher's on one), SFT, iw-SFT and DFT, and one ablation, run by DVC's queue workers,
interrupted, resumed, and reported with the decision table (iwsft.study.plan, iwsft.study.regimes)."""

import json
import shutil
import signal
import subprocess
import time

import yaml

from projects import BIN, Project, environment

# The smallest study that still runs every part: both regimes (the teacher's on seed 0 only: its DAG
# pretrains a second model), DFT beside SFT and iw-SFT, one ablation. The teacher keeps profiles/teacher.yaml's
# keys but pretrains for micro's pi_ref steps, not the demo's 600: the test exercises the regime, it does
# not need a strong teacher.
STUDY = {"seeds": [0, 1], "jobs": 2, "methods": ["sft", "iwsft", "dft"],
         "regimes": {"on-policy": {}, "teacher": {"profile": "teacher", "params": {"teacher.steps": 400}, "seeds": [0]}},
         "ablations": [{"param": "train.temp", "values": [2.0], "methods": ["iwsft"], "regimes": ["on-policy"]}]}


def exp_show(project: Project) -> dict:
    shown = json.loads(project.dvc("exp", "show", "--json").stdout)
    return {e["name"]: e for baseline in shown for e in baseline.get("experiments") or []}


def exp_metrics(project: Project, name: str) -> dict:
    return {path: value["data"] for path, value in exp_show(project)[name]["revs"][0]["data"]["metrics"].items()
            if "data" in value}


def test_micro_study_runs_both_regimes_resumes_after_an_interruption_and_decides_paired_by_seed(micro_project, tmp_path):
    project = Project(tmp_path / "project")
    shutil.copytree(micro_project.path, project.path, symlinks=True)
    (project.path / "configs/study.yaml").write_text(yaml.safe_dump(STUDY, sort_keys=False))
    project.run("git", "commit", "-qm", "micro study", "--", "configs/study.yaml")

    # 1. seed 0 alone, both regimes: the micro DAG already ran at seed 0, so DVC's run cache restores
    # pi_ref, its samples and the methods it trained; DFT is new, and the teacher regime runs its own DAG
    first = project.iwsft("study", "--seeds", "0", "--no-ablations", check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 queued now" in first.stderr
    on_policy, teacher = exp_metrics(project, "study-on-policy-s0"), exp_metrics(project, "study-teacher-s0")
    for model in ("base", "sft", "iwsft"):  # the same numbers as the workspace's own run
        own = json.loads((micro_project.path / f"data/evaluate/{model}/metrics.json").read_text())
        assert on_policy[f"data/evaluate/{model}/metrics.json"]["pass_at_1"] == own["pass_at_1"]
    assert teacher["data/evaluate/base/metrics.json"] == on_policy["data/evaluate/base/metrics.json"]  # one pi_ref
    assert 0.0 <= teacher["data/evaluate/dft/metrics.json"]["pass_at_1"] <= 1.0
    params = exp_show(project)["study-teacher-s0"]["revs"][0]["data"]["params"]["params.yaml"]["data"]
    assert params["sample"]["policy"] == "data/prepare/teacher_model" and params["methods"] == ["sft", "iwsft", "dft"]
    assert params["teacher"]["steps"] == 400

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
    assert "2 finished (skipped), 3 queued now" in stderr  # seed 0's runs are not run again

    # 3. resumed: nothing queued twice, it waits for the workers, then reports
    resumed = project.run(str(BIN / "iwsft"), "study", timeout=1500)
    assert " 0 queued now" in resumed.stderr, resumed.stderr[-2000:]
    states = {name: (e.get("executor") or {}).get("state", "success") for name, e in exp_show(project).items()}
    assert sorted(states) == ["study-on-policy-s0", "study-on-policy-s0-temp-2", "study-on-policy-s1",
                              "study-on-policy-s1-temp-2", "study-teacher-s0"]
    assert set(states.values()) == {"success"}
    summary = json.loads((project.path / "reports/study.json").read_text())
    assert summary["failed"] == [] and summary["methods"] == ["sft", "iwsft", "dft"]
    regimes = {r["name"]: r for r in summary["regimes"]}
    assert regimes["on-policy"]["seeds"] == [0, 1] and regimes["teacher"]["seeds"] == [0]
    rows = {r["model"]: r for r in regimes["on-policy"]["rows"]}
    assert all(r["seeds"] == 2 for r in rows.values())
    assert rows["iwsft"]["bound_q"] == ["theta"] and rows["sft"]["bound_q"] == [] and rows["dft"]["bound_q"] == []
    assert rows["sft"]["bounds_checked"] == 2  # J >= SFT bound, checked on both seeds
    # the iw methods' training weights (the train stage's data/train_metrics/METHOD.json), read through exp show
    assert rows["iwsft"]["weights"]["weight_mean"]["n"] == 2 and rows["iwsft"]["weights"]["ess"]["n"] == 2
    assert rows["sft"]["weights"] is None and rows["dft"]["weights"] is None
    pairs = {(p["method"], p["against"]): p["difference"] for p in regimes["on-policy"]["decision"]["pairs"]}
    assert pairs[("iwsft", "sft")]["n"] == 2 and pairs[("dft", "sft")]["n"] == 2 and ("iwsft", "dft") in pairs
    assert {(p["method"], p["against"]) for p in regimes["teacher"]["decision"]["pairs"]} >= {("iwsft", "sft"), ("dft", "sft")}
    [ablation] = regimes["on-policy"]["ablations"]
    assert ablation["param"] == "train.temp" and ablation["seeds"] == 2 and ablation["effects"][0]["effect"]["n"] == 2
    assert regimes["teacher"]["ablations"] == []
    effect = {e["model"]: e["difference"] for e in summary["regime_effects"]}
    assert set(effect) == {"sft", "iwsft", "dft"} and effect["dft"]["n"] == 1  # paired on the seed both ran
    text = (project.path / "reports/study.md").read_text()
    assert text.startswith("# Study: 2 regimes × 3 methods × 2 seeds, 1 ablation settings")
    decision = text[text.index("## Decision: which method, per regime"):text.index("## Regime on-policy")]
    assert "| on-policy | 2 | " in decision and "| teacher | 1 | " in decision and "(best)" in decision
    assert "| reading | mean weight | ESS |" in decision
    assert "one seed: no interval" in decision  # the teacher's single seed cannot tell a difference
    assert "| train.temp | 2 (1) | 2 | iw-SFT |" in text
    assert (project.path / "reports/study/methods.png").stat().st_size > 0
    assert (project.path / "reports/study/ablations.png").stat().st_size > 0
