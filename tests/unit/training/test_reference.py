"""Reference scoring and its fingerprint: refuse a column from other data, weights or tokenizer."""

import pytest
import torch
from datasets import Dataset

from iwsft.training.reference import ReferenceMismatchError, check_reference, fingerprint, score_reference, sequence_logprobs
from iwsft.encoding.sequences import completion_token_count, tokenize_dataset
from iwsft.model.tiny_lm import build_char_tokenizer
from support import PAIRS, tiny_model


@pytest.fixture(scope="module")
def setup():
    tokenizer = build_char_tokenizer()
    data = tokenize_dataset(Dataset.from_dict({"prompt": [p for p, _ in PAIRS], "completion": [c for _, c in PAIRS]}), tokenizer)
    return tokenizer, data, tiny_model(0, tokenizer)


def test_one_logprob_per_completion_token_independent_of_batching(setup):
    tokenizer, data, model = setup
    small = score_reference(model, data, tokenizer.pad_token_id, batch_size=1, show_progress=False)
    large = score_reference(model, data, tokenizer.pad_token_id, batch_size=8, show_progress=False)
    for row, values in zip(data, small):
        assert len(values) == completion_token_count(row["labels"])
        assert all(v <= 0 for v in values)
    assert all(torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5) for a, b in zip(small, large))


def test_sequence_logprob_is_the_sum_of_token_logprobs(setup):
    tokenizer, data, model = setup
    per_token = score_reference(model, data, tokenizer.pad_token_id, show_progress=False)
    totals = sequence_logprobs(model, tokenizer, [p for p, _ in PAIRS], [c for _, c in PAIRS])
    assert totals == pytest.approx([sum(v) for v in per_token], abs=1e-5)


def test_fingerprint_names_what_changed(setup):
    tokenizer, data, model = setup
    stored = fingerprint(data, model, tokenizer)
    check_reference(stored, fingerprint(data, model, tokenizer))  # same inputs: accepted
    with pytest.raises(ReferenceMismatchError, match="other model weights"):
        check_reference(stored, fingerprint(data, tiny_model(1, tokenizer), tokenizer))
    with pytest.raises(ReferenceMismatchError, match="other data"):
        check_reference(stored, fingerprint(data.select(range(3)), model, tokenizer))
    other_tokenizer = build_char_tokenizer()
    other_tokenizer.backend_tokenizer.add_tokens(["<extra>"])
    with pytest.raises(ReferenceMismatchError, match="other tokenizer"):
        check_reference(stored, fingerprint(data, model, other_tokenizer))
