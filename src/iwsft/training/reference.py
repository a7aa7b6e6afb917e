"""Reference log-probs: score pi_ref once, store one log-prob per completion token, and a fingerprint.

pi_ref never changes during training, so its per-token log-probs are a column computed in their
own stage; training then needs no second model in memory and no extra forward per step (the
authors' code runs one every step). The fingerprint (hash of the tokenized data, of the model
weights and of the tokenizer) is stored next to the column so that training can refuse a column
that belongs to other data, another model or another tokenizer instead of silently training on
misaligned numbers.
"""

from __future__ import annotations

import hashlib
import json

import torch
from datasets import Dataset
from tqdm.auto import tqdm

from iwsft.training.completion_head import completion_logprobs
from iwsft.encoding.sequences import CompletionCollator, tokenize_dataset
from iwsft.evaluation.prefix_scoring import prefix_scoring_supported, score_trajectories
from iwsft.evaluation.sharding import map_shards, whole_batches
from iwsft.errors import ReferenceMismatchError  # noqa: F401  (re-exported)


def hash_tokenized(dataset) -> str:
    """sha256 over every example's input_ids and labels, in order."""
    digest = hashlib.sha256()
    for input_ids, labels in zip(dataset["input_ids"], dataset["labels"]):
        digest.update(json.dumps([input_ids, labels], separators=(",", ":")).encode())
    return digest.hexdigest()


def hash_model_weights(model, as_dtype: torch.dtype | None = None) -> str:
    """sha256 over parameter names, shapes, dtypes and bytes (independent of file sharding).

    as_dtype: hash the floating-point weights as cast to that dtype, so that a policy loaded in fp32
    for mixed-precision training checks a column scored by the same weights loaded in bf16 (loading
    in bf16 is that same cast)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        if as_dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(as_dtype)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def hash_tokenizer(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(tokenized_dataset, model, tokenizer, weights_dtype: str | None = None) -> dict:
    """The column's identity. weights_dtype: the dtype the reference was scored in (a stored
    fingerprint's `model_dtype`), to check it from a model held in another dtype."""
    as_dtype = getattr(torch, weights_dtype) if weights_dtype else None
    scored_in = weights_dtype or str(next(model.parameters()).dtype).removeprefix("torch.")
    return {
        "data_sha256": hash_tokenized(tokenized_dataset),
        "model_sha256": hash_model_weights(model, as_dtype),
        "model_dtype": scored_in,
        "tokenizer_sha256": hash_tokenizer(tokenizer),
    }


@torch.inference_mode()
def score_reference(
    model,
    tokenized_dataset,
    pad_token_id: int,
    batch_size: int = 32,
    chunk_size: int = 1024,
    show_progress: bool = True,
    completion_head: bool = True,
) -> list[list[float]]:
    """log pi_ref(y_t) for every completion token of every example, in dataset order.

    Examples are batched in order of length so that little compute goes to padding; the LM head
    runs on the completion positions only, fused with an fp32 log-softmax in chunks
    (iwsft.training.completion_head; completion_head=False: the full logits, then the chunked log-softmax).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collate = CompletionCollator(pad_token_id)
    lengths = [len(ids) for ids in tokenized_dataset["input_ids"]]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    columns = tokenized_dataset.select_columns(["input_ids", "labels"])
    results: list[list[float] | None] = [None] * len(order)
    batches = range(0, len(order), batch_size)
    for start in tqdm(batches, desc="score reference", disable=not show_progress, mininterval=5):
        indices = order[start : start + batch_size]
        batch = collate([columns[i] for i in indices])
        logp, mask = completion_logprobs(
            model, batch["input_ids"].to(device), batch["attention_mask"].to(device), batch["labels"].to(device),
            chunk_size=chunk_size, enabled=completion_head,
        )
        logp, mask = logp.cpu(), mask.bool().cpu()
        for row, index in enumerate(indices):
            results[index] = logp[row][mask[row]].tolist()
    model.train(was_training)
    return results  # type: ignore[return-value]


def score_reference_shards(model, tokenized_dataset, pad_token_id: int, batch_size: int = 32,
                           everywhere: bool = False, **options) -> list[list[float]] | None:
    """score_reference over launch.num_processes processes (one process: itself): each scores whole
    batches of the one-process run, so the numbers are bitwise the same (iwsft.evaluation.sharding);
    all of them on the main process (on every process with `everywhere`), None on the others."""
    return map_shards(range(len(tokenized_dataset)), lambda indices, _: score_reference(
        model, tokenized_dataset.select(indices), pad_token_id, batch_size=batch_size, **options),
        split=whole_batches([len(ids) for ids in tokenized_dataset["input_ids"]], batch_size), everywhere=everywhere)


def sequence_logprobs(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int = 256,
                      chat=None, completion_ids: list | None = None, finished: list | None = None) -> list[float]:
    """log pi(completion + stop | prompt) per pair: the trajectory log-probability of the paper.

    completion_ids / finished: the sampled tokens and whether they stopped (iwsft.encoding.sequences.encode_pair),
    so that the bounds score exactly what was sampled; chat: the prompts' iwsft.encoding.chat.ChatFormat."""
    columns = {"prompt": prompts, "completion": completions}
    if completion_ids is not None:
        columns.update(completion_ids=completion_ids, finished=finished)
    pairs = tokenize_dataset(Dataset.from_dict(columns), tokenizer, chat=chat)
    # launched in several processes (sample, evaluate), every process gets all the numbers: they go on with them
    if prefix_scoring_supported(model):  # each prompt forwarded once, its completions from its KV cache
        per_token = score_trajectories(model, pairs, batch_size)
    else:
        per_token = score_reference_shards(model, pairs, tokenizer.pad_token_id, batch_size, everywhere=True,
                                           show_progress=False)
    return [float(sum(values)) for values in per_token]


def check_reference(stored: dict, expected: dict, source: str = "reference fingerprint") -> None:
    """Raise ReferenceMismatchError naming every part of the fingerprint that differs."""
    labels = {"data_sha256": "data", "model_sha256": "model weights", "tokenizer_sha256": "tokenizer"}
    wrong = [labels[k] for k in labels if stored.get(k) != expected.get(k)]
    if wrong:
        raise ReferenceMismatchError(
            f"{source}: the reference log-probs were computed for other {', '.join(wrong)} "
            f"(stored {', '.join(f'{k}={str(stored.get(k))[:12]}' for k in labels)}; "
            f"expected {', '.join(f'{k}={str(expected.get(k))[:12]}' for k in labels)}). "
            "Re-run the reference stage (dvc repro reference)."
        )


def tokenizer_mismatch(reference_tokenizer, policy_tokenizer) -> str | None:
    """Why two models cannot share completion_ids (vocabulary, or the pad / eos ids the sampler
    stops and pads with); None when they can. A teacher's tokens are scored by pi_ref as they are."""
    reference_vocab, policy_vocab = reference_tokenizer.get_vocab(), policy_tokenizer.get_vocab()
    if reference_vocab != policy_vocab:
        differ = sorted(set(reference_vocab.items()) ^ set(policy_vocab.items()), key=str)
        return (f"the vocabularies differ ({len(reference_vocab)} vs {len(policy_vocab)} tokens; "
                f"e.g. {', '.join(repr(token) for token, _ in differ[:3])})")
    for special in ("eos_token_id", "pad_token_id"):
        if getattr(reference_tokenizer, special) != getattr(policy_tokenizer, special):
            return (f"{special} differs ({getattr(reference_tokenizer, special)} vs "
                    f"{getattr(policy_tokenizer, special)})")
    return None


def reference_policy_path(params) -> str:
    """The model whose log-probs the reference column holds (params.reference.policy)."""
    return params.sample.policy if params.reference.policy == "sampler" else params.model.base


def expected_fingerprint(params, tokenized_dataset, base_model, tokenizer, stored: dict, source: str) -> dict:
    """What the reference stage's fingerprint must be for training with these params: the column of
    reference.policy's model (base_model itself, or sample.policy's weights loaded to hash them).
    A column scored by the other policy is refused by name, before any hash."""
    recorded = stored.get("policy", "base")
    if recorded != params.reference.policy:
        raise ReferenceMismatchError(
            f"{source}: the reference log-probs are {recorded!r}'s (policy {stored.get('policy_model')}), params.yaml "
            f"says reference.policy: {params.reference.policy}. Re-run the reference stage (dvc repro reference).")
    model = base_model
    if params.reference.policy == "sampler":
        from iwsft.model.artifacts import load_model

        model, _ = load_model(params.sample.policy, params.model.trust_remote_code)
    return fingerprint(tokenized_dataset, model, tokenizer, weights_dtype=stored.get("model_dtype"))


def column_summary(policy: str, policy_model: str, column: list[list[float]]) -> dict:
    """The figures the report gives of a reference column: whose log-probs, how many tokens per
    completion, and how likely a completion is under that model (teacher data can be far less
    likely than the model's own samples: the importance weights' spread follows)."""
    completions = max(len(column), 1)
    tokens = sum(len(values) for values in column)
    total = sum(sum(values) for values in column)
    return {
        "policy": policy,
        "policy_model": policy_model,
        "completions": len(column),
        "mean_completion_tokens": tokens / completions,
        "mean_logprob_per_completion": total / completions,
        "mean_logprob_per_token": total / max(tokens, 1),
    }
