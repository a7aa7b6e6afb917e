"""grouped_query_sdpa (iwsft.model.grouped_attention): with a padding mask, SDPA on the key/value heads as they
are gives bitwise the logits of transformers' copied heads, on a tiny grouped-query Llama and on SmolLM2;
the variable is set only inside the block, only on the CPU for a grouped model, and never over the user's."""

import os
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from iwsft.model.grouped_attention import FORCE_GQA, grouped_query_sdpa
from iwsft.model.tiny_lm import build_tiny_llama

SMOLLM2 = Path(__file__).resolve().parents[3] / "data" / "models" / "smollm2-135m-instruct"


def grouped_llama():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def padded_batch(vocab: int):
    ids = torch.randint(3, vocab, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding: transformers passes a mask to SDPA
    mask[2, :1] = 0
    return ids, mask


def logits(model, ids, mask):
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("real", [False, True])
def test_the_same_logits_bitwise(real):
    if real:
        if not (SMOLLM2 / "iwsft_import.json").is_file():
            pytest.skip("SmolLM2 not imported (make smollm2)")
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(SMOLLM2, dtype=torch.float32).eval()
    else:
        model = grouped_llama()
    ids, mask = padded_batch(model.config.vocab_size)
    copied = logits(model, ids, mask)
    with grouped_query_sdpa(model):
        assert os.environ[FORCE_GQA] == "1"
        grouped = logits(model, ids, mask)
    assert FORCE_GQA not in os.environ
    assert torch.equal(copied, grouped)


def test_left_alone_for_ungrouped_models_and_a_users_setting(monkeypatch):
    monkeypatch.delenv(FORCE_GQA, raising=False)
    with grouped_query_sdpa(build_tiny_llama(20)):  # as many key/value heads as query heads
        assert FORCE_GQA not in os.environ
    monkeypatch.setenv(FORCE_GQA, "0")
    with grouped_query_sdpa(grouped_llama()):
        assert os.environ[FORCE_GQA] == "0"
    assert os.environ[FORCE_GQA] == "0"
