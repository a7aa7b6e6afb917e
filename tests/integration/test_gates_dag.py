"""The gates in the reproduced micro DAG: every boundary was checked and passed, and every summary
is a dependency of the stage after it (ANCHORS.md 2.5: a gate only gates what depends on it)."""

import json

import pytest
import yaml

pytestmark = pytest.mark.integration

# boundary -> (the stage that writes its summary, a stage that must list it in deps)
WIRING = {"raw": ("curate", None), "curated": ("curate", "quality"), "quality": ("reference", None),
          "reference": ("reference", "train"), "evaluation": ("report", "register")}


def test_every_boundary_passed_its_gate_in_the_micro_dag(micro_project):
    gates = micro_project.path / "data" / "gates"
    rows = {}
    for boundary in WIRING:
        summary = json.loads((gates / f"{boundary}.json").read_text())
        assert summary["success"] and summary["failed"] == [], boundary
        assert {"python", "great_expectations"} >= {check["engine"] for check in summary["checks"]}
        assert any(check["engine"] == "great_expectations" for check in summary["checks"]), boundary
        assert list((gates / boundary).glob("*.html")), f"no data docs for {boundary}"
        rows[boundary] = summary["rows"]
    curated = sum(1 for _ in (micro_project.path / "data/curate/train.jsonl").open())
    assert rows["curated"] == {"examples": curated} and rows["reference"] == {"examples": curated}
    assert rows["evaluation"] == {"models": 5}
    report = json.loads((micro_project.path / "data/curate/report.json").read_text())
    assert report["rejected"] == 0 and (micro_project.path / "data/curate/rejects.jsonl").read_text() == ""


def test_each_gate_summary_is_an_output_and_the_next_stage_depends_on_it(micro_project):
    stages = yaml.safe_load((micro_project.path / "dvc.yaml").read_text())["stages"]

    def listed(stage, key):
        body = stages[stage].get("do", stages[stage])
        return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in body.get(key, [])]

    for boundary, (writer, reader) in WIRING.items():
        assert f"data/gates/{boundary}.json" in listed(writer, "outs"), (boundary, writer)
        if reader:
            assert f"data/gates/{boundary}.json" in listed(reader, "deps"), (boundary, reader)
    for stage in ("curate", "reference", "report"):  # the gate code they run is a dep: editing a suite re-runs them
        assert {"src/iwsft/gates/runner.py", "src/iwsft/gates/suites.py"} <= set(listed(stage, "deps")), stage
