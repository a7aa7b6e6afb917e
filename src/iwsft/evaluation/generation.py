"""Sampling completions from a causal LM: exact samples from pi at temperature T, or greedy.

iw-SFT's weight is q/pi_ref computed on these samples, so they must be draws from pi itself: no
top-k, top-p, min-p, repetition penalty or anything else a model's generation_config may ask for.
That is why this module does not call `model.generate` (which fills every unset field from the
model's generation_config, top_k=50 by default, and some fields can only be unset, not switched off):
the decode loop (iwsft.evaluation.decoding) calls the model's forward itself and draws the token from
the logits at temperature T (iwsft.evaluation.sampling), nothing else. It also pre-fills each prompt
once for all its samples, which `generate` cannot.

Stop tokens: the model's `eos_token_id` may be an int or a list; we stop on all of them plus the
tokenizer's EOS (and, with a chat template, its end-of-turn token).

Random stream: prompt i's samples come from a generator seeded by (seed, i) (since issue 30; before,
one torch seed per batch of `generate`), so the draws differ from those of earlier versions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iwsft.evaluation.decoding import decode


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


def _completion(new_tokens: list[int], stops: set[int], tokenizer) -> Completion:
    cut = next((i for i, token in enumerate(new_tokens) if token in stops), None)
    ids = new_tokens if cut is None else new_tokens[:cut]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return Completion(text=text, token_ids=list(ids), finished=cut is not None,
                      stop_token_id=None if cut is None else new_tokens[cut])


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
    *,
    max_batch_tokens: int | None = None,
    prompt_indices: list[int] | None = None,
) -> list[list[Completion]]:
    """`num_samples` completions per prompt (1 if greedy), in prompt order, as draws from pi at
    `temperature` (or greedy), on whatever device the model is.

    Prompt i's samples are drawn from a generator seeded by (seed, prompt_indices[i]) (default: i),
    so they do not depend on the batch or process that draws them (iwsft.evaluation.sampling).
    `batch_size` counts rows (prompts x samples); `max_batch_tokens` also caps rows x (prompt +
    max_new_tokens).
    """
    if greedy:
        return [[g] for _, g in _draw(model, tokenizer, prompts, 0, temperature, max_new_tokens, seed, batch_size,
                                      True, show_progress, chat, max_batch_tokens, prompt_indices)]
    return [s for s, _ in _draw(model, tokenizer, prompts, num_samples, temperature, max_new_tokens, seed, batch_size,
                                False, show_progress, chat, max_batch_tokens, prompt_indices)]


def sample_with_greedy(
    model, tokenizer, prompts: list[str], num_samples: int, temperature: float = 1.0, max_new_tokens: int = 8,
    seed: int = 0, batch_size: int = 256, show_progress: bool = True, chat=None, *,
    max_batch_tokens: int | None = None, prompt_indices: list[int] | None = None,
) -> tuple[list[list[Completion]], list[Completion]]:
    """Evaluate's draw: `num_samples` samples and one greedy completion per prompt, from one pre-fill of
    each prompt. The samples equal sample_completions' (same seed), the greedy completions its
    greedy=True output (up to float rounding in a different batch: a near-tie may break otherwise)."""
    pairs = _draw(model, tokenizer, prompts, num_samples, temperature, max_new_tokens, seed, batch_size, True,
                  show_progress, chat, max_batch_tokens, prompt_indices)
    return [s for s, _ in pairs], [g for _, g in pairs]


def _draw(model, tokenizer, prompts, num_samples, temperature, max_new_tokens, seed, batch_size, greedy,
          show_progress, chat, max_batch_tokens, prompt_indices) -> list[tuple[list[Completion], Completion | None]]:
    if num_samples and not temperature > 0:
        raise ValueError(f"temperature must be > 0 for sampling (got {temperature}); use greedy=True instead")
    stops = stop_token_ids(model, tokenizer)
    if chat is not None and chat.is_chat and chat.end_of_turn_id not in stops:
        stops.append(chat.end_of_turn_id)  # iwsft.encoding.chat.ChatFormat: the template's prompt tokens
    # the rendered prompt's tokens, exactly as encode_pair makes them for scoring
    ids = [chat.prompt_ids(p) if chat is not None else tokenizer(p)["input_ids"] for p in prompts]
    indices = list(range(len(prompts))) if prompt_indices is None else list(prompt_indices)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops or [0])[0]  # masked: any id does
    rows = decode(model, ids, indices, num_samples=num_samples, greedy=greedy, temperature=temperature,
                  max_new_tokens=max_new_tokens, seed=seed, stops=stops, pad_id=pad, batch_size=batch_size,
                  max_batch_tokens=max_batch_tokens, show_progress=show_progress)
    stop_set = set(stops)
    return [([_completion(r, stop_set, tokenizer) for r in per_prompt[:num_samples]],
             _completion(per_prompt[num_samples], stop_set, tokenizer) if greedy else None) for per_prompt in rows]


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
