"""One process of tests/integration/test_sharding_processes.py (started by torch.distributed.run): samples (k + greedy)
and reference scores through iwsft.evaluation.sharding, as the sample, evaluate and reference stages do,
and trajectory log-probs (sequence_logprobs: sample's policy / ref log-probs, evaluate's bounds), which every
process gets whole; the main process writes what it merged to OUT/result.json."""

import json
import sys
from pathlib import Path

import torch
from datasets import Dataset

from iwsft.evaluation.generation import sample_with_greedy
from iwsft.evaluation.sharding import map_shards, rank_and_size
from iwsft.model.tiny_lm import build_char_tokenizer, build_tiny_llama
from iwsft.training.reference import score_reference_shards, sequence_logprobs

PROMPTS = ["1+2=", "17+5=", "a", "hello there ", "3*3=", "xyz", "The cat sat on ", "99-1=", "q", "2+2+2="]


def main(out: Path) -> None:
    torch.set_num_threads(1)
    tokenizer = build_char_tokenizer()
    model = build_tiny_llama(len(tokenizer), max_positions=128, seed=7).eval()
    pairs = map_shards(PROMPTS, lambda indices, shard: list(zip(*sample_with_greedy(
        model, tokenizer, shard, num_samples=3, max_new_tokens=8, seed=4, batch_size=6, show_progress=False,
        prompt_indices=indices))))
    rows = []
    for i, prompt in enumerate(PROMPTS):  # a prompt (no loss) and a completion of 0-12 chars
        prompt_ids = tokenizer(prompt)["input_ids"]
        completion_ids = tokenizer("answer" * (i % 3), add_special_tokens=False)["input_ids"]
        rows.append({"input_ids": prompt_ids + completion_ids, "labels": [-100] * len(prompt_ids) + completion_ids})
    data = Dataset.from_list(rows)
    column = score_reference_shards(model, data, tokenizer.pad_token_id, batch_size=3, show_progress=False)
    trajectories = sequence_logprobs(model, tokenizer, PROMPTS, [f"{i} apples" * (i % 4) for i in range(len(PROMPTS))],
                                     batch_size=3)
    assert len(trajectories) == len(PROMPTS), trajectories  # on every process, not only the main one
    if pairs is None:
        return
    assert column is not None
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps({
        "world_size": rank_and_size()[1],
        "samples": [[c.token_ids + [c.stop_token_id or -1] for c in samples] for samples, _ in pairs],
        "greedy": [g.token_ids for _, g in pairs],
        "reference": column,
        "trajectories": trajectories,
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
