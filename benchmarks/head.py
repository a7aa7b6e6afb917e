"""The completion-only LM head (issue 13) on a SmolLM2-shaped model: an iw-SFT step against a plain
Hugging Face causal-LM SFT step, and reference scoring against a bare full-sequence forward.

Run: `make bench` runs it after run.py and knobs.py (3-5 minutes on a shared 2-core machine).

* Model: a Llama shaped like SmolLM2-135M (vocabulary 49,152, hidden 576, MLP 1536, 9 heads, 3
  key/value heads, tied embeddings) with LAYERS layers instead of 30, so that it fits a CPU run;
  42M parameters, fp32, random weights. Data: random ids, a PROMPT-token prompt and a
  COMPLETION-token completion (prompt:completion = 1:1, a few rows shorter, so batches carry padding).
* Step = collate the rows (`CompletionCollator`), the loss, backward, AdamW step, zero_grad:
  - `plain_sft`: `model(input_ids, attention_mask, labels=labels).loss` (HF's own causal-LM loss:
    the [B, T, V] logits, then cross-entropy over the completion labels);
  - `plain_sft_again`: the same again, an A/A control whose ratio to `plain_sft` is the noise floor;
  - `iwsft`: `IwSftTrainer.compute_loss` with method iwsft and the reference column, the completion-only
    head (iwsft.training.completion_head);
  - `iwsft_full_logits`: the same with `completion_head=False` (today's path before issue 13: full
    logits, then the chunked fp32 log-softmax), to show where the difference comes from.
  After WARMUP steps each, rounds run every variant once on the same batch, the order reversed every
  other round; REPS rounds, or fewer (never under MIN_REPS) after STEP_BUDGET_S. The headline time
  ratio is paired: the median over rounds of iwsft / plain_sft measured back to back.
* Peak memory: one fresh subprocess per variant (`--memory-worker NAME`), so nothing of another
  variant's heap is in it. After building the model, the worker resets the kernel's peak-RSS counter
  (5 > /proc/self/clear_refs) and reads VmRSS as its baseline, then builds the optimizer and trainer
  and runs MEM_STEPS steps; peak = VmHWM - baseline (gradients, AdamW state, activations, logits).
  MALLOC_MMAP_THRESHOLD_=65536 makes glibc return freed large blocks, so RSS follows live memory.
  tracemalloc would not see torch's allocations; RSS does.
* Scoring: `score_reference(model, batch)` against a bare `model(input_ids, attention_mask)` under
  `torch.inference_mode()` on the same length-sorted, right-padded batches, back to back per batch
  (which goes first alternates); tokens = real input tokens; the ratio is paired per batch.

The last stdout line is one JSON object with run.py's conventions (ratios rounded to 4 places,
`goals` with pass flags, `machine` with the background CPU share): `iw_over_plain_sft_time`,
`iw_over_plain_sft_mem`, `scoring_over_full_forward_tokens_per_s`. Goals: <= 0.85, <= 0.7, >= 1.2.
Exits 0 whether or not a goal is met. Torch runs BENCH_THREADS threads (default 1, see run.py).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import run  # noqa: E402  (benchmarks/run.py: seeding, pairing, memory and CPU-share helpers)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments  # noqa: E402

from iwsft.training.reference import score_reference  # noqa: E402
from iwsft.encoding.sequences import IGNORE_INDEX, CompletionCollator  # noqa: E402
from iwsft.training.trainer import IwSftConfig, IwSftTrainer  # noqa: E402

LAYERS = 4
MODEL = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=LAYERS,
             num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True,
             rms_norm_eps=1e-5, pad_token_id=0, bos_token_id=1, eos_token_id=2)
PAD, EOS, FIRST_ID = 0, 2, 4
PROMPT, COMPLETION = 128, (112, 127)  # completion tokens before eos: rows of 241..256 tokens
BATCH, N_BATCHES, WARMUP, REPS, STEP_BUDGET_S, MIN_REPS = 4, 3, 1, 10, 110, 4
MEM_STEPS = 2
SCORE_EXAMPLES, SCORE_BATCH, SCORE_REPS, SCORE_BUDGET_S = 24, 8, 8, 60
GOALS = {"iw_over_plain_sft_time": ("<=", 0.85), "iw_over_plain_sft_mem": ("<=", 0.7),
         "scoring_over_full_forward_tokens_per_s": (">=", 1.2)}
# trl.SFTTrainer (completion-only loss from our labels, loss_type nll) when the optional `trl` extra is installed
HAS_TRL = importlib.util.find_spec("trl") is not None
VARIANTS = ["plain_sft", "iwsft", "iwsft_full_logits"] + (["trl_sft"] if HAS_TRL else [])
TIMED = ["plain_sft_again", *VARIANTS]


def build_model(seed: int = 0) -> LlamaForCausalLM:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(**MODEL, attention_dropout=0.0))


def make_dataset(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    rows = {"input_ids": [], "labels": []}
    for _ in range(n):
        prompt = rng.integers(FIRST_ID, MODEL["vocab_size"], PROMPT).tolist()
        completion = rng.integers(FIRST_ID, MODEL["vocab_size"], rng.integers(*COMPLETION, endpoint=True)).tolist()
        rows["input_ids"].append(prompt + completion + [EOS])
        rows["labels"].append([IGNORE_INDEX] * PROMPT + completion + [EOS])
    return Dataset.from_dict(rows)


def training_rows() -> list[dict]:
    dataset = make_dataset(BATCH * N_BATCHES, seed=1)
    column = score_reference(build_model(), dataset, PAD, batch_size=SCORE_BATCH, show_progress=False)
    return dataset.add_column("ref_logprobs", column).to_list()


class Step:
    """One variant: its own model, optimizer and (for iw-SFT) trainer; `__call__(rows)` = one step."""

    def __init__(self, name: str, model, rows, output_dir: str):
        self.name, self.model = name, model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        self.collate = CompletionCollator(PAD)
        self.trainer = None
        args = dict(output_dir=output_dir, per_device_train_batch_size=BATCH, use_cpu=True, report_to="none",
                    remove_unused_columns=False, save_strategy="no", disable_tqdm=True, seed=0)
        if name == "trl_sft":  # TRL's own step: HF's loss on our labels, plus the metrics TRL logs each step
            from trl import SFTConfig, SFTTrainer

            config = SFTConfig(loss_type="nll", max_length=None, dataset_kwargs={"skip_prepare_dataset": True}, **args)
            plain = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
            self.trainer = SFTTrainer(model=model, args=config, train_dataset=plain, data_collator=self.collate,
                                      processing_class=run.build_char_tokenizer())
        elif name.startswith("iwsft"):
            args = TrainingArguments(**args)
            config = IwSftConfig(method="iwsft", reference_source="column", completion_head=name == "iwsft")
            self.trainer = IwSftTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                        data_collator=self.collate, iw_config=config)

    def __call__(self, rows: list[dict]) -> float:
        if not self.name.startswith("iwsft"):  # no ref_logprobs column: SFT rows only
            rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
        start = time.perf_counter()
        batch = self.collate(rows)
        self.model.train()
        if self.trainer is None:
            loss = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              labels=batch["labels"], use_cache=False).loss
        else:
            num_items = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
            loss = self.trainer.compute_loss(self.model, batch, num_items_in_batch=num_items)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start


def batches(rows):
    return [rows[i * BATCH : (i + 1) * BATCH] for i in range(N_BATCHES)]


def time_steps(rows) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as output_dir:
        steps = [Step(name, build_model(), rows, output_dir) for name in TIMED]
        data = batches(rows)
        for i in range(WARMUP):
            for step in steps:
                step(data[i % N_BATCHES])
        times = {name: [] for name in TIMED}
        deadline = time.perf_counter() + STEP_BUDGET_S
        for r in range(REPS):
            for step in steps if r % 2 == 0 else steps[::-1]:
                times[step.name].append(step(data[r % N_BATCHES]))
            if r + 1 >= MIN_REPS and time.perf_counter() > deadline:
                break
    return times


def memory_worker(name: str) -> None:
    run.seed_everything()
    rows = json.loads(Path(os.environ["HEAD_BENCH_ROWS"]).read_text())
    model = build_model()
    gc.collect()
    with tempfile.TemporaryDirectory() as output_dir:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current RSS
        baseline = run.proc_kb("VmRSS")
        step = Step(name, model, rows, output_dir)
        for i in range(MEM_STEPS):
            step(batches(rows)[i % N_BATCHES])
        print(json.dumps({name: (run.proc_kb("VmHWM") - baseline) / 1024}))


def measure_memory(rows) -> dict[str, float]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    peaks = {}
    with tempfile.TemporaryDirectory() as scratch:
        env["HEAD_BENCH_ROWS"] = str(Path(scratch) / "rows.json")
        Path(env["HEAD_BENCH_ROWS"]).write_text(json.dumps(rows))
        for name in VARIANTS:
            out = subprocess.run([sys.executable, __file__, "--memory-worker", name], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, check=True).stdout
            peaks.update(json.loads(out.strip().splitlines()[-1]))
    return peaks


def measure_scoring(deadline: float):
    model = build_model().eval()
    dataset = make_dataset(SCORE_EXAMPLES, seed=2)
    lengths = [len(ids) for ids in dataset["input_ids"]]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups = [order[start : start + SCORE_BATCH] for start in range(0, len(order), SCORE_BATCH)]
    subsets = [dataset.select(group) for group in groups]
    collate = CompletionCollator(PAD)
    bare_batches = [collate([dataset[i] for i in group]) for group in groups]

    def scoring(i):
        score_reference(model, subsets[i], PAD, batch_size=SCORE_BATCH, show_progress=False)

    def bare(i):
        with torch.inference_mode():
            model(input_ids=bare_batches[i]["input_ids"], attention_mask=bare_batches[i]["attention_mask"], use_cache=False)

    for i in range(len(groups)):
        scoring(i), bare(i)
    runs = {"score_reference": [], "bare_forward": []}
    for r in range(SCORE_REPS):
        for i in range(len(groups)):
            pair = [("score_reference", scoring), ("bare_forward", bare)]
            for name, fn in pair if (r + i) % 2 == 0 else pair[::-1]:
                start = time.perf_counter()
                fn(i)
                runs[name].append(time.perf_counter() - start)
        if r + 1 >= MIN_REPS and time.perf_counter() > deadline:
            break
    tokens = [sum(lengths[i] for i in group) for group in groups]
    return tokens, runs


def main() -> None:
    wall, (busy0, own0) = time.perf_counter(), run.cpu_seconds()
    run.seed_everything()
    params = sum(p.numel() for p in build_model().parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; SmolLM2-shaped "
          f"Llama, {LAYERS} layers, {params / 1e6:.1f}M params; batch {BATCH} x {PROMPT}+{COMPLETION[0]}..{COMPLETION[1]}+1 "
          "tokens (prompt:completion 1:1)", flush=True)
    rows = training_rows()
    times = time_steps(rows)
    phase_s = {"steps": time.perf_counter() - wall}
    print("step times done; peak memory, one subprocess per variant", flush=True)
    peak = measure_memory(rows)
    phase_s["memory"] = time.perf_counter() - wall - sum(phase_s.values())
    print("memory done; reference scoring", flush=True)
    tokens, runs = measure_scoring(time.perf_counter() + SCORE_BUDGET_S)
    phase_s["scoring"] = time.perf_counter() - wall - sum(phase_s.values())

    ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    over_plain = {name: run.paired(times[name], times["plain_sft"]) for name in TIMED}
    rounds = len(runs["bare_forward"]) // len(tokens)
    per_batch_tokens = tokens * rounds
    tps = {name: sum(per_batch_tokens) / sum(seconds) for name, seconds in runs.items()}
    results = {
        "iw_over_plain_sft_time": over_plain["iwsft"],
        "iw_over_plain_sft_mem": peak["iwsft"] / peak["plain_sft"],
        "scoring_over_full_forward_tokens_per_s": run.paired(runs["bare_forward"], runs["score_reference"]),
        "full_logits_iw_over_plain_sft_time": over_plain["iwsft_full_logits"],
        "full_logits_iw_over_plain_sft_mem": peak["iwsft_full_logits"] / peak["plain_sft"],
        "plain_sft_again_over_plain_sft_time": over_plain["plain_sft_again"],  # A/A control: the noise floor
    }
    if HAS_TRL:
        results["iw_over_trl_sft_time"] = run.paired(times["iwsft"], times["trl_sft"])
        results["iw_over_trl_sft_mem"] = peak["iwsft"] / peak["trl_sft"]
    of_medians = {f"{name}_over_plain_sft_time": ms[name] / ms["plain_sft"] for name in TIMED if name != "plain_sft"}
    of_medians["scoring_over_full_forward_tokens_per_s"] = tps["score_reference"] / tps["bare_forward"]

    print(f"\n{'variant':<18}{'median ms/step':>15}{'min..max':>13}{'paired/plain':>13}{'peak MB':>9}{'mem/plain':>10}")
    for name in ["plain_sft", "plain_sft_again", *VARIANTS[1:]]:
        spread = f"{1000 * min(times[name]):.0f}..{1000 * max(times[name]):.0f}"
        mem = f"{peak[name]:>9.1f}{peak[name] / peak['plain_sft']:>10.3f}" if name in peak else f"{'-':>9}{'-':>10}"
        print(f"{name:<18}{ms[name]:>15.1f}{spread:>13}{over_plain[name]:>13.3f}{mem}")
    print(f"\n{'scoring':<18}{'tokens/s':>10}   ({rounds} rounds x {len(tokens)} batches of {SCORE_BATCH})")
    for name, value in tps.items():
        print(f"{name:<18}{value:>10.0f}")
    print(f"ratio: paired {results['scoring_over_full_forward_tokens_per_s']:.3f}, "
          f"of totals {of_medians['scoring_over_full_forward_tokens_per_s']:.3f}")
    print(f"noise floor: the A/A control plain_sft_again/plain_sft = {over_plain['plain_sft_again']:.3f}\n")

    goals = {key: {"target": f"{op}{target}", "value": round(results[key], 4),
                   "pass": bool(results[key] <= target if op == "<=" else results[key] >= target)}
             for key, (op, target) in GOALS.items()}
    wall_s = time.perf_counter() - wall
    busy, own = run.cpu_seconds()
    background = (busy - busy0) - (own - own0)
    summary = {
        **{k: round(v, 4) for k, v in results.items()},
        "ratio_of_medians": {k: round(v, 4) for k, v in of_medians.items()},
        "median_ms_per_step": {k: round(v, 1) for k, v in ms.items()},
        "peak_mb": {k: round(v, 1) for k, v in peak.items()},
        "tokens_per_s": {k: round(v) for k, v in tps.items()},
        "goals": goals,
        "all_goals_pass": all(g["pass"] for g in goals.values()),
        "setup": {"model": MODEL, "params_m": round(params / 1e6, 1), "batch": BATCH, "prompt_len": PROMPT,
                  "completion_len": COMPLETION, "step_rounds": len(times["plain_sft"]), "score_rounds": rounds,
                  "mem_steps": MEM_STEPS, "score_examples": SCORE_EXAMPLES, "score_batch": SCORE_BATCH,
                  "memory": "VmHWM - VmRSS baseline, one subprocess per variant"},
        "machine": run.machine_info(background, wall_s),
        "wall_s": round(wall_s, 1),
        "phase_s": {k: round(v, 1) for k, v in phase_s.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-worker", metavar="VARIANT", help="internal: measure one variant's peak memory")
    cli = parser.parse_args()
    memory_worker(cli.memory_worker) if cli.memory_worker else main()
