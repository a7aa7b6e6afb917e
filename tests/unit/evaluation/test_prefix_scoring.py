"""Prefix-shared trajectory scoring (iwsft.evaluation.prefix_scoring) against scoring each sequence whole
(score_reference): the same log-probs to float rounding, on the tiny model and on SmolLM2 with its chat
template, for prompts sharing a prefix, several completions per prompt, completions of 0 and 1 tokens,
any batch size; and the plan that makes the numbers independent of the batch a row lands in."""

import os
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

from iwsft.encoding.sequences import tokenize_dataset
from iwsft.evaluation.prefix_scoring import (length_groups, plan, prefix_scoring_supported, score_trajectories,
                                             split_rows)
from iwsft.model.tiny_lm import build_char_tokenizer, build_tiny_llama
from iwsft.training.reference import score_reference, sequence_logprobs

SMOLLM2 = Path(__file__).resolve().parents[3] / "data" / "models" / "smollm2-135m-instruct"
# a shared prefix ("Q: "), prompts of different lengths, each with several completions of 0-6 tokens
ROWS = [("Q: 12+7=", "19"), ("Q: 12+7=", "1"), ("Q: 12+7=", "190000"), ("Q: 3*4=", "12"),
        ("Q: 3*4=", ""), ("Q: the quick brown fox=", "jumps"), ("Q: a", "b"), ("Q: a", "bb")]


def encoded(tokenizer, rows, chat=None, finished=True):
    data = {"prompt": [p for p, _ in rows], "completion": [c for _, c in rows]}
    if finished is not True:  # unfinished rows: the text's tokens and no stop token
        data.update(completion_ids=[tokenizer(c, add_special_tokens=False)["input_ids"] for _, c in rows],
                    finished=[False] * len(rows))
    return tokenize_dataset(Dataset.from_dict(data), tokenizer, chat=chat)


def whole(model, dataset, pad_id):
    return score_reference(model, dataset, pad_id, batch_size=3, show_progress=False)


def assert_close(ours, expected, tolerance=2e-5):
    assert [len(row) for row in ours] == [len(row) for row in expected]
    for mine, theirs in zip(ours, expected):
        assert mine == pytest.approx(theirs, abs=tolerance)


@pytest.fixture(scope="module")
def tiny():
    tokenizer = build_char_tokenizer()
    return build_tiny_llama(len(tokenizer), max_positions=128, seed=3).eval(), tokenizer


@pytest.mark.parametrize("batch_rows", [1, 3, 64])
@pytest.mark.parametrize("finished", [True, False])
def test_same_log_probs_as_scoring_each_sequence_whole(tiny, batch_rows, finished):
    model, tokenizer = tiny
    dataset = encoded(tokenizer, ROWS, finished=finished)
    assert prefix_scoring_supported(model)
    ours = score_trajectories(model, dataset, batch_rows)
    assert_close(ours, whole(model, dataset, tokenizer.pad_token_id))
    # the empty unfinished completion has no token to score
    assert [len(row) for row in ours][4] == (1 if finished else 0)


def test_a_rows_numbers_do_not_depend_on_its_batch(tiny):
    """Batches are cut from the whole plan: scoring a list in one batch or many gives each row the
    numbers the plan's own batch gives it, the same bits every time (what 2 processes rely on)."""
    model, tokenizer = tiny
    dataset = encoded(tokenizer, ROWS)
    assert score_trajectories(model, dataset, 3) == score_trajectories(model, dataset, 3)
    assert_close(score_trajectories(model, dataset, 1), score_trajectories(model, dataset, 64), tolerance=1e-6)


def test_plan_keeps_a_prompts_rows_together_and_shares_the_prefix(tiny):
    _, tokenizer = tiny
    pairs = split_rows(encoded(tokenizer, ROWS))
    shared, batches = plan(pairs, 3)
    assert shared == len(tokenizer("Q: ")["input_ids"])  # BOS + "Q: "
    assert sorted(i for batch in batches for i in batch) == list(range(len(ROWS)))
    for batch in batches:
        prompts = {pairs[i][0] for i in batch}
        assert all(sum(pairs[j][0] == p for j in batch) == sum(pairs[j][0] == p for j in range(len(ROWS)))
                   for p in prompts)
    assert [len(b) for b in batches if len(b) > 3] == []  # no prompt here has more than 3 rows


def test_sequence_logprobs_equals_the_whole_sequence_sums():
    """sequence_logprobs (sample's and evaluate's trajectory scores) equals the whole-sequence sums, for a
    Llama and for GPT-2 (learned positions, its own attention code)."""
    tokenizer = build_char_tokenizer()
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=64)).eval()
    llama = build_tiny_llama(len(tokenizer), max_positions=128, seed=1).eval()
    for model in (llama, gpt2):
        sums = sequence_logprobs(model, tokenizer, [p for p, _ in ROWS], [c for _, c in ROWS], batch_size=4)
        expected = [sum(v) for v in whole(model, encoded(tokenizer, ROWS), tokenizer.pad_token_id)]
        assert sums == pytest.approx(expected, abs=2e-5)


@pytest.mark.skipif(not (SMOLLM2 / "iwsft_import.json").is_file(), reason="SmolLM2 not imported (make smollm2)")
def test_smollm2_chat_prompts_score_as_whole_sequences():
    """A real BPE tokenizer and ChatML template: the ~30-token system prompt is the shared prefix."""
    from transformers import AutoModelForCausalLM

    from iwsft.encoding.chat import ChatFormat
    from iwsft.model.artifacts import load_tokenizer

    tokenizer = load_tokenizer(SMOLLM2)
    model = AutoModelForCausalLM.from_pretrained(SMOLLM2, dtype=torch.float32).eval()
    chat = ChatFormat.from_setting("auto", tokenizer)
    rows = [("Calculate 5 - 3.", "2"), ("Calculate 5 - 3.", "The answer is 2."), ("Calculate 7 + 1.", "8"),
            ("What is 12 times 12? Reply with just the number.", "144")]
    dataset = encoded(tokenizer, rows, chat=chat)
    shared, _ = plan(split_rows(dataset), 8)
    rendered = [chat.prompt_ids(p) for p, _ in rows]
    assert shared == len(os.path.commonprefix(rendered)) >= 20  # the system prompt and the user turn's opening
    assert_close(score_trajectories(model, dataset, 8), whole(model, dataset, tokenizer.pad_token_id), tolerance=1e-4)


def test_length_groups_bound_the_padding():
    lengths = [0, 31, 3, 30, 5, 0, 31, 4, 1, 12]
    groups = length_groups(lengths, waste=0.125)
    assert sorted(i for g in groups for i in g) == [i for i, n in enumerate(lengths) if n > 0]  # no empty rows
    for group in groups:
        padded = len(group) * max(lengths[i] for i in group)
        assert padded - sum(lengths[i] for i in group) <= 0.125 * padded
    assert [sorted(g) for g in groups if len(g) > 1] == [[2, 7], [1, 3, 6]]  # 3 and 4; 30, 31 and 31
