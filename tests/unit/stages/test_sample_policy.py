"""The sample stage with sample.policy other than model.base (the teacher-data regime): the teacher
draws, `ref_logprob` is pi_ref's log-prob of exactly the written tokens, `policy_logprob` the teacher's."""

import json
from pathlib import Path

import pytest

from iwsft.config.loading import read_yaml
from iwsft.config.schema import check
from iwsft.errors import UserError
from iwsft.evaluation.generation import sample_completions
from iwsft.model.artifacts import load_model, save_model
from iwsft.model.tiny_lm import build_char_tokenizer, build_tiny_llama
from iwsft.stages import sample as stage
from iwsft.training.reference import sequence_logprobs

ROOT = Path(__file__).resolve().parents[3]
PROMPTS = [("p0", "1+2=", "3"), ("p1", "7+8=", "15"), ("p2", "9-12=", "-3")]


def tiny(directory: Path, seed: int, tokenizer=None) -> str:
    tokenizer = tokenizer or build_char_tokenizer()
    model = build_tiny_llama(len(tokenizer), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, seed=seed)
    save_model(model, tokenizer, directory)
    return str(directory)


def run_sample(tmp_path, monkeypatch, base: str, policy: str) -> tuple[list[dict], dict]:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": p, "answer": a}) + "\n" for i, p, a in PROMPTS))
    project = read_yaml(ROOT / "params.yaml")
    params = check({**project, "runtime": {"device": "cpu", "dtype": "float32"},
                    "model": {**project["model"], "base": base},
                    "sample": {**project["sample"], "policy": policy, "prompts": str(prompts), "k": 3,
                               "max_new_tokens": 4, "batch_size": 8}})
    monkeypatch.setattr(stage, "OUT", tmp_path / "sample")
    stage.run(params)
    out = tmp_path / "sample"
    return ([json.loads(line) for line in (out / "raw.jsonl").read_text().splitlines()],
            json.loads((out / "summary.json").read_text()))


def scored(directory: str, records: list[dict]) -> list[float]:
    model, tokenizer = load_model(directory)
    return sequence_logprobs(model, tokenizer, [r["prompt"] for r in records], [r["completion"] for r in records],
                             completion_ids=[r["completion_ids"] for r in records],
                             finished=[r["finished"] for r in records])


def test_a_teacher_draws_and_pi_ref_scores_its_tokens(tmp_path, monkeypatch):
    base, teacher = tiny(tmp_path / "base", seed=0), tiny(tmp_path / "teacher", seed=1)
    records, summary = run_sample(tmp_path, monkeypatch, base, teacher)
    assert records and summary["policy"] == teacher and summary["on_policy"] is False
    # the teacher's draws: the same seed gives the same tokens from the teacher, not from pi_ref
    model, tokenizer = load_model(teacher)
    drawn = sample_completions(model, tokenizer, [p for _, p, _ in PROMPTS], num_samples=3, max_new_tokens=4,
                               seed=0, batch_size=8, show_progress=False)
    written = [s.token_ids + ([s.stop_token_id] if s.finished else []) for row in drawn for s in row if s.text.strip()]
    assert [r["completion_ids"] for r in records] == written
    ref, own = scored(base, records), scored(teacher, records)
    assert [r["ref_logprob"] for r in records] == pytest.approx(ref, abs=1e-5)
    assert [r["policy_logprob"] for r in records] == pytest.approx(own, abs=1e-5)
    assert ref != pytest.approx(own, abs=1e-3)  # two models: the columns are not one copied twice


def test_on_policy_writes_no_policy_logprob(tmp_path, monkeypatch):
    base = tiny(tmp_path / "base", seed=0)
    records, summary = run_sample(tmp_path, monkeypatch, base, base)
    assert summary["on_policy"] is True and summary["policy"] == base
    assert all("policy_logprob" not in r for r in records)
    assert [r["ref_logprob"] for r in records] == pytest.approx(scored(base, records), abs=1e-5)


def test_a_teacher_with_another_vocabulary_is_refused_before_sampling(tmp_path, monkeypatch):
    other = build_char_tokenizer()
    other.add_tokens(["<think>"])
    base, teacher = tiny(tmp_path / "base", seed=0), tiny(tmp_path / "teacher", seed=1, tokenizer=other)
    monkeypatch.setattr(stage, "sample_completions", lambda *a, **k: pytest.fail("sampled with a mismatched teacher"))
    with pytest.raises(UserError, match=r"sample.policy: .*teacher and model.base .*base must share the tokenizer .*, "
                                        r"but the vocabularies differ \(99 vs 100 tokens; e.g. '<think>'\)"):
        run_sample(tmp_path, monkeypatch, base, teacher)
