"""The completion-only LM head (iwsft.training.completion_head) gives today's full-logits numbers: log-probs,
the iw-SFT loss, its gradients and the reference column, to 1e-5 in fp32."""

import copy

import pytest
import torch

from iwsft.training import completion_head, kernels, objectives
from iwsft.config.schema import Peft
from iwsft.model.adapters import with_lora
from iwsft.training.completion_head import completion_logprobs, head_parts
from iwsft.training.reference import score_reference
from iwsft.model.tiny_lm import build_char_tokenizer, build_tiny_llama
from iwsft.training.trainer import IwSftConfig
from support import flat_parameters, make_trainer, tiny_model, toy_dataset

VOCAB = 61


def batch(seed: int = 0):
    """Three rows, right-padded: a long completion, a short one with padding, and an empty completion."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (3, 12), generator=generator)
    attention = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :5] = -100  # the prompt
    ids[1, 9:], attention[1, 9:], labels[1, 9:] = 0, 0, -100  # padding
    labels[2] = -100  # no completion token at all
    return ids, attention, labels


def model(tied: bool, seed: int = 0):
    built = build_tiny_llama(VOCAB, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, seed=seed)
    if not tied:
        built.config.tie_word_embeddings = False
        built.lm_head.weight = torch.nn.Parameter(built.lm_head.weight.detach().clone() * 1.5)
    return built


def loss_and_grads(net, enabled: bool, ref_logp=None, chunk_size: int = 4):
    ids, attention, labels = batch()
    net.zero_grad(set_to_none=True)
    logp, mask = completion_logprobs(net, ids, attention, labels, chunk_size=chunk_size, enabled=enabled)
    ref = logp.detach() - 0.3 * mask if ref_logp is None else ref_logp
    loss = objectives.iw_sft_loss(logp, ref * mask, mask, num_items=mask.sum())
    loss.backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    return logp.detach(), mask, float(loss.detach()), grads


def assert_same(full, head):
    (logp_a, mask_a, loss_a, grads_a), (logp_b, mask_b, loss_b, grads_b) = full, head
    assert torch.equal(mask_a, mask_b)
    torch.testing.assert_close(logp_b, logp_a, atol=1e-5, rtol=0)
    assert (logp_b[mask_b == 0] == 0).all()
    assert loss_b == pytest.approx(loss_a, abs=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], atol=1e-5, rtol=1e-5, msg=name)


def test_fused_head_matches_logits_then_log_softmax():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 16, generator=generator, requires_grad=True)
    weight = torch.randn(VOCAB, 16, generator=generator, requires_grad=True)
    bias = torch.randn(VOCAB, generator=generator, requires_grad=True)
    targets = torch.randint(0, VOCAB, (7,), generator=generator)
    upstream = torch.randn(7, generator=generator)
    expected = torch.log_softmax(torch.nn.functional.linear(hidden, weight, bias), -1).gather(-1, targets[:, None])[:, 0]
    grads_expected = torch.autograd.grad((expected * upstream).sum(), (hidden, weight, bias))
    for chunk in (1, 3, 7, 100):
        got = kernels.linear_token_logprobs(hidden, weight, targets, bias=bias, chunk_size=chunk)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        for g, e in zip(torch.autograd.grad((got * upstream).sum(), (hidden, weight, bias)), grads_expected):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tied", [True, False])
def test_loss_and_gradients_equal_the_full_logits_path(tied):
    net = model(tied)
    assert (net.lm_head.weight is net.model.embed_tokens.weight) == tied
    assert head_parts(net)[0] is not None
    assert_same(loss_and_grads(net, enabled=False), loss_and_grads(net, enabled=True))


def test_lora_policy_and_its_adapters_off_reference():
    net = with_lora(model(tied=True), Peft(r=4, alpha=8.0, dropout=0.0, target_modules=None))
    with torch.no_grad():  # B = 0 at the start: move it so that the adapters matter
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    assert head_parts(net)[0] is not None
    ids, attention, labels = batch()
    with torch.no_grad(), net.disable_adapter():
        ref_full, _ = completion_logprobs(net, ids, attention, labels, enabled=False)
        ref_head, _ = completion_logprobs(net, ids, attention, labels, enabled=True)
    torch.testing.assert_close(ref_head, ref_full, atol=1e-5, rtol=0)
    full, head = loss_and_grads(net, False, ref_full), loss_and_grads(net, True, ref_head)
    assert_same(full, head)
    assert all("lora_" in name for name in head[3])  # only the adapters get gradients


def test_architectures_it_cannot_be_exact_for_fall_back_to_the_full_logits():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=2, head_dim=16, final_logit_softcapping=3.0)
    torch.manual_seed(0)
    gemma2 = Gemma2ForCausalLM(config)
    parts, reason = head_parts(gemma2)
    assert parts is None and "Gemma2ForCausalLM" in reason  # soft-capped logits: not the plain head
    assert_same(loss_and_grads(gemma2, False), loss_and_grads(gemma2, True))
    adapted_head = with_lora(model(tied=False), Peft(r=4, alpha=8.0, dropout=0.0, target_modules=["lm_head"]))
    parts, reason = head_parts(adapted_head)
    assert parts is None and "not a plain Linear" in reason


def test_head_follows_the_autocast_of_the_models_forward():
    """accelerate runs a prepared model's forward under autocast; the head outside it must match."""
    net = model(tied=True)
    net.forward = torch.autocast("cpu", dtype=torch.bfloat16)(net.forward)  # what accelerate.prepare does
    ids, attention, labels = batch()
    with torch.no_grad():
        logits = net(input_ids=ids, attention_mask=attention).logits
        full = kernels.token_logprobs(logits, labels)[0]
        head, _ = completion_logprobs(net, ids, attention, labels, head_autocast=torch.autocast("cpu", dtype=torch.bfloat16))
        fp32_head, _ = completion_logprobs(net, ids, attention, labels)
    assert logits.dtype == torch.bfloat16 and full.dtype == head.dtype == torch.float32
    torch.testing.assert_close(head, full, atol=1e-6, rtol=0)  # the same bf16 matmul
    assert not torch.allclose(fp32_head, full, atol=1e-4)  # (an fp32 head would not be the same numbers)


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def test_reference_column_is_unchanged(tokenizer):
    data = toy_dataset(tokenizer, n=8, reference_seed=None)
    net = tiny_model(3, tokenizer)
    full = score_reference(net, data, tokenizer.pad_token_id, batch_size=3, show_progress=False, completion_head=False)
    head = score_reference(net, data, tokenizer.pad_token_id, batch_size=3, show_progress=False)
    assert [len(row) for row in head] == [len(row) for row in full]
    for a, b in zip(full, head):
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), atol=1e-5, rtol=0)


@pytest.mark.parametrize("config", [
    dict(method="iwsft"),
    dict(method="iwsft", reference_source="online", q_mode="ema", ema_decay=0.5),
    dict(method="sft"),
])
def test_trainer_steps_are_unchanged(tokenizer, tmp_path, config):
    data = toy_dataset(tokenizer, n=4)
    results = []
    for enabled in (False, True):
        net = tiny_model(0, tokenizer)
        trainer = make_trainer(net, data, tokenizer, tmp_path / str(enabled), 2, 2, steps=2,
                               iw_config=IwSftConfig(**config, completion_head=enabled))
        loss = trainer.train().training_loss
        results.append((flat_parameters(net), loss, trainer.state.log_history[0]))
    (params_a, loss_a, log_a), (params_b, loss_b, log_b) = results
    assert loss_b == pytest.approx(loss_a, abs=1e-5)
    torch.testing.assert_close(params_b, params_a, atol=1e-5, rtol=0)
    for key in ("weight_mean", "sft_equivalent_loss", "mean_log_ratio"):
        if key in log_a:
            assert log_b[key] == pytest.approx(log_a[key], abs=1e-5), key


def test_lora_trainer_with_online_reference_is_unchanged(tokenizer, tmp_path):
    data = toy_dataset(tokenizer, n=4)
    results = []
    for enabled in (False, True):
        net = with_lora(copy.deepcopy(tiny_model(0, tokenizer)), Peft(r=4, alpha=8.0, dropout=0.0, target_modules=None))
        trainer = make_trainer(net, data.remove_columns("ref_logprobs"), tokenizer, tmp_path / str(enabled), 2, 1, steps=3,
                               iw_config=IwSftConfig(method="iwsft", reference_source="online", completion_head=enabled))
        results.append((flat_parameters(net), trainer.train().training_loss))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=0)
    assert results[1][1] == pytest.approx(results[0][1], abs=1e-5)


def shared_prefix_batch(rows: int = 4, prefix: int = 8, seed: int = 1):
    """Right-padded rows that start with the same `prefix` tokens (a chat template's system prompt)."""
    generator = torch.Generator().manual_seed(seed)
    common = torch.randint(4, VOCAB, (1, prefix), generator=generator).expand(rows, -1)
    ids = torch.cat([common, torch.randint(4, VOCAB, (rows, 7), generator=generator)], dim=1)
    attention, labels = torch.ones_like(ids), ids.clone()
    labels[:, : prefix + 2] = -100  # the prompt: the prefix and two tokens of each row's own
    ids[1, 12:], attention[1, 12:], labels[1, 12:] = 0, 0, -100  # padding
    return ids, attention, labels


@pytest.mark.parametrize("lora", [False, True])
def test_a_shared_prefix_forwarded_once_gives_the_same_loss_and_gradients(lora):
    """With a common prefix the batch's rows continue from one forward of it: log-probs, loss and every
    gradient (summed through the KV cache into the one prefix forward) equal one forward of the whole rows."""
    ids, attention, labels = shared_prefix_batch()
    net = model(tied=True)
    if lora:
        net = with_lora(net, Peft(enabled=True, r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    assert completion_head.shared_prefix(net, ids, attention) == 8
    results = {}
    for shared in (True, False):
        fraction = completion_head.SHARED_FRACTION
        completion_head.SHARED_FRACTION = 0.1 if shared else float("inf")  # inf: never share
        try:
            net.zero_grad(set_to_none=True)
            logp, mask = completion_logprobs(net, ids, attention, labels, chunk_size=4)
            loss = objectives.weighted_nll(logp, mask, torch.ones(len(ids)), mask.sum(), "token")
            loss.backward()
        finally:
            completion_head.SHARED_FRACTION = fraction
        results[shared] = logp.detach(), float(loss.detach()), {n: p.grad.clone() for n, p in net.named_parameters()
                                                       if p.grad is not None}
    (logp, loss, grads), (logp_whole, loss_whole, grads_whole) = results[True], results[False]
    torch.testing.assert_close(logp, logp_whole, atol=1e-5, rtol=1e-5)
    assert loss == pytest.approx(loss_whole, abs=1e-6)
    assert grads.keys() == grads_whole.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], grads_whole[name], atol=1e-5, rtol=1e-4, msg=name)


def test_no_shared_prefix_for_short_prefixes_left_padding_or_one_row():
    net = model(tied=True)
    ids, attention, labels = shared_prefix_batch(rows=64, prefix=2)
    assert completion_head.shared_prefix(net, ids, attention) == 0  # saves a tenth, but two tokens are too few
    long_rows = torch.cat([torch.full((2, 8), 5), torch.tensor([[6] * 92, [7] * 92])], dim=1)
    assert completion_head.shared_prefix(net, long_rows, torch.ones_like(long_rows)) == 0  # 8 of 2 x 100: 4 % saved
    ids, attention, _ = shared_prefix_batch()
    assert completion_head.shared_prefix(net, ids[:1], attention[:1]) == 0
    left = attention.clone()
    left[2, 0] = 0
    assert completion_head.shared_prefix(net, ids, left) == 0
    same = ids[:1].expand(3, -1)  # identical rows still keep a token of their own
    assert completion_head.shared_prefix(net, same, torch.ones_like(same)) == same.shape[1] - 1
