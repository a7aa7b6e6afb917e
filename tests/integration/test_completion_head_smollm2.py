"""The completion-only LM head on a real BPE chat model (SmolLM2-135M-Instruct, vocabulary 49,152):
the same log-probs and gradients as the full logits on chat-formatted examples.

Needs the imported model (`make smollm2`, which `make test` runs first); skips with a hint without it."""

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration

IMPORTED = Path(__file__).resolve().parents[2] / "data/models/smollm2-135m-instruct"  # the Makefile's SMOLLM2
RECORD = "iwsft_import.json"  # iwsft.model.gguf.RECORD: only a finished import has it

RECORDS = [
    {"prompt": [{"role": "user", "content": "What is 17 + 25? Reply with just the number."}],
     "completion": [{"role": "assistant", "content": "42"}]},
    {"prompt": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a primary colour."}],
     "completion": [{"role": "assistant", "content": "Blue, like the sky on a clear day."}]},
]


@pytest.fixture(scope="module")
def smollm2():
    if not (IMPORTED / RECORD).is_file():
        pytest.skip(f"{IMPORTED} is missing: run `make smollm2`")
    from iwsft.model.artifacts import load_model

    model, tokenizer = load_model(IMPORTED)
    return model.float(), tokenizer


def test_same_logprobs_and_gradients_as_the_full_logits(smollm2):
    from datasets import Dataset

    from iwsft.training import objectives
    from iwsft.encoding.chat import ChatFormat
    from iwsft.training.completion_head import completion_logprobs, head_parts
    from iwsft.encoding.sequences import CompletionCollator, tokenize_dataset

    model, tokenizer = smollm2
    assert head_parts(model)[0] is not None and model.config.vocab_size == 49152
    chat = ChatFormat.from_setting("auto", tokenizer)
    rows = tokenize_dataset(Dataset.from_list(RECORDS), tokenizer, chat=chat)
    batch = CompletionCollator(tokenizer.pad_token_id)([rows[i] for i in range(len(rows))])
    def fp64_logprobs(model, input_ids, attention_mask, labels, enabled):  # the same maths in fp64 throughout
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
        mask = labels[:, 1:] != -100
        logp = torch.log_softmax(logits, -1).gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0]
        return logp * mask, mask.double()

    results = []
    for precision, enabled in ((torch.float64, False), (torch.float32, False), (torch.float32, True)):
        model.to(precision).zero_grad(set_to_none=True)
        score = fp64_logprobs if precision == torch.float64 else completion_logprobs
        logp, mask = score(model, batch["input_ids"], batch["attention_mask"], batch["labels"], enabled=enabled)
        loss = objectives.iw_sft_loss(logp, logp.detach() - 0.1 * mask, mask)
        loss.backward()
        results.append((logp.detach(), mask, float(loss.detach()), model.get_output_embeddings().weight.grad.double()))
    model.float()
    (_, _, _, grad_exact), (logp_a, mask_a, loss_a, grad_a), (logp_b, mask_b, loss_b, grad_b) = results
    assert torch.equal(mask_a, mask_b) and 2 <= mask_a.sum(1).min()
    # |logits| reach ~40 here, where an fp32 ulp is 3.8e-6: a GEMM over the completion rows only rounds a
    # few of them differently from one over every row (measured: 1.9e-5 on a log-prob of -6.1, i.e. 3e-6
    # relative). The full path itself moves as much with batching (a row alone vs in a batch of 2: 1.1e-5).
    torch.testing.assert_close(logp_b, logp_a, atol=1e-5, rtol=1e-5)
    assert loss_b == pytest.approx(loss_a, abs=1e-5)
    # The tied embedding / head's gradient (28M values, each summed over the rows in another order): the
    # two fp32 paths differ by as much as each differs from the same maths in fp64, and no more.
    error_full, error_head = (float((g - grad_exact).norm() / grad_exact.norm()) for g in (grad_a, grad_b))
    between = float((grad_b - grad_a).norm() / grad_a.norm())
    print(f"log-probs max |diff| {float((logp_b - logp_a).abs().max()):.2e}; head gradient, relative norm: "
          f"head vs full {between:.2e}, full vs fp64 {error_full:.2e}, head vs fp64 {error_head:.2e}")
    assert between < 1e-4 and error_head < 1.5 * error_full


def test_the_shared_system_prompt_forwarded_once_gives_the_same_gradients(smollm2):
    """Chat rows all start with SmolLM2's default system prompt: training forwards it once per batch and
    every row continues from its KV cache (completion_head.shared_prefix); log-probs, loss and the
    gradients equal one forward of the whole rows to float rounding."""
    from datasets import Dataset

    from iwsft.encoding.chat import ChatFormat
    from iwsft.encoding.sequences import CompletionCollator, tokenize_dataset
    from iwsft.training import completion_head, objectives

    model, tokenizer = smollm2
    chat = ChatFormat.from_setting("auto", tokenizer)
    questions = [("Calculate 5 - 3.", "2"), ("What is 17 + 25? Reply with just the number.", "42"),
                 ("Name a primary colour.", "Blue, like the sky on a clear day.")]
    rows = tokenize_dataset(Dataset.from_list([{"prompt": q, "completion": a} for q, a in questions]), tokenizer, chat=chat)
    batch = CompletionCollator(tokenizer.pad_token_id)([rows[i] for i in range(len(rows))])
    shared = completion_head.shared_prefix(model, batch["input_ids"], batch["attention_mask"])
    assert shared >= 20  # the system prompt and the user turn's opening
    results = []
    for fraction in (completion_head.SHARED_FRACTION, float("inf")):  # inf: never shared
        saved, completion_head.SHARED_FRACTION = completion_head.SHARED_FRACTION, fraction
        try:
            model.zero_grad(set_to_none=True)
            logp, mask = completion_head.completion_logprobs(model, batch["input_ids"], batch["attention_mask"],
                                                             batch["labels"])
            loss = objectives.iw_sft_loss(logp, logp.detach() - 0.1 * mask, mask)
            loss.backward()
        finally:
            completion_head.SHARED_FRACTION = saved
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((logp.detach(), float(loss.detach()), grads))
    (logp_a, loss_a, grad_a), (logp_b, loss_b, grad_b) = results
    torch.testing.assert_close(logp_a, logp_b, atol=1e-4, rtol=1e-5)
    assert loss_a == pytest.approx(loss_b, abs=1e-5)
    relative = float((grad_a - grad_b).norm() / grad_b.norm())
    print(f"shared prefix {shared} tokens: log-probs max |diff| {float((logp_a - logp_b).abs().max()):.2e}, "
          f"gradient relative norm {relative:.2e}")
    assert relative < 1e-4
    model.zero_grad(set_to_none=True)
