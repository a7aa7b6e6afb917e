"""prepare: the demo's pi_ref — a char tokenizer and a tiny Llama, pretrained briefly on worked
examples so that it is right sometimes (20-60 % sampled accuracy), plus the prompt pools.

`iwsft prepare --teacher` (generate/dvc.yaml's prepare_teacher): the same code with params' `teacher`
sizes and steps writes data/prepare/teacher_model, another model with pi_ref's tokenizer, for the
teacher-data regime (sample.policy pointing at it). Measured (seed 0, 500 train prompts x 4 at T=1):
pi_ref .22, the 128-wide teacher .25; neither width nor each train prompt seen 30 times in pretraining
(.25) lifts it further within minutes on a CPU: the 2-digit sums stay near 5 % (DEMO_FEASIBILITY.md)."""

from __future__ import annotations

import tempfile

from datasets import Dataset

from iwsft.config.schema import Params
from iwsft.model.artifacts import atomic_directory, save_model
from iwsft.tasks.chain_sum import build_splits
from iwsft.io.durable import write_jsonl_atomic
from iwsft.encoding.sequences import tokenize_dataset
from iwsft.stages import DATA
from iwsft.model.tiny_lm import build_char_tokenizer, build_tiny_llama
from iwsft.training.trainer import IwSftConfig
from iwsft.training.arguments import fine_tune

OUT = DATA / "prepare"


def run(params: Params, teacher: bool = False) -> None:
    seed, config = params.seed, params.prepare
    # the teacher: its own sizes and steps, the rest (data, optimizer, positions) as pi_ref's
    sizes = params.teacher if teacher else config
    splits = build_splits(params.task, seed)
    tokenizer = build_char_tokenizer()
    model = build_tiny_llama(
        len(tokenizer),
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.intermediate_size,
        num_layers=sizes.num_layers,
        num_heads=sizes.num_heads,
        max_positions=config.max_positions,
        seed=seed,
    )
    worked = Dataset.from_dict(
        {"prompt": [p["prompt"] for p in splits["pretrain"]], "completion": [p["answer"] for p in splits["pretrain"]]}
    )
    with tempfile.TemporaryDirectory() as scratch:
        fine_tune(
            model, tokenizer, tokenize_dataset(worked, tokenizer), IwSftConfig(method="sft"), scratch,
            steps=sizes.steps, batch_size=config.batch_size, lr=config.lr,
            warmup_steps=config.warmup_steps, weight_decay=0.01, seed=seed, logging_steps=100,
        )
    with atomic_directory(OUT / ("teacher_model" if teacher else "base_model")) as directory:
        save_model(model, tokenizer, directory)
    if teacher:  # the prompt pools are prepare's outputs
        return
    write_jsonl_atomic(OUT / "train_prompts.jsonl", splits["train"])
    write_jsonl_atomic(OUT / "eval_prompts.jsonl", splits["eval"])
