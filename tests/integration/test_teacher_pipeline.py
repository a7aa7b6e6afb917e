"""The teacher-data regime (profiles/teacher.yaml over micro): real `dvc repro` from the micro DAG's
project, through prepare_teacher, sample (the teacher draws), curate, quality, reference and train
for sft and iwsft; then reference.policy: sampler, and training refusing a column of the other policy."""

import json
import shutil

import pytest
import yaml

from iwsft.model.artifacts import load_model
from iwsft.training.reference import hash_model_weights

pytestmark = pytest.mark.integration


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def set_params(project, **sections):
    path = project.path / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        params[section] = {**params[section], **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def teacher_project(micro_project, tmp_path_factory):
    """The micro project (its prepare is reused: same params, same outputs) with the teacher profile
    on top, at smoke size: a short teacher pretraining and 20 training steps per method."""
    path = tmp_path_factory.mktemp("teacher") / "project"
    shutil.copytree(micro_project.path, path, symlinks=True)
    project = type(micro_project)(path)
    project.iwsft("profile", "teacher")
    set_params(project, methods=["sft", "iwsft"], teacher={"steps": 200}, train={"steps": 20, "logging_steps": 5})
    done = project.dvc("repro", "train@sft", "train@iwsft")
    assert "Running stage 'generate/dvc.yaml:prepare'" not in done.stdout  # micro's pi_ref, as it was
    return project


def test_the_teacher_writes_the_data_and_pi_ref_scores_it(teacher_project):
    root = teacher_project.path
    summary = json.loads((root / "data/sample/summary.json").read_text())
    assert summary["policy"] == "data/prepare/teacher_model" and summary["on_policy"] is False
    raw = read_jsonl(root / "data/sample/raw.jsonl")
    assert all(r["ref_logprob"] <= 0 and r["policy_logprob"] <= 0 for r in raw)
    # two models scored the same tokens: pi_ref (the micro base) and the teacher differ on them
    assert sum(r["ref_logprob"] for r in raw) != pytest.approx(sum(r["policy_logprob"] for r in raw), rel=1e-3)
    base, _ = load_model(root / "data/prepare/base_model")
    fingerprint = json.loads((root / "data/reference/fingerprint.json").read_text())
    assert fingerprint["policy"] == "base" and fingerprint["policy_model"] == "data/prepare/base_model"
    assert fingerprint["model_sha256"] == hash_model_weights(base)
    column = json.loads((root / "data/reference/summary.json").read_text())
    curated = read_jsonl(root / "data/quality/train.jsonl")
    assert column["policy"] == "base" and column["completions"] == len(curated)
    assert column["mean_logprob_per_completion"] == pytest.approx(
        sum(r["ref_logprob"] for r in curated) / len(curated), rel=1e-4)
    for method in ("sft", "iwsft"):
        assert (root / "models" / method / "model.safetensors").exists()
    assert any("ess" in entry for entry in json.loads((root / "data/train/iwsft/train_log.json").read_text()))


def test_a_sampler_reference_is_the_teachers_and_training_refuses_it_under_base(teacher_project):
    root = teacher_project.path
    base_summary = json.loads((root / "data/reference/summary.json").read_text())
    set_params(teacher_project, reference={"policy": "sampler"})
    teacher_project.dvc("repro", "train@iwsft")
    fingerprint = json.loads((root / "data/reference/fingerprint.json").read_text())
    teacher, _ = load_model(root / "data/prepare/teacher_model")
    assert fingerprint["policy"] == "sampler" and fingerprint["model_sha256"] == hash_model_weights(teacher)
    summary = json.loads((root / "data/reference/summary.json").read_text())
    assert summary["policy_model"] == "data/prepare/teacher_model"
    # the teacher's column summed is the sample stage's policy_logprob of the same records (pi_ref's was
    # ref_logprob): the same tokens, scored by the other model
    own = {r["id"]: r["policy_logprob"] for r in read_jsonl(root / "data/sample/raw.jsonl")}
    curated = read_jsonl(root / "data/quality/train.jsonl")
    assert summary["mean_logprob_per_completion"] == pytest.approx(
        sum(own[r["id"]] for r in curated) / len(curated), rel=1e-4)
    assert summary["mean_logprob_per_completion"] != pytest.approx(base_summary["mean_logprob_per_completion"])
    assert summary["mean_completion_tokens"] == base_summary["mean_completion_tokens"]  # the same tokens

    set_params(teacher_project, reference={"policy": "base"})  # params now disagree with the column
    refused = teacher_project.iwsft("train", "--method", "sft", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "the reference log-probs are 'sampler'" in refused.stderr and "reference.policy: base" in refused.stderr
