"""The LM head in vocabulary blocks (iwsft.model.output_head): bitwise F.linear's logits, only where it
applies, and the model's own head again afterwards."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from iwsft.model.output_head import VOCAB_BLOCK, blocked_linear, vocabulary_blocks


@pytest.mark.parametrize("rows", [1, 7, 64, 320])
@pytest.mark.parametrize("vocab", [VOCAB_BLOCK * 3, VOCAB_BLOCK * 2 + 5, VOCAB_BLOCK * 2 + 77, 49152, 50257])
def test_blocked_linear_is_bitwise_f_linear(rows, vocab):
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(vocab, 96, generator=generator)  # a remainder of 5 columns alone was not bitwise
    hidden = torch.randn(rows, 1, 96, generator=generator)[:, :, :]  # [rows, 1, hidden], as logits_to_keep=1 gives
    assert torch.equal(blocked_linear(hidden, weight), torch.nn.functional.linear(hidden, weight))


def tiny(vocab: int, tie: bool = True) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie)
    return LlamaForCausalLM(config).eval()


def test_the_model_gives_the_same_logits_inside_and_is_restored_after():
    model = tiny(VOCAB_BLOCK * 2 + 5)
    ids = torch.randint(0, model.config.vocab_size, (3, 9))
    with torch.inference_mode():
        plain = model(input_ids=ids).logits
        with vocabulary_blocks(model):
            assert "forward" in vars(model.lm_head)
            blocked = model(input_ids=ids).logits
    assert torch.equal(plain, blocked)
    assert "forward" not in vars(model.lm_head)


def test_with_autograd_the_head_is_f_linear_and_gradients_flow():
    model = tiny(VOCAB_BLOCK * 2)
    ids = torch.randint(0, model.config.vocab_size, (2, 5))
    with vocabulary_blocks(model):
        model(input_ids=ids).logits.sum().backward()
    assert model.lm_head.weight.grad is not None


def test_small_vocabularies_and_other_heads_keep_their_own():
    small = tiny(VOCAB_BLOCK)  # one block: nothing to gain
    with vocabulary_blocks(small):
        assert "forward" not in vars(small.lm_head)
    biased = tiny(VOCAB_BLOCK * 2, tie=False)
    biased.lm_head = torch.nn.Linear(32, VOCAB_BLOCK * 2, bias=True)
    with vocabulary_blocks(biased):
        assert "forward" not in vars(biased.lm_head)
