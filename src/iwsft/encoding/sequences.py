"""Prompt/completion pairs to model inputs, and the collator that keeps the iw-SFT columns.

Every stage tokenizes with `encode_pair`, so reference scoring and training see the same tokens:
input_ids = tokenizer(prompt) + the completion's tokens, labels = -100 on the prompt. The completion's
tokens are the ones pi_ref sampled when the record carries them (`completion_ids`, written by `iwsft
sample`, stop token included): the importance weight q/pi_ref must be computed on exactly those.
A text-only record is re-tokenized, plus EOS when it `finished` (the default for users' files); an
unfinished one (cut at max_new_tokens) gets no EOS, so training never teaches stopping mid-sentence. The per-token reference log-probs are stored per example as one float per completion
token (the positions where the shifted labels are not -100), independent of padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from iwsft.data.conversation import completion_content
from iwsft.errors import SequenceAlignmentError  # noqa: F401  (re-exported)

IGNORE_INDEX = -100


def encode_pair(tokenizer, prompt: str | list, completion: str | list, max_length: int | None = None,
                completion_ids: list[int] | None = None, finished: bool | None = True, chat=None) -> dict:
    """chat: an iwsft.encoding.chat.ChatFormat (None: plain prompt + completion + EOS). A conversational
    prompt/completion (message lists) needs a chat; the completion trains on its message's content."""
    completion = completion_content(completion)
    prompt_ids = chat.prompt_ids(prompt) if chat is not None else tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if completion_ids is None:
        end = chat.end_of_turn_id if chat is not None else tokenizer.eos_token_id
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        completion_ids = completion_ids + ([end] if finished is not False else [])
    else:
        completion_ids = list(completion_ids)
    input_ids = prompt_ids + completion_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def encode_record(tokenizer, record: dict, chat=None) -> dict:
    """encode_pair for a pipeline record (its sampled `completion_ids` and `finished` when it has them)."""
    return encode_pair(tokenizer, record["prompt"], record["completion"],
                       completion_ids=record.get("completion_ids"), finished=record.get("finished", True), chat=chat)


def misdecoded(tokenizer, records: list[dict], source: str) -> None:
    """DataError naming the first records whose `completion_ids` do not decode to their `completion`:
    such ids belong to another tokenizer (or the text was edited), and training on them would weight
    a sequence nobody wrote."""
    from iwsft.errors import DataError

    wrong = [r for r in records if r.get("completion_ids") is not None
             and tokenizer.decode(list(r["completion_ids"]), skip_special_tokens=True) != completion_content(r["completion"])]
    if wrong:
        shown = "; ".join(f"id {r.get('id')!r}: decodes to "
                          f"{tokenizer.decode(list(r['completion_ids']), skip_special_tokens=True)[:40]!r}, "
                          f"completion is {completion_content(r['completion'])[:40]!r}" for r in wrong[:3])
        raise DataError(f"{source}: {len(wrong)} of {len(records)} records have field 'completion_ids' that does "
                        f"not decode to field 'completion' with this model's tokenizer ({shown}). Sample them with "
                        f"this model (`iwsft sample`) or drop the completion_ids field to re-tokenize the text.")


def completion_token_count(labels: list[int]) -> int:
    """Tokens that carry loss after the causal shift (labels[1:] != -100)."""
    return sum(1 for label in labels[1:] if label != IGNORE_INDEX)


def tokenize_dataset(dataset, tokenizer, max_length: int | None = None, num_proc: int | None = None, chat=None):
    """Add input_ids/labels to a datasets.Dataset with prompt and completion columns."""
    return dataset.map(
        lambda row: encode_pair(tokenizer, row["prompt"], row["completion"], max_length,
                                row.get("completion_ids"), row.get("finished", True), chat),
        num_proc=num_proc,
        desc="tokenize",
    )


@dataclass
class CompletionCollator:
    """Right-pads a batch; keeps `ref_logprobs` (aligned with the shifted labels) and `sample_weight`.

    Output: input_ids, attention_mask, labels [B, T]; ref_logprobs [B, T-1] when present;
    sample_weight [B] when present. Other columns are dropped here rather than by the Trainer,
    which is why training runs with remove_unused_columns=False.
    """

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict:
        longest = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), longest), dtype=torch.long)
        labels = torch.full((len(features), longest), IGNORE_INDEX, dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"])
            attention_mask[row, :n] = 1
            labels[row, :n] = torch.as_tensor(feature["labels"])
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if "ref_logprobs" in features[0]:
            batch["ref_logprobs"] = self._align_reference(features, labels)
        if "sample_weight" in features[0]:
            batch["sample_weight"] = torch.tensor([float(f["sample_weight"]) for f in features])
        return batch

    @staticmethod
    def _align_reference(features: list[dict], labels: torch.Tensor) -> torch.Tensor:
        completion = labels[:, 1:] != IGNORE_INDEX
        aligned = torch.zeros(completion.shape, dtype=torch.float32)
        for row, feature in enumerate(features):
            values = torch.as_tensor(feature["ref_logprobs"], dtype=torch.float32)
            expected = int(completion[row].sum())
            if values.numel() != expected:
                where = f"example id={feature['id']!r}" if "id" in feature else f"batch row {row}"
                raise SequenceAlignmentError(
                    f"ref_logprobs of {where} has {values.numel()} values but its completion has "
                    f"{expected} tokens: the reference was scored on other data or another tokenizer; "
                    "re-run the reference stage"
                )
            aligned[row, completion[row]] = values
        return aligned
