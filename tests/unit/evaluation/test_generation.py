"""Generation draws exactly from pi: whatever the model's generation_config says, with any padding
side or no pad token, stopping on every EOS id, and reporting the sampled tokens as they were."""

import time

import numpy as np
import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from iwsft.evaluation.generation import Completion, generate_completions, sample_completions, stop_token_ids

CHARS = "abcde"
PROMPTS = ["ab", "cdeab"]  # two lengths in one batch: left padding is exercised by the exactness test
SAMPLES = 3000  # per prompt


def small_tokenizer(pad: bool = True, padding_side: str = "left") -> PreTrainedTokenizerFast:
    """A char tokenizer over 'abcde' (8 ids with the specials), so pi over two tokens has few cells."""
    specials = (["<pad>"] if pad else []) + ["<bos>", "<eos>"]
    vocab = {token: index for index, token in enumerate(specials + list(CHARS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A",
                                                           special_tokens=[("<bos>", vocab["<bos>"])])
    extra = {"pad_token": "<pad>"} if pad else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                   padding_side=padding_side, **extra)


def small_llama(tokenizer, seed: int = 0) -> LlamaForCausalLM:
    # initializer_range 0.3 makes pi peaked (entropy ~1.5 of 2.08 nats), so a distortion shows.
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                         initializer_range=0.3, tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()


def distort(model) -> None:
    """The brief's generation_config: each of these changes what `generate` samples."""
    model.generation_config.repetition_penalty = 1.5
    model.generation_config.top_k = 2
    model.generation_config.no_repeat_ngram_size = 1


@pytest.fixture(scope="module")
def tokenizer():
    return small_tokenizer()


@pytest.fixture()
def model(tokenizer):
    return small_llama(tokenizer)


def exact_pi(model, tokenizer, prompt: str, stops: list[int]) -> dict[tuple, float]:
    """pi of the first two tokens from the model's logits; a completion that stops at once is (stop,)."""
    ids = tokenizer(prompt)["input_ids"]
    vocab = model.config.vocab_size
    with torch.no_grad():
        first = torch.softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)
        going_on = [t for t in range(vocab) if t not in stops]
        second = torch.softmax(model(torch.tensor([ids + [t] for t in going_on])).logits[:, -1].double(), -1)
    pi = {(t,): float(first[t]) for t in stops}
    for row, t in enumerate(going_on):
        pi.update({(t, u): float(first[t] * second[row, u]) for u in range(vocab)})
    return pi


def key(completion: Completion) -> tuple:
    return tuple(completion.token_ids + ([completion.stop_token_id] if completion.finished else []))[:2]


def goodness_of_fit(counts: dict[tuple, int], pi: dict[tuple, float]) -> tuple[float, float]:
    """(chi-square p-value, total-variation distance) of the counts against pi. Cells with an
    expected count under 5 are pooled into one, as the chi-square approximation needs."""
    n = sum(counts.values())
    assert set(counts) <= set(pi), f"samples outside pi's support: {set(counts) - set(pi)}"
    cells = sorted(pi, key=pi.get, reverse=True)
    big = [c for c in cells if pi[c] * n >= 5]
    small = [c for c in cells if pi[c] * n < 5]
    observed = [counts.get(c, 0) for c in big] + ([sum(counts.get(c, 0) for c in small)] if small else [])
    expected = [pi[c] * n for c in big] + ([sum(pi[c] for c in small) * n] if small else [])
    observed, expected = np.array(observed, dtype=float), np.array(expected) * n / sum(expected)
    statistic = float(((observed - expected) ** 2 / expected).sum())
    # P(chi2 with len-1 degrees of freedom > statistic), without scipy (not a dependency here)
    p_value = torch.special.gammaincc(torch.tensor((len(observed) - 1) / 2, dtype=torch.float64),
                                      torch.tensor(statistic / 2, dtype=torch.float64)).item()
    tv = 0.5 * sum(abs(counts.get(c, 0) / n - pi[c]) for c in cells)
    return float(p_value), float(tv)


def fit_per_prompt(completions: list[list[Completion]] | list[list[tuple]], model, tokenizer, stops):
    results = []
    for prompt, samples in zip(PROMPTS, completions):
        counts: dict[tuple, int] = {}
        for sample in samples:
            k = key(sample) if isinstance(sample, Completion) else sample
            counts[k] = counts.get(k, 0) + 1
        results.append(goodness_of_fit(counts, exact_pi(model, tokenizer, prompt, stops)))
    return results


def own_config_samples(model, tokenizer, n: int, seed: int = 0) -> list[list[tuple]]:
    """What a plain `model.generate(do_sample=True)` draws: the model's generation_config applies."""
    out = []
    for prompt in PROMPTS:
        torch.manual_seed(seed)
        encoded = tokenizer([prompt] * n, return_tensors="pt")
        tokens = model.generate(**encoded, do_sample=True, max_new_tokens=2)[:, encoded["input_ids"].shape[1]:].tolist()
        out.append([(row[0],) if row[0] == tokenizer.eos_token_id else tuple(row[:2]) for row in tokens])
    return out


def test_samples_follow_pi_although_the_generation_config_distorts_it(model, tokenizer):
    distort(model)
    stops = stop_token_ids(model, tokenizer)
    start = time.perf_counter()
    drawn = sample_completions(model, tokenizer, PROMPTS, num_samples=SAMPLES, max_new_tokens=2, batch_size=1000,
                               seed=0, show_progress=False)
    seconds = time.perf_counter() - start
    exact = fit_per_prompt(drawn, model, tokenizer, stops)
    # The same model and seed through its own config: the test must be able to tell the difference.
    distorted = fit_per_prompt(own_config_samples(model, tokenizer, SAMPLES), model, tokenizer, stops)
    report = f"{SAMPLES} samples/prompt in {seconds:.1f} s, (chi2 p, TV): exact {exact}, own config {distorted}"
    # Measured: p 0.88/0.84, TV 0.035/0.032 (sampling noise at this n); own config p 0, TV 0.82/0.68.
    assert all(p_value > 1e-3 and tv < 0.08 for p_value, tv in exact), report
    assert all(p_value < 1e-12 and tv > 0.15 for p_value, tv in distorted), report


@pytest.mark.parametrize("setting", [{"repetition_penalty": 1.5}, {"top_k": 2}, {"no_repeat_ngram_size": 1}])
def test_each_distortion_alone_is_detected_and_neutralised(model, tokenizer, setting):
    for name, value in setting.items():
        setattr(model.generation_config, name, value)
    stops = stop_token_ids(model, tokenizer)
    drawn = sample_completions(model, tokenizer, PROMPTS, num_samples=SAMPLES, max_new_tokens=2, batch_size=1000,
                               seed=1, show_progress=False)
    assert all(p > 1e-3 for p, _ in fit_per_prompt(drawn, model, tokenizer, stops))
    own = own_config_samples(model, tokenizer, SAMPLES, seed=1)
    assert all(p < 1e-6 for p, _ in fit_per_prompt(own, model, tokenizer, stops))


def test_no_setting_of_the_model_leaks_in_even_those_without_an_off_value(model, tokenizer):
    """Same weights and seed: a clean generation_config and one that sets every distorting field
    (several of which can only be unset, not switched off) draw the same tokens, and the model's
    config is given back unchanged."""
    kwargs = dict(num_samples=20, max_new_tokens=4, seed=3, show_progress=False)
    clean_sampled = sample_completions(model, tokenizer, PROMPTS, **kwargs)
    clean_greedy = sample_completions(model, tokenizer, PROMPTS, greedy=True, max_new_tokens=4, show_progress=False)
    letter = tokenizer.convert_tokens_to_ids("a")
    model.generation_config = GenerationConfig(
        bos_token_id=1, eos_token_id=2, pad_token_id=0, do_sample=True, temperature=0.3, top_k=2, top_p=0.5,
        min_p=0.5, top_h=0.5, typical_p=0.5, epsilon_cutoff=0.1, eta_cutoff=0.1, repetition_penalty=1.5,
        no_repeat_ngram_size=1, min_new_tokens=3, suppress_tokens=[letter], begin_suppress_tokens=[letter + 1],
        bad_words_ids=[[letter + 2]], sequence_bias=[[[letter + 3], -5.0]], forced_eos_token_id=2,
        exponential_decay_length_penalty=(1, 2.0), renormalize_logits=True,
    )
    own = model.generation_config
    assert sample_completions(model, tokenizer, PROMPTS, **kwargs) == clean_sampled
    greedy = sample_completions(model, tokenizer, PROMPTS, greedy=True, max_new_tokens=4, show_progress=False)
    assert greedy == clean_greedy
    assert model.generation_config is own and own.top_k == 2


def test_no_pad_token_and_right_padding_work_and_the_tokenizer_is_left_alone():
    tokenizer = small_tokenizer(pad=False, padding_side="right")
    model = small_llama(tokenizer)
    before = (tokenizer.padding_side, tokenizer.pad_token, len(tokenizer), tokenizer.backend_tokenizer.padding)
    prompts = ["a", "abcde", "cd"]
    greedy = dict(greedy=True, max_new_tokens=5, show_progress=False)
    batched = sample_completions(model, tokenizer, prompts, batch_size=3, **greedy)
    alone = sample_completions(model, tokenizer, prompts, batch_size=1, **greedy)
    assert batched == alone  # padding changes nothing: it was on the left, and masked
    sampled = sample_completions(model, tokenizer, prompts, num_samples=8, max_new_tokens=5, show_progress=False)
    assert [len(s) for s in sampled] == [8, 8, 8]
    assert (tokenizer.padding_side, tokenizer.pad_token, len(tokenizer), tokenizer.backend_tokenizer.padding) == before


def test_stops_on_every_eos_id_of_the_generation_config_and_the_tokenizers(model, tokenizer):
    a, b = tokenizer.convert_tokens_to_ids(["a", "b"])
    model.generation_config.eos_token_id = [a, b]  # not the tokenizer's <eos>: that one counts too
    stops = stop_token_ids(model, tokenizer)
    assert stops == [a, b, tokenizer.eos_token_id]
    drawn = [c for s in sample_completions(model, tokenizer, PROMPTS, num_samples=200, max_new_tokens=4,
                                           show_progress=False) for c in s]
    assert {c.stop_token_id for c in drawn if c.finished} == set(stops)  # each one ended some completion
    assert not any(set(c.token_ids) & set(stops) for c in drawn)  # and none was sampled past
    model.generation_config.eos_token_id = a  # an int is one id
    assert stop_token_ids(model, tokenizer) == [a, tokenizer.eos_token_id]


def test_token_ids_decode_to_the_text_and_finished_says_whether_a_stop_token_came(model, tokenizer):
    max_new_tokens = 3
    drawn = [c for s in sample_completions(model, tokenizer, PROMPTS, num_samples=200, max_new_tokens=max_new_tokens,
                                           show_progress=False) for c in s]
    finished = [c for c in drawn if c.finished]
    cut = [c for c in drawn if not c.finished]
    assert finished and cut  # both kinds occur, or this test shows nothing
    for c in drawn:
        assert tokenizer.decode(c.token_ids, skip_special_tokens=True) == c.text
    assert all(c.stop_token_id == tokenizer.eos_token_id and len(c.token_ids) < max_new_tokens for c in finished)
    assert all(c.stop_token_id is None and len(c.token_ids) == max_new_tokens for c in cut)


def test_generate_completions_is_the_texts_of_sample_completions(model, tokenizer):
    kwargs = dict(num_samples=5, temperature=0.7, max_new_tokens=4, seed=2, batch_size=3, show_progress=False)
    texts = generate_completions(model, tokenizer, PROMPTS, **kwargs)
    assert texts == [[c.text for c in s] for s in sample_completions(model, tokenizer, PROMPTS, **kwargs)]
    with pytest.raises(ValueError, match="temperature"):
        sample_completions(model, tokenizer, PROMPTS, temperature=0.0, show_progress=False)


# With a real BPE chat tokenizer (SmolLM2's): tests/unit/encoding/test_chat.py.
