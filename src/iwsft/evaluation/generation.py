"""Sampling completions from a causal LM: exact samples from pi at temperature T, or greedy.

iw-SFT's weight is q/pi_ref computed on these samples, so they must be draws from pi itself: no
top-k, top-p, min-p, repetition penalty or anything else a model's generation_config may ask for.

How transformers 5 (read in 5.24: generation/utils.py `_prepare_generation_config`,
`_get_logits_processor`) decides what `generate` does, and why this module is built so:
- `generate(generation_config=ours)` fills every field of ours that is None from the model's own
  `generation_config`, then from global defaults (`top_k=50`!). None therefore means "inherit",
  never "off". Off is: top_k=0, top_p=1.0, typical_p=1.0, epsilon/eta_cutoff=0.0,
  repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0, temperature=1.0 (or ours).
- Other distorting fields are off only when None: top_h, min_p (0.0 would be a no-op processor),
  min_new_tokens, bad_words_ids, sequence_bias, suppress_tokens, begin_suppress_tokens,
  forced_bos/eos_token_id, exponential_decay_length_penalty, watermarking_config, stop_strings.
  A model that sets one cannot be overruled by an explicit config, so for the duration of the call
  the model's generation_config is replaced by ours and nothing is inherited from it (not safe if
  another thread generates with the same model object at the same time; no stage does).
- Stop tokens: the model's `eos_token_id` may be an int or a list; we stop on all of them plus the
  tokenizer's EOS.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig


@dataclass(frozen=True)
class Completion:
    """One sampled completion.

    token_ids: the tokens pi produced, up to and excluding the first stop token (nothing of the
      padding that follows it). A special token sampled mid-completion (say <pad>) stays here,
      because it is what pi produced; it does not show in `text`.
    text: `tokenizer.decode(token_ids, skip_special_tokens=True)`, exactly.
    finished: the completion ended with a stop token (False: cut at max_new_tokens).
    stop_token_id: which stop token ended it (None when unfinished), so that scoring can append
      exactly the token pi sampled when a model has several (e.g. <|im_end|> and <|endoftext|>).
    """

    text: str
    token_ids: list[int]
    finished: bool
    stop_token_id: int | None = None


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every EOS id of the model's generation_config (an int or a list) and the tokenizer's EOS,
    in that order, without repeats. Chat models often list their end-of-turn token there only."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    if configured is None:
        configured = []
    elif isinstance(configured, torch.Tensor):
        configured = configured.reshape(-1).tolist()
    elif isinstance(configured, int):
        configured = [configured]
    ids = [int(i) for i in configured]
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return list(dict.fromkeys(ids))


def left_padding_tokenizer(tokenizer, stops: list[int]):
    """A copy of `tokenizer` that left-pads and has a pad token (its EOS when it has none).

    A copy, because training right-pads with the same tokenizer object; deep, because a fast
    tokenizer keeps its padding state in the shared Rust backend.
    """
    padder = copy.deepcopy(tokenizer)
    padder.padding_side = "left"
    if padder.pad_token_id is None:
        if padder.eos_token is not None:
            padder.pad_token = padder.eos_token
        elif stops:
            padder.pad_token = padder.convert_ids_to_tokens(stops[0])
        else:
            raise ValueError("cannot pad a batch: the tokenizer has no pad or EOS token and the model's "
                             "generation_config no eos_token_id")
    return padder


def exact_generation_config(
    max_new_tokens: int, stops: list[int], pad_token_id: int, greedy: bool, temperature: float
) -> GenerationConfig:
    """A complete config whose only effect on the next-token distribution is the temperature."""
    neutral = dict(
        max_new_tokens=max_new_tokens, min_length=0,  # min_new_tokens: None (0 makes transformers warn)
        eos_token_id=stops, pad_token_id=pad_token_id,
        num_beams=1, num_return_sequences=1, use_cache=True,
        repetition_penalty=1.0, encoder_repetition_penalty=1.0,
        no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0,
        renormalize_logits=False, remove_invalid_values=False,
        output_scores=False, return_dict_in_generate=False,
    )
    if greedy:
        return GenerationConfig(do_sample=False, **neutral)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 for sampling (got {temperature}); use greedy=True instead")
    # top_k=0 is "off" (None would inherit, then default to 50); min_p, top_h stay None: with the
    # model's config swapped out nothing fills them in, so no processor is built for them.
    return GenerationConfig(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0, typical_p=1.0,
                            epsilon_cutoff=0.0, eta_cutoff=0.0, **neutral)


@contextmanager
def _only_generation_config(model, config: GenerationConfig):
    """Make `config` the model's generation_config for one call, so `generate` inherits nothing
    from the model's own (see the module docstring); restored even on error."""
    saved = model.generation_config
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = saved


def _completion(new_tokens: list[int], stops: set[int], tokenizer) -> Completion:
    cut = next((i for i, token in enumerate(new_tokens) if token in stops), None)
    ids = new_tokens if cut is None else new_tokens[:cut]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return Completion(text=text, token_ids=list(ids), finished=cut is not None,
                      stop_token_id=None if cut is None else new_tokens[cut])


@torch.inference_mode()
def sample_completions(
    model,
    tokenizer,
    prompts: list[str],
    num_samples: int = 1,
    temperature: float = 1.0,
    max_new_tokens: int = 8,
    seed: int = 0,
    batch_size: int = 256,
    greedy: bool = False,
    show_progress: bool = True,
    chat=None,
) -> list[list[Completion]]:
    """`num_samples` completions per prompt (1 if greedy), in prompt order, as draws from pi at
    `temperature` (or greedy), on whatever device the model is.

    Prompts are sorted by length (less padding) and left-padded in batches; each batch is drawn
    with its own seeded generator state, so results do not depend on what ran before.
    """
    model.eval()
    device = model.device
    stops = stop_token_ids(model, tokenizer)
    templated = chat is not None and chat.is_chat  # iwsft.encoding.chat.ChatFormat: the template's prompt tokens
    if templated and chat.end_of_turn_id not in stops:
        stops.append(chat.end_of_turn_id)
    padder = left_padding_tokenizer(tokenizer, stops)
    config = exact_generation_config(max_new_tokens, stops, padder.pad_token_id, greedy, temperature)
    stop_set = set(stops)
    repeats = 1 if greedy else num_samples
    flat_prompts = [prompt for prompt in prompts for _ in range(repeats)]
    order = sorted(range(len(flat_prompts)), key=lambda i: len(flat_prompts[i]))  # less padding
    results: list[Completion | None] = [None] * len(flat_prompts)
    starts = range(0, len(order), batch_size)
    for batch_number, start in enumerate(tqdm(starts, desc="generate", disable=not show_progress, mininterval=5)):
        indices = order[start : start + batch_size]
        if templated:  # the rendered prompt's tokens, exactly as encode_pair makes them for scoring
            encoded = padder.pad([{"input_ids": chat.prompt_ids(flat_prompts[i])} for i in indices],
                                 return_tensors="pt", padding=True)
        else:
            encoded = padder([flat_prompts[i] for i in indices], return_tensors="pt", padding=True)
        # Only ids and mask: some tokenizers add token_type_ids, which causal LMs reject.
        input_ids = encoded["input_ids"].to(device)
        attention_mask = encoded["attention_mask"].to(device)
        torch.manual_seed(seed * 1_000_003 + batch_number)  # seeds the CPU and every CUDA generator
        with _only_generation_config(model, config):
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
        new_tokens = output[:, input_ids.shape[1] :].tolist()
        for row, index in enumerate(indices):
            results[index] = _completion(new_tokens[row], stop_set, padder)
    return [results[i * repeats : (i + 1) * repeats] for i in range(len(prompts))]  # type: ignore[misc]


def generate_completions(
    model,
    tokenizer,
    prompts: list[str],
    num_samples: int = 1,
    temperature: float = 1.0,
    max_new_tokens: int = 8,
    seed: int = 0,
    batch_size: int = 256,
    greedy: bool = False,
    show_progress: bool = True,
    chat=None,
) -> list[list[str]]:
    """The texts of `sample_completions` (same arguments, same draws)."""
    completions = sample_completions(
        model, tokenizer, prompts, num_samples=num_samples, temperature=temperature, max_new_tokens=max_new_tokens,
        seed=seed, batch_size=batch_size, greedy=greedy, show_progress=show_progress, chat=chat,
    )
    return [[completion.text for completion in samples] for samples in completions]
