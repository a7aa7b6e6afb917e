"""`completion_ids` checked against model.base's tokenizer before anything runs (issue 32): each id in
[0, len(tokenizer)) and the ids decoding to the completion, the check the reference stage makes
(iwsft.encoding.sequences.misdecoded), now made by `iwsft validate raw` (given a params.yaml) and curate's
raw gate. With the demo's char tokenizer and, when imported, SmolLM2's BPE tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from iwsft.encoding.token_counts import completion_ids_problem
from iwsft.gates.raw import raw_input
from iwsft.gates.settings import raw_settings

ROOT = Path(__file__).resolve().parents[3]
SMOLLM2 = ROOT / "data" / "models" / "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory):
    from iwsft.model.tiny_lm import build_char_tokenizer

    directory = tmp_path_factory.mktemp("char")
    build_char_tokenizer().save_pretrained(directory)  # as prepare saves the demo's pi_ref
    return directory


@pytest.fixture(scope="module", params=["char", "smollm2"])
def tokenizer(request, char_dir):
    from iwsft.model.tokenizer import load_tokenizer

    if request.param == "smollm2" and not (SMOLLM2 / "iwsft_import.json").is_file():
        pytest.skip("SmolLM2 not imported: run `make smollm2`")
    return load_tokenizer(char_dir if request.param == "char" else SMOLLM2)


def sampled(tokenizer, completion: str) -> dict:
    """A record as `iwsft sample` writes it: the completion's ids and the stop token."""
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"id": "r1", "prompt": "1+2=", "completion": completion, "completion_ids": ids}


def test_the_models_own_ids_pass(tokenizer):
    assert completion_ids_problem(tokenizer, sampled(tokenizer, "1 + 2 = 3")) is None
    assert completion_ids_problem(tokenizer, {"prompt": "p", "completion": "c"}) is None  # no ids: nothing to check


@pytest.mark.parametrize("bad", ["vocabulary size", "2**31", "2**64", "negative"])
def test_an_id_outside_the_vocabulary_is_refused_before_decoding(tokenizer, bad):
    record = sampled(tokenizer, "3")
    token = {"vocabulary size": len(tokenizer), "2**31": 2**31, "2**64": 2**64, "negative": -1}[bad]
    record["completion_ids"] = record["completion_ids"][:-1] + [token]  # instead of the stop token
    problem = completion_ids_problem(tokenizer, record, "model.base (demo)")
    assert problem == (f"holds token id {token} (position {len(record['completion_ids']) - 1}), outside the vocabulary "
                       f"of model.base (demo) (ids 0 to {len(tokenizer) - 1})")


def test_an_unknown_id_that_would_decode_to_nothing_is_refused(tokenizer):
    # the stop token's place taken by an id past the vocabulary: decode skips it ("" added), the forward would crash
    record = sampled(tokenizer, "3")
    record["completion_ids"][-1] = len(tokenizer) + 5
    assert tokenizer.decode(record["completion_ids"], skip_special_tokens=True) == "3"
    assert "outside the vocabulary" in completion_ids_problem(tokenizer, record)


def test_ids_of_another_text_are_refused_as_the_reference_stage_would(tokenizer):
    from iwsft.encoding.sequences import misdecoded
    from iwsft.errors import DataError

    record = {**sampled(tokenizer, "4"), "completion": "3"}
    assert completion_ids_problem(tokenizer, record).startswith("decodes to '4' with the tokenizer of model.base, "
                                                                "not to field 'completion' ('3')")
    with pytest.raises(DataError):  # the same comparison, made later by the reference stage
        misdecoded(tokenizer, [record], "train.jsonl")


def raw_file(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_the_raw_gate_names_file_line_id_and_field(tokenizer, tmp_path):
    good = sampled(tokenizer, "3")
    bad = {**sampled(tokenizer, "4"), "id": "r2", "completion_ids": [len(tokenizer)]}
    path = raw_file(tmp_path / "ids.jsonl", [good, bad])
    gate = raw_input(path, raw_settings_default(), tokenizer=tokenizer)
    assert not gate.checks[0].success
    expected = f"{path} line 2 (id 'r2'): field 'completion_ids' holds token id {len(tokenizer)} (position 0)"
    assert expected in gate.checks[0].description
    lenient = raw_input(path, {**raw_settings_default(), "max_invalid_fraction": 0.5}, tokenizer=tokenizer)
    assert [r["id"] for r in lenient.payload.records] == ["r1"] and lenient.payload.rejected[0].line == 2
    assert lenient.checks[1].description == "checked against the tokenizer of model.base"


def test_without_a_tokenizer_the_gate_says_the_ids_were_not_checked(tmp_path):
    path = raw_file(tmp_path / "ids.jsonl", [{"prompt": "a", "completion": "b", "completion_ids": [10**6]}])
    gate = raw_input(path, raw_settings_default())
    assert gate.checks[0].success and gate.checks[1].description.startswith("not checked against a tokenizer (1 records")


def raw_settings_default() -> dict:
    from iwsft.config.schema import Gates

    return raw_settings(Gates())


def test_validate_raw_checks_ids_against_the_params_model(char_dir, tmp_path, monkeypatch, capsys):
    from iwsft.cli.main import main

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"]["base"] = str(char_dir)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    path = raw_file(tmp_path / "ids.jsonl", [{"id": "x", "prompt": "a", "completion": "hi", "completion_ids": [21, 22, 999]}])
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "raw", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path} line 1 (id 'x'): field 'completion_ids' holds token id 999 (position 2), outside the vocabulary of " \
           f"model.base ({char_dir})" in err and "Traceback" not in err
