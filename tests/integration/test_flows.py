"""flows/: task bodies via .fn(), the planning and failure rules, and the flows under
prefect_test_harness on a tiny four-stage DVC project (real `dvc repro`, ~1 s a stage)."""

import signal
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # flows/ lives at the project root, next to src/

from flows import dag, publish  # noqa: E402
from flows.pipeline import Policy, evaluate_and_promote, pick, pipeline, retrain_on_new_data, run_stage  # noqa: E402
from flows.stages import GRACE_S, StageFailed, StageResult, classify, run_command  # noqa: E402

# One script plays every stage: copies its input forward, fails like a data gate on "BAD" input,
# and fails once (a transient crash, no `iwsft ...: error:` line) when a flaky-<stage> file exists.
STEP = '''
import json, pathlib, sys
stage, source, target = sys.argv[1:4]
text = pathlib.Path(source).read_text()
if stage == "curate":
    pathlib.Path("data/gates").mkdir(parents=True, exist_ok=True)
    pathlib.Path("data/gates/raw.json").write_text(json.dumps({"boundary": "raw", "success": "BAD" not in text}))
if "BAD" in text:
    sys.exit(f"iwsft {stage}: error: data gate 'raw' failed: {source} is not fit for the {stage} stage")
flaky = pathlib.Path("flaky-" + stage)
if flaky.exists():
    flaky.unlink()
    sys.exit("simulated transient failure")
pathlib.Path(target).parent.mkdir(parents=True, exist_ok=True)
pathlib.Path(target).write_text(text + stage + "\\n")
print(f"{stage}: wrote {target}")
'''
DVC_YAML = """
stages:
  curate:
    cmd: python step.py curate ${curate.raw} curated.txt
    deps: [step.py, "${curate.raw}"]
    outs: [curated.txt]
  train:
    cmd: python step.py train curated.txt model.txt
    deps: [step.py, curated.txt]
    outs: [model.txt]
  evaluate:
    cmd: python step.py evaluate model.txt metrics.txt
    deps: [step.py, model.txt]
    outs: [metrics.txt]
  report:
    cmd: python step.py report metrics.txt reports/report.md
    deps: [step.py, metrics.txt]
    outs: [reports/report.md]
"""


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "step.py").write_text(STEP)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "params.yaml").write_text("curate:\n  raw: raw.txt   # the raw samples\n  keep: 1\n")
    (tmp_path / "raw.txt").write_text("ok\n")
    done = run_command([dag.dvc_executable(), "init", "--no-scm", "-q"], tmp_path, 60, lambda line: None)
    assert done[0] == 0, done
    return tmp_path


def test_pick_prefers_exact_then_longest_pattern():
    policy = {"*": 1, "train@*": 2, "train@iwsft": 3}
    assert [pick(policy, s) for s in ("curate", "train@sft", "train@iwsft")] == [1, 2, 3]
    assert pick({"train@*": 2}, "curate", 0) == 0
    assert Policy.of({"train@*": 4}).retries == {"*": 1, "train@*": 4}  # layered over the defaults


def test_gate_names():
    assert all(dag.is_gate(s) for s in ("gate", "gate_raw", "gates@curated", "data-gate"))
    assert not any(dag.is_gate(s) for s in ("curate", "aggregate", "train@sft", "register"))


@pytest.mark.parametrize("stage, code, tail, kind", [
    ("gate_raw", 255, ["failed to run: iwsft gate raw, exited with 1"], "gate"),
    ("curate", 255, ["iwsft curate: error: data gate 'raw' failed: x is not fit", "exited with 1"], "gate"),
    ("curate", 255, ["iwsft curate: error: data/raw/x.jsonl: 2 of 3 records are invalid",
                     "ERROR: failed to reproduce 'curate': failed to run: iwsft curate, exited with 1"], "user"),
    ("train@sft", 255, ["Traceback (most recent call last):", "RuntimeError: CUDA error",
                        "ERROR: failed to reproduce 'train@sft': failed to run: iwsft train, exited with 1"], "crash"),
    ("train@sft", 255, ["ERROR: Unable to acquire lock. Most likely another DVC process is running"], "crash"),
])
def test_classify(stage, code, tail, kind):
    result = StageResult(stage, code, 1.0, "ran", tail=tail)
    error = StageFailed(result, classify(result))
    assert error.kind == kind
    assert error.retriable == (kind in ("crash", "timeout"))
    assert stage in str(error)


def test_timeout_stops_the_whole_process_group(tmp_path):
    lines = []
    started = time.perf_counter()
    # the shell's child (sleep) must die too, or the pipe stays open and this would hang
    code, timed_out, tail = run_command(["sh", "-c", "echo started; sleep 60; echo never"], tmp_path, 1, lines.append)
    assert timed_out and code != 0 and lines == ["started"] == tail
    assert time.perf_counter() - started < 20
    assert classify(StageResult("train@sft", code, 1.0, "ran", timed_out=True, tail=tail)) == "timeout"


def test_timeout_stops_a_command_even_when_this_process_ignores_sigint(tmp_path):
    """Started in the background (SIGINT ignored, and inherited through exec), the command still gets
    the SIGINT that asks it to stop, not the SIGKILL GRACE_S later."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        started = time.perf_counter()
        code, timed_out, _ = run_command(["sh", "-c", "echo started; sleep 60"], tmp_path, 1, lambda line: None)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert timed_out and code == -signal.SIGINT
    assert time.perf_counter() - started < GRACE_S


def test_downstream_and_dependents_follow_the_edges():
    graph = dag.Dag(("prepare", "sample", "curate", "train@a", "evaluate@base", "evaluate@a", "report"),
                    {"sample": frozenset({"prepare"}), "curate": frozenset({"sample"}),
                     "train@a": frozenset({"curate"}), "evaluate@base": frozenset({"prepare"}),
                     "evaluate@a": frozenset({"train@a"}), "report": frozenset({"evaluate@base", "evaluate@a"})},
                    {"prepare": (), "sample": ("data/prepare",), "curate": ("data/sample/raw.jsonl", "params.yaml"),
                     "train@a": (), "evaluate@base": (), "evaluate@a": (), "report": ("data/evaluate",)})
    assert graph.downstream(["curate"]) == ["curate", "train@a", "evaluate@a", "report"]
    assert graph.dependents_of("data/sample/raw.jsonl") == ["curate"]
    assert graph.dependents_of("data/evaluate/a/metrics.json") == ["report"]  # a folder dep holds the file


def test_project_plan_matches_dvc_yaml():
    order = dag.load_dag(ROOT).order
    prepare, sample = "generate/dvc.yaml:prepare", "generate/dvc.yaml:sample"  # the demo's generators, a dvc.yaml apart
    assert order[0] == prepare and "report" in order
    for before, after in [(prepare, sample), (sample, "curate"), ("reference", "train@iwsft"),
                          ("train@iwsft", "evaluate@iwsft"), ("evaluate@iwsft", "report")]:
        assert order.index(before) < order.index(after)
    assert dag.load_dag(ROOT, "curate").order == (prepare, sample, "curate")


def test_with_your_own_files_no_demo_stage_runs(tmp_path):
    import shutil

    import yaml

    for name in ("dvc.yaml", "generate/dvc.yaml", "params.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["model"]["base"], params["curate"]["raw"] = "my-model", "data/raw/mine.jsonl"
    params["curate"]["eval_prompts"] = "data/raw/eval.jsonl"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = run_command([dag.dvc_executable(), "init", "--no-scm", "-q"], tmp_path, 60, lambda line: None)
    assert done[0] == 0, done
    order = dag.load_dag(tmp_path).order
    assert not [stage for stage in order if stage.startswith("generate/")] and order[0] == "curate", order


def test_overrides_are_dvc_exp_run_set_param(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  lr: 0.1   # learning rate\n  steps: 10\n")
    overrides = ["train.lr=0.5", "train.steps=20"]
    assert dag.apply_overrides(tmp_path, overrides) == {"params.yaml": overrides}
    text = (tmp_path / "params.yaml").read_text()
    assert "lr: 0.5" in text and "steps: 20" in text and "# learning rate" in text


def test_artifact_helpers():
    assert publish.artifact_key("iwsft-gate", "Raw_Samples@x") == "iwsft-gate-raw-samples-x"
    assert publish.verdict({"success": False}) == "FAILED" and publish.verdict({"promoted": True}) == "promoted"
    assert publish.verdict([1]) == ""
    assert publish._run_ids({"a": {"run_id": "r1"}, "b": [{"run_id": "r2"}, {"x": 1}]}) == {"r1", "r2"}


def test_run_stage_body(tiny):
    first = run_stage.fn("curate", str(tiny), 60)
    assert first == {"stage": "curate", "result": "ran", "seconds": first["seconds"]}
    assert (tiny / "curated.txt").read_text() == "ok\ncurate\n"
    assert run_stage.fn("curate", str(tiny), 60)["result"] == "up to date"
    (tiny / "raw.txt").write_text("BAD\n")
    with pytest.raises(StageFailed) as failed:
        run_stage.fn("curate", str(tiny), 60)
    assert failed.value.kind == "gate" and not failed.value.retriable
    assert "data gate 'raw' failed" in failed.value.details
    (tiny / "raw.txt").write_text("ok\n")  # back to the first run's input: DVC's run-cache has its outputs
    assert run_stage.fn("curate", str(tiny), 60)["result"] == "restored from run-cache"


# --- the flows themselves, against a temporary Prefect database ---

@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    from prefect.settings import (PREFECT_HOME, PREFECT_LOGGING_LEVEL, PREFECT_SERVER_ANALYTICS_ENABLED,
                                  temporary_settings)
    from prefect.testing.utilities import prefect_test_harness

    settings = {PREFECT_HOME: tmp_path_factory.mktemp("prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED: False,
                PREFECT_LOGGING_LEVEL: "WARNING"}
    with temporary_settings(updates=settings), prefect_test_harness(server_startup_timeout=60):
        yield


def flow_records(state):
    """(task run name -> (state type, run count)) and the artifact keys of one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        of_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        artifacts = client.read_artifacts(artifact_filter=of_run)
    return {t.name: (t.state.type.value, t.run_count) for t in tasks}, {a.key for a in artifacts}


def test_flows_run_in_order_skip_what_is_fresh_and_publish(harness, tiny):
    user_params = (tiny / "params.yaml").read_bytes()
    (tiny / "step.py").write_text(STEP + "open('seen.txt', 'a').write(open('params.yaml').read())\n")
    state = pipeline(project_dir=str(tiny), overrides=["curate.keep=2", "+curate.extra=added"], return_state=True)
    assert state.is_completed(), state.message
    rows = state.result()
    assert [(r["stage"], r["result"]) for r in rows] == [(s, "ran") for s in ("curate", "train", "evaluate", "report")]
    assert (tiny / "params.yaml").read_bytes() == user_params  # the overrides were for that run only
    assert (tiny / "seen.txt").read_text().count("keep: 2") == 4  # ... and every stage of it saw them
    assert not list((tiny / ".dvc/tmp").glob("iwsft-params-backup*"))
    tasks, keys = flow_records(state)
    assert set(tasks) == {"curate", "train", "evaluate", "report"}
    assert {"iwsft-stages", "iwsft-report", "iwsft-gate-raw", "iwsft-params"} <= keys
    assert "keep: 2" in artifact_data(state, "iwsft-params") and "extra: added" in artifact_data(state, "iwsft-params")

    assert retrain_on_new_data(project_dir=str(tiny)) == []  # nothing changed: says so, runs nothing
    assert [r["stage"] for r in evaluate_and_promote(project_dir=str(tiny))] == ["evaluate", "report"]
    (tiny / "raw.txt").write_text("new data\n")
    rows = retrain_on_new_data(project_dir=str(tiny))
    assert [(r["stage"], r["result"]) for r in rows] == [(s, "ran") for s in ("curate", "train", "evaluate", "report")]
    assert (tiny / "reports/report.md").read_text().startswith("new data\n")


def artifact_data(state, key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), key=ArtifactFilterKey(any_=[key])))
    return found[0].data


def test_a_second_run_on_the_same_workspace_is_refused_or_waits(harness, tiny):
    import threading

    from iwsft.workspace import workspace_lock

    user_params = (tiny / "params.yaml").read_bytes()
    with workspace_lock(tiny, what="the nightly run"):
        state = pipeline(project_dir=str(tiny), overrides=["curate.keep=5"], return_state=True)
        assert state.is_failed() and "is busy: the nightly run (pid" in state.message, state.message
        assert flow_records(state)[0] == {}  # no stage ran
    assert (tiny / "params.yaml").read_bytes() == user_params

    held = threading.Event()

    def hold_for_a_while():
        with workspace_lock(tiny):
            held.set()
            time.sleep(2)

    holder = threading.Thread(target=hold_for_a_while)
    holder.start()
    held.wait(10)
    state = pipeline(project_dir=str(tiny), lock_wait_s=60, return_state=True)  # waits its turn
    holder.join()
    assert state.is_completed(), state.message


def test_failed_gate_fails_the_run_without_retry_and_stops(harness, tiny):
    (tiny / "raw.txt").write_text("BAD\n")
    state = pipeline(project_dir=str(tiny), retries={"*": 3}, retry_delay_s=0, return_state=True)
    assert state.is_failed() and "data gate 'raw' failed" in state.message
    tasks, keys = flow_records(state)
    assert tasks == {"curate": ("FAILED", 1)}  # one attempt, nothing after it
    assert {"iwsft-failure", "iwsft-gate-raw", "iwsft-stages"} <= keys and "iwsft-report" not in keys


def test_transient_failure_is_retried(harness, tiny):
    (tiny / "flaky-train").touch()
    state = pipeline(project_dir=str(tiny), retries={"train": 1}, retry_delay_s=0, return_state=True)
    assert state.is_completed(), state.message
    tasks, _ = flow_records(state)
    assert tasks["train"] == ("COMPLETED", 2) and tasks["report"] == ("COMPLETED", 1)
