"""Cost of iw-SFT over plain SFT, measured side by side on the same model and the same batches.

Run: `make bench` (= `.venv/bin/python benchmarks/run.py`): 2-4 minutes on 2 cores (4 when other
processes take most of the machine; budgets below keep it under 5).

* Model and data: a 7.3M-parameter Llama from `iwsft.model.tiny_lm.build_tiny_llama` (vocab 4096, hidden
  256, 6 layers, MLP 1024, 4 heads) on random token ids: a 64-token prompt and a 160..191-token
  completion plus eos, so rows are 225..256 tokens and batches of 4 carry a little padding. The
  `ref_logprobs` column is scored by `score_reference` with the initial policy as pi_ref.
* Step time. Each variant has its own identically initialised model, trainer and AdamW. A step =
  collate the rows with `CompletionCollator` (as the Trainer's dataloader would), then
  `trainer.compute_loss(model, batch, num_items_in_batch=N)`, backward, optimizer step, zero_grad:
  the compute of `Trainer.training_step` without the Trainer loop's bookkeeping. Variants: `sft`
  (IwSftConfig(method="sft")), `sft_again` (the same again: an A/A control, its ratio to `sft` is
  the noise floor), `iwsft_column` (method="iwsft", reference_source="column"), `iwsft_online`
  (reference_source="online": a frozen copy of the model, one extra forward per step) and, if TRL
  is importable, `trl_sft` (trl.SFTTrainer, loss_type="nll", same rows and collator). After WARMUP
  steps each, rounds run every variant once on the same batch in the order of TIMED, reversed every
  other round (so `sft` always runs right next to `sft_again` and `iwsft_column`, first as often as
  second); REPS rounds, or fewer (never under MIN_REPS) once STEP_BUDGET_S has passed. (Budgets
  keep a run under 5 minutes even when other processes take most of the machine.)
* Peak memory, in one subprocess (`--memory-worker sft,...`; nothing of the timing process's heap
  is in it), variant after variant, after an unrecorded warm-up variant. For each, after building
  its fresh model, the worker resets the kernel's peak-RSS counter (5 > /proc/self/clear_refs),
  reads VmRSS as the baseline, builds the trainer (the online variant copies the model here) and
  runs MEM_STEPS steps. Peak = VmHWM - baseline: grads, AdamW state, activations, logits and any
  reference copy. MALLOC_MMAP_THRESHOLD_=65536 makes glibc hand freed large blocks back to the OS,
  so RSS follows live memory, not the allocator's history or the previous variant's: the numbers
  agree within 1 MB whatever the order of the variants or the load.
* Scoring throughput: `score_reference(model, examples, pad, batch_size=SCORE_BATCH)` against a
  bare `with torch.inference_mode(): model(input_ids)` on the same examples in the same
  length-sorted, right-padded batches; score_reference gets one batch's examples per call, so that
  the two run back to back per batch (which goes first alternates). Tokens = real input tokens.
  SCORE_REPS rounds over all batches, or fewer (never under MIN_REPS) after SCORING_ENDS_BY_S.

Statistics. The machine is shared (other processes' CPU time is reported as
`background_cpu_share`), so the headline time ratios are paired: the median, over rounds (over
batches for scoring), of the ratio of two measurements taken back to back, which cancels load that
drifts between them. The ratios of the per-variant medians are also printed and kept in
"ratio_of_medians". The last stdout line is one JSON object: ratios, goals (iw/sft time <= 1.03,
iw/sft memory <= 1.02, scoring/forward tokens/s >= 0.9) with pass flags, machine. The script
reports and exits 0 whether or not a goal is met. Everything is seeded.

Threads: torch runs 1 thread unless BENCH_THREADS says otherwise. The machines have 2 cores, but
they are shared with test runs: with 2 threads every op waits for the slower core, and with one
core busy elsewhere a 2-thread SFT step measured median 1.54 s, max 8.7 s (cv 1.0) against 0.73 s,
max 1.3 s (cv 0.23) for 1 thread in the same minute. The ratios, not the absolute times, are the
result; `BENCH_THREADS=2 make bench` on a quiet machine gives the 2-core times.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import TrainingArguments  # noqa: E402

from iwsft.training.reference import score_reference  # noqa: E402
from iwsft.encoding.sequences import IGNORE_INDEX, CompletionCollator  # noqa: E402
from iwsft.model.tiny_lm import build_char_tokenizer, build_tiny_llama  # noqa: E402
from iwsft.training.trainer import IwSftConfig, IwSftTrainer  # noqa: E402

THREADS = int(os.environ.get("BENCH_THREADS", "1"))  # see "Threads" in the docstring
MODEL = dict(vocab_size=4096, hidden_size=256, intermediate_size=1024, num_layers=6, num_heads=4, max_positions=512)
PAD, EOS, FIRST_ID = 0, 2, 4  # ids 0..3 are the specials
PROMPT_LEN, COMPLETION_LEN = 64, (160, 191)  # completion tokens before eos
BATCH, N_BATCHES, WARMUP, REPS, STEP_BUDGET_S = 4, 4, 2, 20, 75  # stop adding rounds after the budget
MEM_STEPS = 3
SCORE_EXAMPLES, SCORE_BATCH, SCORE_REPS = 32, 8, 10
SCORING_ENDS_BY_S = 235  # scoring adds no round after this many seconds of the whole run
MIN_REPS = 4  # rounds always run, whatever the budgets
GOALS = {"iw_over_sft_time": ("<=", 1.03), "iw_over_sft_mem": ("<=", 1.02), "scoring_over_forward_tokens_per_s": (">=", 0.9)}
HAS_TRL = importlib.util.find_spec("trl") is not None
VARIANTS = ["sft", "iwsft_column", "iwsft_online"] + (["trl_sft"] if HAS_TRL else [])
TIMED = ["sft_again", *VARIANTS]  # run in this order, then reversed: sft sits next to both of its peers
CONFIGS = {
    "sft": IwSftConfig(method="sft"),
    "sft_again": IwSftConfig(method="sft"),
    "iwsft_column": IwSftConfig(method="iwsft", reference_source="column"),
    "iwsft_online": IwSftConfig(method="iwsft", reference_source="online"),
}


def seed_everything(seed: int = 0) -> None:
    torch.set_num_threads(THREADS)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_dataset(n: int, seed: int) -> Dataset:
    """Random prompt/completion token ids; labels are -100 on the prompt."""
    rng = np.random.default_rng(seed)
    rows = {"input_ids": [], "labels": []}
    for _ in range(n):
        prompt = rng.integers(FIRST_ID, MODEL["vocab_size"], PROMPT_LEN).tolist()
        completion = rng.integers(FIRST_ID, MODEL["vocab_size"], rng.integers(*COMPLETION_LEN, endpoint=True)).tolist()
        rows["input_ids"].append(prompt + completion + [EOS])
        rows["labels"].append([IGNORE_INDEX] * PROMPT_LEN + completion + [EOS])
    return Dataset.from_dict(rows)


def training_rows(model) -> list[dict]:
    """The BATCH * N_BATCHES training rows as plain dicts, with ref_logprobs scored by `model`."""
    dataset = make_dataset(BATCH * N_BATCHES, seed=1)
    column = score_reference(model, dataset, PAD, batch_size=8, show_progress=False)
    return dataset.add_column("ref_logprobs", column).to_list()


def make_trainer(name: str, model, rows, output_dir: str):
    args = dict(output_dir=output_dir, per_device_train_batch_size=BATCH, use_cpu=True, report_to="none",
                remove_unused_columns=False, save_strategy="no", disable_tqdm=True, seed=0)
    collator = CompletionCollator(PAD)
    dataset = Dataset.from_list(rows)
    if name == "trl_sft":
        from trl import SFTConfig, SFTTrainer

        config = SFTConfig(loss_type="nll", max_length=None, dataset_kwargs={"skip_prepare_dataset": True}, **args)
        return SFTTrainer(model=model, args=config, train_dataset=dataset.remove_columns("ref_logprobs"),
                          data_collator=collator, processing_class=build_char_tokenizer())
    return IwSftTrainer(model=model, args=TrainingArguments(**args), train_dataset=dataset,
                        data_collator=collator, iw_config=CONFIGS[name])


class Runner:
    """One variant: its own model copy, trainer and optimizer; `step(rows)` runs one training step."""

    def __init__(self, name: str, model, rows, output_dir: str):
        self.name, self.model = name, model
        self.trainer = make_trainer(name, model, rows, output_dir)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        self.collate = CompletionCollator(PAD)
        self.uses_column = name == "iwsft_column"

    def step(self, rows: list[dict]) -> float:
        if not self.uses_column:  # SFT-like runs and the online reference have no column in their data
            rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
        start = time.perf_counter()
        batch = self.collate(rows)
        self.model.train()
        num_items = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
        loss = self.trainer.compute_loss(self.model, batch, num_items_in_batch=num_items)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start


def batches(rows: list[dict]) -> list[list[dict]]:
    return [rows[i * BATCH : (i + 1) * BATCH] for i in range(N_BATCHES)]


def time_steps(rows, output_dir: str) -> dict[str, list[float]]:
    runners = [Runner(name, build_tiny_llama(**MODEL), rows, output_dir) for name in TIMED]
    data = batches(rows)
    for i in range(WARMUP):
        for runner in runners:
            runner.step(data[i % N_BATCHES])
    times: dict[str, list[float]] = {name: [] for name in TIMED}
    deadline = time.perf_counter() + STEP_BUDGET_S
    for r in range(REPS):
        for runner in runners if r % 2 == 0 else runners[::-1]:
            times[runner.name].append(runner.step(data[r % N_BATCHES]))
        if r + 1 >= MIN_REPS and time.perf_counter() > deadline:
            break
    return times


def proc_kb(key: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key + ":"))


def memory_worker(names: list[str]) -> None:
    """Print {variant: peak RSS growth in MB over MEM_STEPS steps}, one variant after the other.
    A first, unrecorded sft run takes the process's one-off allocations (about 8 MB: the first
    backward's engine and kernel caches), which would otherwise land on whichever variant runs first."""
    seed_everything()
    rows = training_rows(build_tiny_llama(**MODEL))
    data = batches(rows)
    peaks = {}
    for n, name in enumerate(["sft", *names]):
        model = build_tiny_llama(**MODEL)
        gc.collect()
        with tempfile.TemporaryDirectory() as output_dir:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")  # reset VmHWM to the current RSS
            baseline = proc_kb("VmRSS")
            runner = Runner(name, model, rows, output_dir)
            for i in range(MEM_STEPS):
                runner.step(data[i % N_BATCHES])
            if n > 0:
                peaks[name] = (proc_kb("VmHWM") - baseline) / 1024
        del runner, model
    print(json.dumps(peaks))


def measure_memory() -> dict[str, float]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run([sys.executable, __file__, "--memory-worker", ",".join(VARIANTS)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_scoring(deadline: float) -> tuple[list[int], dict[str, list[list[float]]]]:
    """Seconds per batch: runs[name][rep][batch]. Each score_reference call gets one batch's
    examples (a sub-dataset), so that it and the bare forward of the same batch run back to back."""
    model = build_tiny_llama(**MODEL).eval()
    dataset = make_dataset(SCORE_EXAMPLES, seed=2)
    lengths = [len(ids) for ids in dataset["input_ids"]]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)  # score_reference's batching
    groups = [order[start : start + SCORE_BATCH] for start in range(0, len(order), SCORE_BATCH)]
    subsets = [dataset.select(group) for group in groups]
    collate = CompletionCollator(PAD)  # right-pads input_ids exactly as score_reference does
    bare_ids = [collate([dataset[i] for i in group])["input_ids"] for group in groups]

    def scoring(i: int) -> None:
        score_reference(model, subsets[i], PAD, batch_size=SCORE_BATCH, show_progress=False)

    def bare(i: int) -> None:
        with torch.inference_mode():
            model(bare_ids[i])

    for i in range(len(groups)):  # warm-up
        scoring(i), bare(i)
    runs: dict[str, list[list[float]]] = {"score_reference": [], "bare_forward": []}
    for r in range(SCORE_REPS):
        for row in runs.values():
            row.append([])
        for i in range(len(groups)):
            pair = [("score_reference", scoring), ("bare_forward", bare)]
            for name, fn in pair if (r + i) % 2 == 0 else pair[::-1]:  # alternate which goes first
                start = time.perf_counter()
                fn(i)
                runs[name][-1].append(time.perf_counter() - start)
        if r + 1 >= MIN_REPS and time.perf_counter() > deadline:
            break
    return [sum(lengths[i] for i in group) for group in groups], runs


def cpu_seconds() -> tuple[float, float]:
    """(CPU s the whole machine was busy since boot, from /proc/stat; CPU s of this process and its
    finished children)."""
    with open("/proc/stat") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:8]]
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), sum(u.ru_utime + u.ru_stime for u in usage)


def machine_info(background_cpu_s: float, wall_s: float) -> dict:
    """Where and when a benchmark ran, with the share of the CPUs other processes took meanwhile."""
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__, "transformers_version": transformers.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "background_cpu_share": round(max(background_cpu_s, 0.0) / (wall_s * (os.cpu_count() or 1)), 3),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def paired(a: list[float], b: list[float]) -> float:
    """Median over rounds of a/b measured in the same round: robust to slow drift in machine load."""
    return statistics.median(x / y for x, y in zip(a, b))


def main() -> None:
    wall, (busy0, own0) = time.perf_counter(), cpu_seconds()
    seed_everything()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"model {sum(p.numel() for p in build_tiny_llama(**MODEL).parameters()) / 1e6:.1f}M params, "
          f"batch {BATCH} x ~{PROMPT_LEN + COMPLETION_LEN[1] + 1} tokens", flush=True)
    if not HAS_TRL:
        print("TRL is not installed: skipping the trl.SFTTrainer comparison", flush=True)
    rows = training_rows(build_tiny_llama(**MODEL))
    with tempfile.TemporaryDirectory() as output_dir:
        times = time_steps(rows, output_dir)
    phase_s = {"setup_and_steps": time.perf_counter() - wall}
    ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    print("step times done; measuring peak memory in a subprocess", flush=True)
    peak = measure_memory()
    phase_s["memory"] = time.perf_counter() - wall - sum(phase_s.values())
    print("memory done; measuring reference scoring", flush=True)
    tokens, runs = measure_scoring(deadline=wall + SCORING_ENDS_BY_S)
    phase_s["scoring"] = time.perf_counter() - wall - sum(phase_s.values())
    per_batch = {name: [statistics.median(rep[i] for rep in reps) for i in range(len(tokens))] for name, reps in runs.items()}
    tps = {name: sum(tokens) / sum(seconds) for name, seconds in per_batch.items()}
    flat = {name: [seconds for rep in reps for seconds in rep] for name, reps in runs.items()}

    # Headline time ratios are paired: the median over rounds (batches, for scoring) of the ratio
    # measured back to back. The ratios of the per-variant medians are kept in "ratio_of_medians".
    over_sft = {name: paired(times[name], times["sft"]) for name in TIMED}
    results = {
        "iw_over_sft_time": over_sft["iwsft_column"],
        "iw_over_sft_mem": peak["iwsft_column"] / peak["sft"],
        "online_over_sft_time": over_sft["iwsft_online"],
        "online_over_sft_mem": peak["iwsft_online"] / peak["sft"],
        "scoring_over_forward_tokens_per_s": paired(flat["bare_forward"], flat["score_reference"]),
        "ours_sft_over_trl_sft_time": paired(times["sft"], times["trl_sft"]) if HAS_TRL else None,
        "ours_sft_over_trl_sft_mem": peak["sft"] / peak["trl_sft"] if HAS_TRL else None,
        "sft_again_over_sft_time": over_sft["sft_again"],  # A/A control: the noise floor
    }
    shown = ["sft", "sft_again", *VARIANTS[1:]]
    of_medians = {f"{name}_over_sft_time": ms[name] / ms["sft"] for name in shown[1:]}
    of_medians["scoring_over_forward_tokens_per_s"] = tps["score_reference"] / tps["bare_forward"]

    print(f"\n{'variant':<14}{'median ms/step':>15}{'min..max':>11}{'paired/sft':>11}{'median/sft':>11}"
          f"{'peak MB':>9}{'mem/sft':>8}")
    for name in shown:
        spread = f"{1000 * min(times[name]):.0f}..{1000 * max(times[name]):.0f}"
        mem = f"{peak[name]:>9.1f}{peak[name] / peak['sft']:>8.3f}" if name in peak else f"{'-':>9}{'-':>8}"
        print(f"{name:<14}{ms[name]:>15.1f}{spread:>11}{over_sft[name]:>11.3f}{ms[name] / ms['sft']:>11.3f}{mem}")
    print(f"\n{'scoring':<16}{'tokens/s':>10}   (medians per batch, {len(runs['bare_forward'])} rounds)")
    for name, value in tps.items():
        print(f"{name:<16}{value:>10.0f}")
    print(f"ratio: paired {results['scoring_over_forward_tokens_per_s']:.3f}, "
          f"of medians {of_medians['scoring_over_forward_tokens_per_s']:.3f}")
    print(f"noise floor: the A/A control sft_again/sft = {over_sft['sft_again']:.3f}; time ratios closer to 1 "
          "than that are within noise\n")

    goals = {key: {"target": f"{op}{target}", "value": round(results[key], 4),
                   "pass": bool(results[key] <= target if op == "<=" else results[key] >= target)}
             for key, (op, target) in GOALS.items()}
    wall_s = time.perf_counter() - wall
    busy, own = cpu_seconds()
    background = (busy - busy0) - (own - own0)  # CPU time other processes used meanwhile
    summary = {
        **{k: (round(v, 4) if v is not None else None) for k, v in results.items()},
        "ratio_of_medians": {k: round(v, 4) for k, v in of_medians.items()},
        "median_ms_per_step": {k: round(v, 1) for k, v in ms.items()},
        "peak_mb": {k: round(v, 1) for k, v in peak.items()},
        "tokens_per_s": {k: round(v) for k, v in tps.items()},
        "goals": goals,
        "all_goals_pass": all(g["pass"] for g in goals.values()),
        "trl": importlib.import_module("trl").__version__ if HAS_TRL else None,
        "setup": {"model": MODEL, "batch": BATCH, "prompt_len": PROMPT_LEN, "completion_len": COMPLETION_LEN,
                  "step_rounds": len(times["sft"]), "score_rounds": len(runs["bare_forward"]),
                  "mem_steps": MEM_STEPS, "score_examples": SCORE_EXAMPLES, "score_batch": SCORE_BATCH},
        "machine": machine_info(background, wall_s),
        "wall_s": round(wall_s, 1),
        "phase_s": {k: round(v, 1) for k, v in phase_s.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-worker", metavar="VARIANT[,VARIANT...]", help="internal: measure peak memory")
    cli = parser.parse_args()
    memory_worker(cli.memory_worker.split(",")) if cli.memory_worker else main()
