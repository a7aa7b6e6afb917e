"""The smollm2 profile at smoke size (profiles/smollm2-smoke.yaml), real `dvc repro` through register:
SmolLM2-135M-Instruct as pi_ref, reasoning-gym prompts in its chat template, no demo stage.

About 5 minutes on 2 cores (every stage loads the 135M model at least once). Skips when the model
was not imported (`make test` imports it first; `make smollm2` by hand)."""

import json
import re
from pathlib import Path

import pytest
import torch

from projects import make_project
from iwsft.model.artifacts import load_tokenizer
from iwsft.encoding.chat import ChatFormat
from iwsft.model.gguf import RECORD
from iwsft.encoding.sequences import completion_token_count, encode_record

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMPORTED = ROOT / "data/models/smollm2-135m-instruct"  # the Makefile's SMOLLM2
IM_END = 2  # SmolLM2's <|im_end|>


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    if not (IMPORTED / RECORD).is_file():
        pytest.skip("SmolLM2 is not imported: run `make smollm2`")
    path = tmp_path_factory.mktemp("smollm2")
    (path / "data/models").mkdir(parents=True)
    # data/models/ is git-ignored, as in a user's clone: the model is there, not committed
    (path / "data/models/smollm2-135m-instruct").symlink_to(IMPORTED, target_is_directory=True)
    project = make_project(path, profile="smollm2-smoke", served=False)  # a plain `dvc repro`: a process per stage
    done = project.dvc("repro")
    return project, done.stdout


def test_smoke_run_reaches_register_without_a_demo_stage(smoke):
    project, output = smoke
    ran = re.findall(r"Running stage '([^']+)'", output)
    # the generator stages run, in DVC's own order among the others (only prompts must come first)
    assert ran[0] == "generate/dvc.yaml:prompts" and "generate/dvc.yaml:sample" in ran and ran[-1] == "register"
    assert not any("prepare" in stage for stage in ran) and not (project.path / "data/prepare/base_model").exists()
    registry = json.loads((project.path / "reports/registry.json").read_text())
    assert registry["model_name"] == "iwsft-smollm2-smoke"
    assert set(registry["versions"]) == {"iwsft"}  # the profile's one method, registered
    report = (project.path / "reports/report.md").read_text()
    assert "| base (π_ref) |" in report and "| iw-SFT |" in report


def test_samples_are_chat_rendered_and_keep_their_exact_tokens(smoke):
    project, _ = smoke
    eval_prompts = read_jsonl(project.path / "data/prompts/eval.jsonl")
    train_prompts = read_jsonl(project.path / "data/prompts/train.jsonl")
    assert len(eval_prompts) == 4 and len(train_prompts) == 8
    assert not {p["prompt"] for p in eval_prompts} & {p["prompt"] for p in train_prompts}
    assert all(p["prompt"].endswith(" Reply with just the number.") for p in train_prompts)

    raw = read_jsonl(project.path / "data/sample/raw.jsonl")
    assert len(raw) == 16
    tokenizer = load_tokenizer(IMPORTED)
    for record in raw:
        assert tokenizer.decode(record["completion_ids"], skip_special_tokens=True) == record["completion"]
        assert (record["completion_ids"][-1] == IM_END) == record["finished"]  # stopped on <|im_end|>, not EOS text
        assert record["finished"] or len(record["completion_ids"]) == 16  # max_new_tokens, no end-of-turn added

    curated = read_jsonl(project.path / "data/curate/train.jsonl")
    report = json.loads((project.path / "data/curate/report.json").read_text())
    assert 0 < len(curated) <= 16 and all(r["finished"] for r in curated)  # unfinished ones dropped, counted
    unfinished = next(rule for rule in report["rules"] if rule["rule"] == "unfinished")
    assert unfinished["dropped"] == sum(not r["finished"] for r in raw)
    assert report["reward_agreement"]["disagreeing"] == 0  # curate re-scored sample's rewards: same verifier

    import pandas as pd

    chat = ChatFormat.from_setting("auto", tokenizer)
    scored = pd.read_parquet(project.path / "data/reference/train.parquet")
    for row in scored.to_dict("records"):  # the column covers exactly the sampled ids, the ChatML prompt masked
        encoded = encode_record(tokenizer, {**row, "completion_ids": list(row["completion_ids"])}, chat)
        assert encoded["input_ids"][-len(row["completion_ids"]):] == list(row["completion_ids"])
        assert len(row["ref_logprobs"]) == completion_token_count(encoded["labels"])
        assert tokenizer.decode(encoded["input_ids"]).startswith("<|im_start|>system\n")
        # the sample stage scored the same ids with the reference stage's code: its sum, to fp32 rounding
        # (other batches, other padding: measured up to 1.3e-5 on -12.0, i.e. 1.1e-6 relative)
        assert float(sum(row["ref_logprobs"])) == pytest.approx(row["ref_logprob"], rel=1e-5, abs=1e-5), row["id"]


def test_training_ran_its_two_steps_and_evaluation_scored_every_prompt(smoke):
    project, _ = smoke
    log = json.loads((project.path / "data/train/iwsft/train_log.json").read_text())
    assert max(entry.get("step", 0) for entry in log) == 2 and any("loss" in entry for entry in log)
    for model in ("base", "iwsft"):
        metrics = json.loads((project.path / f"data/evaluate/{model}/metrics.json").read_text())
        assert metrics["n_prompts"] == 4 and metrics["n_samples"] == 2
        assert 0.0 <= metrics["pass_at_1"] <= 1.0 and metrics["score_errors"] == 0


def test_relinked_models_are_one_file_with_their_dvc_cache_copy(smoke):
    """.dvc/config's cache.type and `iwsft run`'s relink: DVC copies a directory output into its cache
    when the stage ends; `dvc checkout --relink` then hardlinks it, so a model costs its size once."""
    project, _ = smoke
    weights = project.path / "models/iwsft/model.safetensors"
    assert weights.stat().st_nlink == 1  # what `dvc repro` alone leaves: two copies
    project.dvc("checkout", "--relink", "--quiet", "dvc.yaml")
    assert weights.stat().st_nlink == 2  # the workspace's file and the cache's are one
    assert sum(1 for _ in (project.path / ".dvc/cache").rglob("*") if _.is_file() and _.stat().st_ino == weights.stat().st_ino) == 1


def test_the_baselines_stored_log_probs_are_smollm2s_own_scores(smoke, monkeypatch):
    """evaluate@base stores log pi_ref of each ChatML-rendered sample (`ref_logprob`), which the trained models'
    bounds read instead of scoring again: with a real BPE chat tokenizer, what a fresh scoring gives."""
    from iwsft.config.loading import load_params
    from iwsft.evaluation.scoring import trajectory_logprobs
    from iwsft.model.artifacts import load_model_for

    project, _ = smoke
    monkeypatch.chdir(project.path)
    params = load_params()
    rows = read_jsonl(project.path / "data/evaluate/base/samples.jsonl")
    model, tokenizer = load_model_for(params, params.model.base)
    # at the stage's thread count (params `threads`, set by the CLI): MKL's sums for the scorer's small
    # batches depend on how many threads share them, so another count rounds differently
    threads = torch.get_num_threads()
    torch.set_num_threads(params.threads)
    try:
        rescored = trajectory_logprobs(model, tokenizer, params, [{k: v for k, v in r.items() if k != "ref_logprob"}
                                                                  for r in rows])
    finally:
        torch.set_num_threads(threads)
    assert len(rows) == 8 and [r["ref_logprob"] for r in rows] == list(rescored)
