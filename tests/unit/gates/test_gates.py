"""Data gates on small crafted inputs: each boundary passes good data, and a bad record fails with a
message that names the expectation, the column, the count and the offending line, row or id.

The GX suites run for real (one GX import for this module, ~3 s)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from iwsft.config.loading import merge
from iwsft.config.schema import check
from iwsft.data.conversation import completion_content, prompt_key_text
from iwsft.encoding.token_counts import TokenLengths
from iwsft.errors import DataError, UserError
from iwsft.gates.curated import curated_input
from iwsft.gates.evaluation import evaluation_frames
from iwsft.gates.quality import quality_frames
from iwsft.gates.raw import raw_input
from iwsft.gates.reference import reference_frames
from iwsft.gates.results import Check, GateInput, describe_row
from iwsft.gates.runner import run_gate
from iwsft.gates.settings import settings

BASE = yaml.safe_load((Path(__file__).resolve().parents[3] / "params.yaml").read_text())


def typed(overrides: dict):
    """params.yaml with `overrides`, checked by the schema (what a stage receives)."""
    return check(merge(BASE, overrides))


OVERRIDES = {
    "curate": {"max_prompt_tokens": 8, "max_completion_tokens": 4, "require_reward": True},
    "quality": {"percentiles": [90, 95, 98]},
    "evaluate": {"samples_per_prompt": 2, "maj_k": 2},
    "gates": {"max_invalid_fraction": 0.0, "raw": {"min_records": 1},
              "curated": {"min_examples": 2, "max_duplicate_fraction": 0.5, "forbid_eval_prompts": True}},
}


PARAMS = typed(OVERRIDES)


def fails(gate: GateInput, tmp_path) -> str:
    with pytest.raises(DataError) as error:
        run_gate(gate, out_dir=tmp_path)
    return str(error.value)


def raw_file(tmp_path, *records, name="samples.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


# --- formatting (no GX) ---

def test_a_row_is_named_by_position_id_and_value():
    row = {"line": 4, "id": "p1-0", "completion_tokens": 18}
    assert describe_row(row, ("line", "id"), ["completion_tokens"]) == "line 4 (id 'p1-0'): 18"
    pair = {"row": 2, "id": "x", "logprobs": 1, "completion_tokens": 2}
    assert describe_row(pair, ("row", "id"), ["logprobs", "completion_tokens"]) == "row 2 (id 'x'): logprobs=1, completion_tokens=2"
    assert describe_row({"model": "sft", "pass_at_1": math.nan}, ("model",), ["pass_at_1"]) == "model sft: NaN"


def test_a_python_check_line_keeps_the_schema_message():
    check = Check("record schema", False, description="f.jsonl: 2 of 3 records are invalid:\n  line 2: x")
    assert check.line() == "record schema: f.jsonl: 2 of 3 records are invalid:\n      line 2: x"


def test_settings_come_checked_from_the_schema_with_the_knob_named():
    assert settings("raw", typed({}))["max_invalid_fraction"] == 0.0  # strict by default
    with pytest.raises(UserError, match="gates.max_invalid_fraction: Input should be less than or equal to 1"):
        typed({"gates": {"max_invalid_fraction": 2}})
    with pytest.raises(UserError, match="gates.curated.forbid_eval_prompts: Input should be a valid boolean"):
        typed({"gates": {"curated": {"forbid_eval_prompts": "no"}}})


# --- raw ---

def test_raw_gate_passes_and_writes_a_deterministic_summary_and_data_docs(tmp_path):
    path = raw_file(tmp_path, {"id": "a", "prompt": "1+2=", "completion": "3", "reward": 1},
                    {"prompt": "2+2=", "completion": "4", "score": 0.5})
    summary = run_gate(raw_input(path, settings("raw", PARAMS)), out_dir=tmp_path / "gates")
    written = (tmp_path / "gates" / "raw.json").read_bytes()
    assert summary["success"] and summary["rows"] == {"records": 2} and summary["failed"] == []
    engines = {check["engine"] for check in summary["checks"]}
    assert engines == {"python", "great_expectations"}  # the schema check and GX, in one summary
    assert "expect_column_values_to_be_unique" in {check["name"] for check in summary["checks"]}
    assert (tmp_path / "gates" / "raw" / "records.html").read_text().lstrip().startswith("<!DOCTYPE html>")
    run_gate(raw_input(path, settings("raw", PARAMS)), out_dir=tmp_path / "gates")
    assert (tmp_path / "gates" / "raw.json").read_bytes() == written  # the next stage's dep must not churn


def test_raw_gate_stops_at_the_schema_with_line_id_and_field(tmp_path):
    path = raw_file(tmp_path, {"id": "a", "prompt": "1+2=", "completion": "3"}, {"id": "b", "prompt": "x", "completion": "y", "reward": 2})
    message = fails(raw_input(path, settings("raw", PARAMS)), tmp_path)
    assert message.startswith(f"data gate 'raw' failed: {path} is not fit for the curate stage")
    assert f"record schema: {path} line 2 (id 'b'): field 'reward' must be 0 or 1, got 2" in message
    summary = json.loads((tmp_path / "raw.json").read_text())
    assert summary["success"] is False and summary["failed"] == ["record schema"]
    assert not (tmp_path / "raw").exists()  # GX never ran: nothing to render


def test_invalid_raw_records_are_set_aside_up_to_max_invalid_fraction(tmp_path):
    good = [{"id": str(i), "prompt": f"{i}+1=", "completion": str(i + 1), "reward": 1} for i in range(9)]
    path = raw_file(tmp_path, *good, {"id": "bad", "prompt": "", "completion": "x"})
    lenient = settings("raw", typed({"gates": {"max_invalid_fraction": 0.1}}))
    gate = raw_input(path, lenient)
    summary = run_gate(gate, out_dir=None)
    schema = summary["checks"][0]
    assert schema["success"] and schema["unexpected"] == 1 and "1 of 10 records set aside" in schema["description"]
    assert [rejection.line for rejection in gate.payload.rejected] == [10] and len(gate.payload.records) == 9
    with pytest.raises(DataError, match="more than max_invalid_fraction=0.05"):
        run_gate(raw_input(path, settings("raw", typed({"gates": {"max_invalid_fraction": 0.05}}))), out_dir=None)


def test_raw_row_count_is_a_gx_expectation(tmp_path):
    path = raw_file(tmp_path, {"prompt": "1+2=", "completion": "3"})
    message = fails(raw_input(path, settings("raw", typed({"gates": {"raw": {"min_records": 5}}}))), tmp_path)
    assert "expect_table_row_count_to_be_between (at least gates.raw.min_records=5 valid records): observed 1" in message


class ChainSum:
    """A stand-in verifier (the real tasks are tested in test_tasks.py): the answer, exactly."""

    name = "chain_sum"

    def success(self, completion, answer, metadata=None, prompt=None):
        return int(completion.strip() == answer)


def test_raw_gate_checks_the_rewards_against_the_task_verifier(tmp_path):
    agree = [{"id": f"g{i}", "prompt": f"{i}+1=", "completion": str(i + 1), "answer": str(i + 1), "reward": 1} for i in range(19)]
    lie = {"id": "lie", "prompt": "1+1=", "completion": "3", "answer": "2", "reward": 1}
    unscored = {"id": "free", "prompt": "2+2=", "completion": "5", "reward": 1}  # no answer: nothing to check
    path = raw_file(tmp_path, *agree, lie, unscored)
    gate = raw_input(path, settings("raw", PARAMS), ChainSum())
    assert run_gate(gate, out_dir=None)["success"]  # 1 of 20 = 0.05: not more than the default
    assert gate.lookups["reward_agreement"] == {"checked": 20, "disagreeing": 1, "fraction": 0.05, "examples": ["lie"]}
    wrong = [{**record, "answer": "0"} for record in agree[:3]]  # a verifier that disagrees: the wrong task
    message = fails(raw_input(raw_file(tmp_path, *agree[3:], *wrong, lie, name="wrong.jsonl"),
                                     settings("raw", PARAMS), ChainSum()), tmp_path)
    assert "expect_column_pair_values_to_be_equal on columns 'reward, verifier_reward'" in message
    assert "gates.raw.max_reward_disagreement=0.05" in message and "verifier is probably wrong" in message
    assert "line 17 (id 'g0'): reward=1, verifier_reward=0;" in message
    strict = settings("raw", typed({"gates": {"raw": {"max_reward_disagreement": 0.0}}}))
    assert "(id 'lie')" in fails(raw_input(path, strict, ChainSum()), tmp_path)
    assert run_gate(raw_input(path, settings("raw", PARAMS)), out_dir=None)["success"]  # no task: not checked
    with pytest.raises(UserError, match="gates.raw.max_reward_disagreement: Input should be less than or equal to 1"):
        typed({"gates": {"raw": {"max_reward_disagreement": 2}}})


# --- curated ---

# one token per character of the text (a conversational field: of its non-system contents)
CHARACTERS = TokenLengths(prompt=lambda prompt: len(prompt_key_text(prompt)), completion=lambda c: len(completion_content(c)))


def curated(records, eval_prompts=("9+9=",)):
    return curated_input(records, "train.jsonl", settings("curated", PARAMS), CHARACTERS, list(eval_prompts))


def example(i, prompt=None, completion="3", reward=1):
    return {"id": f"c{i}", "prompt": prompt or f"{i}+2=", "completion": completion, "reward": reward}


def test_curated_gate_names_each_broken_rule_with_lines_and_ids(tmp_path):
    records = [example(0), example(1, completion="12345"), example(2, reward=0), example(3, prompt=" 9 + 9= ")]
    message = fails(curated(records), tmp_path)
    assert "(3 of 13 checks failed)" in message
    assert ("expect_column_values_to_be_between on column 'completion_tokens' (completion tokens <= "
            "curate.max_completion_tokens=4): 1 of 4 rows fail, e.g. line 2 (id 'c1'): 5") in message
    assert "column 'reward' (reward is 1 (curate.require_reward)): 1 of 4 rows fail, e.g. line 3 (id 'c2'): 0" in message
    assert "expect_column_values_to_not_be_in_set on column 'prompt_key'" in message
    assert "e.g. line 4 (id 'c3'): '9+9='" in message  # case and whitespace do not hide an eval prompt
    assert "details: " in message and str(tmp_path / "curated" / "examples.html") in message


def test_curated_duplicates_are_allowed_up_to_the_fraction(tmp_path):
    assert run_gate(curated([example(0), example(1), {**example(0), "id": "c9"}]), out_dir=None)["success"]
    message = fails(curated([example(0), {**example(0), "id": "c1"}, {**example(0), "id": "c2"}]), tmp_path)
    assert "column 'repeat'" in message and "2 of 3 rows fail" in message and "line 2 (id 'c1')" in message


def test_curated_gate_reads_conversational_records_by_their_contents(tmp_path):
    def chat(i, prompt=None, completion="3", system="Be brief."):
        return {"id": f"m{i}", "reward": 1,
                "prompt": [{"role": "system", "content": system}, {"role": "user", "content": prompt or f"{i}+2="}],
                "completion": [{"role": "assistant", "content": completion}]}

    assert run_gate(curated([chat(0), chat(1), chat(2, system="Be kind.")]), out_dir=None)["success"]
    records = [chat(0), chat(1, completion="12345"), chat(2, prompt=" 9 + 9= "), chat(3, completion=" ")]
    message = fails(curated(records), tmp_path)
    assert "column 'completion_tokens'" in message and "line 2 (id 'm1'): 5" in message  # its content, counted
    assert "column 'prompt_key'" in message and "line 3 (id 'm2'): '9+9='" in message  # the system message left out
    assert "column 'completion' (completion is not empty or only whitespace)" in message and "line 4 (id 'm3')" in message


def test_curated_set_emptied_by_a_rule_says_which(tmp_path):
    gate = curated([])
    gate.checks.append(Check("curation", False, description="curation removed every record: 'length' dropped 5 of the 5 remaining"))
    message = fails(gate, tmp_path)
    assert "curation: curation removed every record: 'length' dropped 5" in message
    assert "(at least gates.curated.min_examples=2 examples): observed 0" in message


# --- quality ---

def quality(records, thresholds=(0.5, 0.75, 0.9), expected=None, params=OVERRIDES):
    limits = {**settings("quality", typed(params)), "expected_examples": expected}
    summary = {"percentiles": [90, 95, 98], "thresholds": list(thresholds)}
    return quality_frames(records, summary, "quality.jsonl", limits)


def test_quality_gate(tmp_path):
    good = [{"id": f"q{i}", "quality": i / 4, "multiplicity": i % 4} for i in range(4)]
    assert run_gate(quality(good, expected=4), out_dir=None)["success"]
    bad = good[:2] + [{"id": "q2", "quality": math.nan, "multiplicity": 1}, {"id": "q3", "quality": 1.0, "multiplicity": 4}]
    message = fails(quality(bad, thresholds=(0.5, 0.4, math.inf), expected=5), tmp_path)
    assert "expect_table_row_count_to_equal (one row per curated example): observed 4" in message
    assert "column 'quality' (quality is present (not null or NaN)): 1 of 4 rows fail, e.g. line 3 (id 'q2'): NaN" in message
    assert "column 'multiplicity' (multiplicity is 0..3 (thresholds reached)): 1 of 4 rows fail, e.g. line 4 (id 'q3'): 4" in message
    assert "column 'threshold' (thresholds never decrease): 1 of 3 rows fail, e.g. percentile 95: 0.4" in message
    assert "column 'threshold' (thresholds are finite): 1 of 3 rows fail, e.g. percentile 98: inf" in message


def test_coinciding_thresholds_fail_the_gate_only_with_a_q_method(tmp_path):
    good = [{"id": f"q{i}", "quality": i / 4, "multiplicity": i % 4} for i in range(4)]
    difficulty = {**OVERRIDES, "quality": {**OVERRIDES["quality"], "source": "difficulty"}}
    assert settings("quality", typed(difficulty))["quality_methods"] == ["sftq", "iwsftq"]  # params.yaml's four methods
    message = fails(quality(good, thresholds=(0.5, 0.875, 0.875), params=difficulty), tmp_path)
    assert "distinct quality bins: p95 = p98 = 0.875: the (Q) methods' bins coincide (sftq, iwsftq in params.yaml methods)" in message
    assert "the multiplicity takes 3 values, not 4 (quality.source=difficulty)" in message
    assert "quality.source: graded_difficulty" in message and "remove sftq, iwsftq from methods" in message
    assert "checks failed):\n  distinct quality bins" in message and message.count("\n  ") == 1 + message.count("details:")
    message = fails(quality(good, thresholds=(0.75, 0.75, 0.75), params={**difficulty, "methods": ["iwsftq"]}), tmp_path)
    assert "p90 = p95 = p98 = 0.75" in message and "takes 2 values, not 4" in message and "(iwsftq in params.yaml" in message
    graded = {**OVERRIDES, "quality": {**OVERRIDES["quality"], "source": "graded_difficulty"}, "methods": ["sft", "sftq"]}
    assert "more samples per prompt (sample.k)" in fails(quality(good, thresholds=(0.5, 0.9, 0.9), params=graded), tmp_path)
    # without a (Q) method equal thresholds are harmless (nothing trains on the multiplicity)
    plain = {**difficulty, "methods": ["sft", "iwsft"]}
    summary = run_gate(quality(good, thresholds=(0.75, 0.75, 0.75), params=plain), out_dir=None)
    assert summary["success"] and "distinct quality bins" not in {check["name"] for check in summary["checks"]}
    distinct = run_gate(quality(good, params=difficulty), out_dir=None)
    assert distinct["success"] and "distinct quality bins" in {check["name"] for check in distinct["checks"]}


# --- reference ---

@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A tiny pi_ref, four examples, their reference column and fingerprint written as the stage does."""
    from datasets import Dataset
    from support import PAIRS, tiny_model

    from iwsft.training.reference import fingerprint, score_reference
    from iwsft.encoding.sequences import tokenize_dataset
    from iwsft.model.tiny_lm import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    model = tiny_model(0, tokenizer)
    records = [{"id": f"ex{i}", "prompt": p, "completion": c} for i, (p, c) in enumerate(PAIRS[:4])]
    tokenized = tokenize_dataset(Dataset.from_list(records), tokenizer)
    column = score_reference(model, tokenized, tokenizer.pad_token_id, show_progress=False)
    directory = tmp_path_factory.mktemp("reference")
    write_reference(directory, records, column, fingerprint(tokenized, model, tokenizer))
    return directory, records, column, model, tokenizer


def write_reference(directory, records, column, stored):
    import pandas as pd

    frame = pd.DataFrame(records)
    frame["ref_logprobs"] = column
    frame.to_parquet(directory / "train.parquet")
    (directory / "fingerprint.json").write_text(json.dumps(stored))


def reference(directory, scored_fixture, records=None):
    _, original, _, model, tokenizer = scored_fixture
    records = original if records is None else records
    return reference_frames(directory, "ref", {"expected_examples": len(records)}, model, tokenizer, records)


def test_reference_gate_passes_the_stage_output(scored):
    summary = run_gate(reference(scored[0], scored), out_dir=None)
    assert summary["success"] and summary["rows"] == {"examples": 4}
    assert {"fingerprint"} <= {check["name"] for check in summary["checks"]}


@pytest.mark.parametrize("change, fragments", [
    (lambda col: col[1].pop(), ["one log-prob per completion token", "1 of 4 rows fail", "row 1 (id 'ex1'): logprobs="]),
    (lambda col: col[2].__setitem__(0, 0.25), ["'max_logprob' (log-probs are <= 0)", "row 2 (id 'ex2'): 0.25"]),
    (lambda col: col[3].__setitem__(0, math.nan), ["'nonfinite_logprobs'", "row 3 (id 'ex3'): 1"]),
], ids=["wrong length", "positive", "NaN"])
def test_reference_gate_rejects_a_broken_column(scored, tmp_path, change, fragments):
    directory, records, column, *_ = scored
    broken = [list(values) for values in column]
    change(broken)
    write_reference(tmp_path, records, broken, json.loads((directory / "fingerprint.json").read_text()))
    message = fails(reference(tmp_path, scored), tmp_path)
    assert message.startswith("data gate 'reference' failed: ref is not fit for the train stage")
    for fragment in fragments:
        assert fragment in message


def test_reference_of_other_data_or_model_fails_the_fingerprint(scored, tmp_path):
    from support import tiny_model

    from iwsft.training.reference import hash_model_weights

    directory, records, column, model, tokenizer = scored
    stored = json.loads((directory / "fingerprint.json").read_text())
    write_reference(tmp_path, records, column, {**stored, "model_sha256": hash_model_weights(tiny_model(7, tokenizer))})
    assert "fingerprint: ref/fingerprint.json: the reference log-probs were computed for other model weights" in fails(
        reference(tmp_path, scored), tmp_path)
    moved_on = [dict(r, completion=r["completion"] + "0") for r in records]  # the quality data changed since
    message = fails(reference(directory, scored, records=moved_on), tmp_path)
    assert "computed for other data" in message


# --- evaluation ---

METRICS = {"pass_at_1": 0.25, "pass_at_1_ci_low": 0.2, "pass_at_1_ci_high": 0.3, "greedy_accuracy": 0.3, "maj_at_k": 0.25,
           "coverage": 0.4, "c_ref": 0.2, "j_importance": 0.3, "sft_bound": 0.1, "k": 2,
           "n_prompts": 3, "n_samples": 2, "n_trajectories": 6}


def evaluation(tmp_path, **changed):
    limits = {**settings("evaluation", PARAMS), "eval_prompts": 3}
    for model in limits["models"]:
        (tmp_path / model).mkdir(parents=True, exist_ok=True)
        # the iw bound exists where the method trained with a q (here, q = theta for the iw methods)
        bound = {"iw_bound": 0.15, "bound_q": "theta"} if model.startswith("iw") else {"iw_bound": None, "bound_q": None}
        metrics = {**METRICS, **bound, **changed.get(model, {})}
        (tmp_path / model / "metrics.json").write_text(json.dumps(metrics))
        (tmp_path / model / "samples.jsonl").write_text('{"prompt": "1+2=", "completion": "3", "reward": 1}\n' * 6)
    return evaluation_frames(tmp_path, limits["models"], limits)


def test_evaluation_gate(tmp_path):
    assert run_gate(evaluation(tmp_path / "good"), out_dir=None)["success"]
    gate = evaluation(tmp_path / "bad", sft={"pass_at_1": math.nan}, iwsft={"greedy_accuracy": 1.5},
                      sftq={"n_samples": 4, "j_importance": math.inf})
    message = fails(gate, tmp_path)
    assert "column 'pass_at_1' (pass_at_1 is present (not null or NaN)): 1 of 5 rows fail, e.g. model sft: NaN" in message
    assert "column 'greedy_accuracy' (greedy_accuracy in [0, 1]): 1 of 5 rows fail, e.g. model iwsft: 1.5" in message
    assert "column 'n_samples' (n_samples = 2 as configured): 1 of 5 rows fail, e.g. model sftq: 4" in message
    assert "column 'j_importance' (j_importance is finite): 1 of 5 rows fail, e.g. model sftq: inf" in message


def test_evaluation_gate_wants_the_iw_bound_exactly_where_there_is_a_q(tmp_path):
    message = fails(evaluation(tmp_path / "bad", iwsft={"iw_bound": None}, sft={"iw_bound": 0.2}), tmp_path)
    assert "iwsft/metrics.json: iw_bound is None but bound_q is 'theta'" in message
    assert "sft/metrics.json: iw_bound is 0.2 but bound_q is None" in message


def test_evaluation_gate_names_a_missing_metrics_file(tmp_path):
    gate = evaluation(tmp_path)
    (tmp_path / "iwsftq" / "metrics.json").unlink()
    message = fails(evaluation_frames(tmp_path, gate.settings["models"], gate.settings), tmp_path)
    assert "readable: iwsftq:" in message and "metrics.json" in message
    assert "expect_table_row_count_to_equal (a row per model: base, sft, iwsft, sftq, iwsftq): observed 4" in message


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_an_all_zero_or_all_one_pass_at_1_table_is_suspect(tmp_path, value):
    rates = {"pass_at_1": value, "pass_at_1_ci_low": value, "pass_at_1_ci_high": value}
    models = settings("evaluation", PARAMS)["models"]
    message = fails(evaluation(tmp_path / "zero", **{model: rates for model in models}), tmp_path)
    assert f"pass@1 not degenerate: every model's pass_at_1 is exactly {value:g} (base, sft, iwsft, sftq, iwsftq)" in message
    assert "the verifier is probably wrong for this task" in message and "gates.evaluation.allow_degenerate: true" in message
    mixed = evaluation(tmp_path / "mixed", **{model: rates for model in models[1:]})  # base at 0.25: a result
    assert run_gate(mixed, out_dir=None)["success"]
    allowed = typed({**OVERRIDES, "gates": {**OVERRIDES["gates"], "evaluation": {"allow_degenerate": True}}})
    limits = {**settings("evaluation", allowed), "eval_prompts": 3}
    gate = evaluation_frames(tmp_path / "zero", limits["models"], limits)
    assert run_gate(gate, out_dir=None)["success"]
    with pytest.raises(UserError, match="gates.evaluation.allow_degenerate: Input should be a valid boolean"):
        typed({"gates": {"evaluation": {"allow_degenerate": "yes"}}})
