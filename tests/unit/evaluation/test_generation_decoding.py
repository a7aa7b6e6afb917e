"""The decode loop (iwsft.evaluation.decoding, kv_cache, sampling): greedy output token-identical to
`model.generate`'s, on the tiny model and on SmolLM2 with its chat template; a prompt's samples
independent of its batch and list position; the sampler exact; finished rows leave the batch."""

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GenerationConfig

from iwsft.encoding.chat import ChatFormat
from iwsft.evaluation.decoding import batches
from iwsft.evaluation.kv_cache import shared_prefix_length
from iwsft.evaluation.generation import sample_completions, sample_with_greedy, stop_token_ids
from iwsft.evaluation.sampling import draw_tokens, inverse_cdf
from iwsft.model.tiny_lm import build_char_tokenizer, build_tiny_llama

SMOLLM2 = Path(__file__).resolve().parents[3] / "data" / "models" / "smollm2-135m-instruct"
PROMPTS = ["12+7=", "a", "The quick brown fox ", "3*4=", "hello world", "zz"]


@pytest.fixture()
def tiny():  # per test: tests set its eos_token_id
    tokenizer = build_char_tokenizer()
    return build_tiny_llama(len(tokenizer), max_positions=128, seed=3).eval(), tokenizer


def generate_greedy(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int, stops: list[int]):
    """What the project did before issue 30: left-padded `model.generate`, greedy, with only a neutral config."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    longest = max(len(p) for p in prompt_ids)
    input_ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompt_ids])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompt_ids])
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad,
                              num_beams=1, repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0)
    saved, model.generation_config = model.generation_config, config
    try:
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config)
    finally:
        model.generation_config = saved
    rows = out[:, longest:].tolist()
    return [row[: next((i + 1 for i, t in enumerate(row) if t in stops), len(row))] for row in rows]


def with_stop(completion) -> list[int]:
    return completion.token_ids + ([completion.stop_token_id] if completion.finished else [])


def test_greedy_is_token_identical_to_generate_on_the_tiny_model(tiny):
    model, tokenizer = tiny
    free = generate_greedy(model, tokenizer, [tokenizer(p)["input_ids"] for p in PROMPTS], 12, [tokenizer.eos_token_id])
    # a stop token that ends some greedy completions early and not others
    model.generation_config.eos_token_id = next(t for t in free[0][2:] if any(t not in row for row in free[1:]))
    stops = stop_token_ids(model, tokenizer)
    expected = generate_greedy(model, tokenizer, [tokenizer(p)["input_ids"] for p in PROMPTS], 12, stops)
    for batch_size in (1, 4, 64):
        ours = sample_completions(model, tokenizer, PROMPTS, greedy=True, max_new_tokens=12, batch_size=batch_size,
                                  show_progress=False)
        assert [with_stop(c[0]) for c in ours] == expected
    assert any(row[-1] in stops for row in expected) and any(len(row) == 12 for row in expected)


@pytest.mark.skipif(not (SMOLLM2 / "iwsft_import.json").is_file(), reason="SmolLM2 not imported: run `make smollm2`")
def test_greedy_is_token_identical_to_generate_on_smollm2_with_its_chat_template():
    from iwsft.model.artifacts import load_tokenizer
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(SMOLLM2)
    model = AutoModelForCausalLM.from_pretrained(SMOLLM2, dtype=torch.float32).eval()
    chat = ChatFormat.from_setting("auto", tokenizer)
    prompts = ["What is 2+3?", "Name a colour.", "Write the word cat backwards, please."]
    stops = stop_token_ids(model, tokenizer) + [chat.end_of_turn_id]
    expected = generate_greedy(model, tokenizer, [chat.prompt_ids(p) for p in prompts], 16, stops)
    samples, greedy = sample_with_greedy(model, tokenizer, prompts, num_samples=2, max_new_tokens=16, seed=5,
                                         show_progress=False, chat=chat)
    assert [with_stop(g) for g in greedy] == expected
    assert shared_prefix_length([chat.prompt_ids(p) for p in prompts]) > 20  # the system prompt is shared
    assert any(g.finished for g in greedy)  # some ended on <|im_end|>
    alone = sample_completions(model, tokenizer, prompts[1:2], num_samples=2, max_new_tokens=16, seed=5,
                               prompt_indices=[1], show_progress=False, chat=chat)
    assert alone[0] == samples[1]


def test_a_prompts_samples_depend_on_its_index_not_its_batch(tiny):
    model, tokenizer = tiny
    kwargs = dict(num_samples=3, max_new_tokens=6, seed=11, show_progress=False)
    whole = sample_completions(model, tokenizer, PROMPTS, batch_size=64, **kwargs)
    assert sample_completions(model, tokenizer, PROMPTS, batch_size=3, **kwargs) == whole
    assert sample_completions(model, tokenizer, PROMPTS, max_batch_tokens=40, **kwargs) == whole
    # a shard of the list, told its prompts' places in the whole list, draws the same samples
    assert sample_completions(model, tokenizer, PROMPTS[3:], prompt_indices=[3, 4, 5], **kwargs) == whole[3:]
    moved = sample_completions(model, tokenizer, PROMPTS[3:], **kwargs)
    assert moved != whole[3:]  # index 0 is another stream than index 3
    assert sample_completions(model, tokenizer, PROMPTS, **{**kwargs, "seed": 12}) != whole
    samples, greedy = sample_with_greedy(model, tokenizer, PROMPTS, batch_size=5, **kwargs)
    assert samples == whole
    assert [[g] for g in greedy] == sample_completions(model, tokenizer, PROMPTS, greedy=True, max_new_tokens=6,
                                                       show_progress=False)


def test_finished_rows_leave_the_batch(tiny):
    model, tokenizer = tiny
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("e")
    rows_seen = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: rows_seen.append(kwargs["input_ids"].shape),
                                           with_kwargs=True)
    try:
        drawn = sample_completions(model, tokenizer, ["ab"], num_samples=64, max_new_tokens=40, temperature=3.0,
                                   show_progress=False)
    finally:
        hook.remove()
    # <bos> a pre-filled once, then b once (one row for its 64 samples), then the 64 rows step by step
    assert rows_seen[:2] == [(1, 2), (1, 1)]
    steps = [shape[0] for shape in rows_seen[2:]]
    finished = sum(c.finished for c in drawn[0])
    assert steps[0] == 64 and finished > 8 and min(steps) <= 64 - finished // 2
    assert steps == sorted(steps, reverse=True)


def test_the_sampler_is_an_exact_draw_and_never_picks_a_token_of_weight_zero():
    logits = torch.tensor([[2.0, 0.5, -1.0, float("-inf"), 1.0, -30.0, 0.0, float("-inf")]])
    for temperature in (1.0, 0.5):
        n = 60_000
        uniforms = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        drawn = draw_tokens(logits.expand(n, -1), uniforms, temperature)
        counts = np.bincount(drawn.numpy(), minlength=8)
        pi = torch.softmax(logits[0].double() / temperature, -1).numpy()
        assert counts[3] == counts[7] == 0
        big = pi * n >= 5
        chi2 = float((((counts - pi * n) ** 2)[big] / (pi * n)[big]).sum())
        assert chi2 < 25  # ~4 degrees of freedom: p < 1e-4 beyond 25; measured ~3
    edges = torch.tensor([0.0, 1.0 - 2**-53, 0.5], dtype=torch.float64)
    last = torch.tensor([[0.0, 1.0, float("-inf")]]).expand(3, -1)
    assert draw_tokens(last, edges, 1.0).tolist() == [0, 1, 1]  # u -> 1 gives the last token of weight > 0
    greedy = torch.tensor([True, False, True])
    assert draw_tokens(last, edges, 1.0, greedy).tolist() == [1, 1, 1]


@pytest.mark.parametrize("size", [1000, 512, 7])
def test_the_two_level_inverse_cdf_picks_what_one_fp64_cumulative_sum_picks(size):
    generator = torch.Generator().manual_seed(size)
    weights = torch.exp(3 * torch.randn(64, size, generator=generator))
    weights[:, ::5] = 0.0  # tokens of weight 0 in every block
    for _ in range(50):
        uniforms = torch.rand(64, dtype=torch.float64, generator=generator)
        cumulative = torch.cumsum(weights.double(), -1)
        plain = torch.searchsorted(cumulative, (uniforms * cumulative[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
        assert torch.equal(inverse_cdf(weights, uniforms), plain)
    assert inverse_cdf(weights, torch.zeros(64, dtype=torch.float64)).tolist() == [1] * 64  # the first of weight > 0


def test_batches_hold_whole_prompts_within_both_limits():
    lengths = [5, 30, 10, 10, 8]
    assert batches(lengths, 2, 10, batch_size=4, max_batch_tokens=None) == [[0, 4], [2, 3], [1]]
    # 2 rows x (10 + 10) = 40 fits 60; a second prompt would make 4 x 20 = 80
    assert batches(lengths, 2, 10, batch_size=100, max_batch_tokens=60) == [[0], [4], [2], [3], [1]]
    assert batches([50], 5, 10, batch_size=2, max_batch_tokens=10) == [[0]]  # never an empty batch
    assert shared_prefix_length([[1, 2, 3], [1, 2, 4, 5], [1, 2]]) == 1  # each prompt keeps a token
    assert shared_prefix_length([[1, 2, 3], [7, 2, 3]]) == 0
