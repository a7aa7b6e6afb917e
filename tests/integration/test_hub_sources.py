"""Hub datasets through the real DAG: profiles/paper-s1k-smoke.yaml (the paper's recipe at smoke size) with
stand-ins for simplescaling/s1K-1.1 and HuggingFaceH4/aime_2024, built by the test in a local HF cache with
the real datasets' columns, run by `dvc repro` from the `sources` stages to `register`; then a new revision
of s1K in the cache re-runs curate, an unchanged cache does not, and a bad row stops `sources` with its
dataset, row index and column named.

SmolLM2-135M as pi_ref, one method: 17 min 43 s for the three tests on a 2-core VM shared with six other test
runs (2026-12-07). Skips when the model was not imported (`make smollm2`)."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from projects import BIN, environment, make_project
from hub_datasets import AIME_ROWS, S1K_ROWS, hub_dataset
from iwsft.model.gguf import RECORD

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMPORTED = ROOT / "data/models/smollm2-135m-instruct"
S1K, AIME = "simplescaling/s1K-1.1", "HuggingFaceH4/aime_2024"


def dvc(project, hf: Path, *args, check=True) -> subprocess.CompletedProcess:
    """dvc with the test's HF cache as the user's (HF_HOME), offline as always."""
    done = subprocess.run([str(BIN / "dvc"), *args], cwd=project.path, env={**environment(), "HF_HOME": str(hf)},
                          capture_output=True, text=True, timeout=1800)
    if check and done.returncode:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def ran(done) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", done.stdout)


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    if not (IMPORTED / RECORD).is_file():
        pytest.skip("SmolLM2 is not imported: run `make smollm2`")
    hf = tmp_path_factory.mktemp("hf")
    commit = hub_dataset(hf / "hub", S1K, {"train": S1K_ROWS})
    hub_dataset(hf / "hub", AIME, {"train": AIME_ROWS})
    path = tmp_path_factory.mktemp("paper")
    (path / "data/models").mkdir(parents=True)
    (path / "data/models/smollm2-135m-instruct").symlink_to(IMPORTED, target_is_directory=True)
    project = make_project(path, profile="paper-s1k-smoke")
    return project, hf, commit, dvc(project, hf, "repro")


def test_the_hub_datasets_run_through_register(paper):
    project, _, commit, done = paper
    stages = ran(done)
    assert {"sources@s1k", "sources@aime", "curate"} <= set(stages) and stages[-1] == "register"
    assert max(stages.index("sources@s1k"), stages.index("sources@aime")) < stages.index("curate")
    assert not any("generate" in stage for stage in stages)  # no demo stage: the data are the hub's
    summary = json.loads((project.path / "data/sources/s1k.json").read_text())
    assert summary["fingerprint"]["commit"] == commit and summary["records"] == len(S1K_ROWS)
    assert summary["source"] == f"hf://datasets/{S1K} (split train)" and summary["read_as"] == "raw samples"
    curated = [json.loads(line) for line in (project.path / "data/curate/train.jsonl").read_text().splitlines()]
    first = next(record for record in curated if record["answer"] == "3")
    assert first["prompt"] == "What is 1 + 2?\n\nPut your final answer in \\boxed{}."
    assert first["completion"] == "<think>\nI add 1 and 2.\n</think>\n\nThe answer is \\boxed{3}."
    aime = [json.loads(line) for line in (project.path / "data/sources/aime.jsonl").read_text().splitlines()]
    assert aime[0] == {"id": "60", "prompt": "Compute 10 + 20.\n\nPut your final answer in \\boxed{}.", "answer": "30"}
    registry = json.loads((project.path / "reports/registry.json").read_text())
    assert registry["model_name"] == "iwsft-paper-s1k-smoke" and set(registry["versions"]) == {"iwsft"}


def test_an_unchanged_cache_reruns_only_sources_and_a_new_revision_reruns_curate(paper):
    project, hf, _, _ = paper
    again = dvc(project, hf, "repro", "curate")
    assert set(ran(again)) == {"sources@s1k", "sources@aime"}  # always_changed, and nothing they wrote changed
    newer = hub_dataset(hf / "hub", S1K, {"train": S1K_ROWS + [{**S1K_ROWS[0], "question": "What is 9 + 9?",
                                                                 "deepseek_attempt": "\\boxed{18}", "solution": "18"}]})
    changed = dvc(project, hf, "repro", "curate")
    assert "curate" in ran(changed)
    assert json.loads((project.path / "data/sources/s1k.json").read_text())["fingerprint"]["commit"] == newer
    status = json.loads(dvc(project, hf, "status", "--json", "curate").stdout or "{}")
    assert "curate" not in status


def test_a_bad_row_stops_sources_naming_dataset_row_and_column(paper):
    project, hf, _, _ = paper
    rows = [dict(row) for row in S1K_ROWS]
    rows[2]["question"] = None
    hub_dataset(hf / "hub", S1K, {"train": rows})
    done = dvc(project, hf, "repro", "sources@s1k", check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert (f"hf://datasets/{S1K} (split train) row index 2: field 'prompt' (template over column 'question') is null"
            in done.stderr + done.stdout)
