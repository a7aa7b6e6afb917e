"""What the training knobs cost, side by side on run.py's model and batches (its docstring has the set-up):
gradient checkpointing against a plain step, and LoRA (r = 16 on every linear layer) against full
fine-tuning, all three iw-SFT with the reference column.

Run: `make bench` runs it after run.py (about a minute). Step times are paired per round (the median of
back-to-back ratios, as in run.py); peak memory is VmHWM growth over MEM_STEPS steps in one fresh
subprocess, variant after variant, as in run.py's memory worker. The last stdout line is one JSON object.
No goals: these are trade-offs to read (checkpointing buys activation memory with a second forward; LoRA
saves the optimizer state and the weights' gradients, not the forward or the activations).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import run  # noqa: E402  (benchmarks/run.py: model, data, Runner, memory helpers)

from iwsft.model.adapters import with_lora  # noqa: E402

VARIANTS = ("full", "checkpointing", "lora")
REPS, STEP_BUDGET_S = 12, 45


def build(variant: str):
    model = run.build_tiny_llama(**run.MODEL)
    if variant == "checkpointing":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if variant == "lora":
        model = with_lora(model, {"r": 16, "alpha": 32.0, "dropout": 0.0, "target_modules": "all-linear"})
    return model


def runner(variant: str, rows, output_dir: str):
    return run.Runner("iwsft_column", build(variant), rows, output_dir)


def time_steps(rows) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as output_dir:
        runners = {variant: runner(variant, rows, output_dir) for variant in VARIANTS}
        data = run.batches(rows)
        for i in range(run.WARMUP):
            for one in runners.values():
                one.step(data[i % run.N_BATCHES])
        times = {variant: [] for variant in VARIANTS}
        deadline = time.perf_counter() + STEP_BUDGET_S
        for r in range(REPS):
            for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                times[variant].append(runners[variant].step(data[r % run.N_BATCHES]))
            if r + 1 >= run.MIN_REPS and time.perf_counter() > deadline:
                break
    return times


def memory_worker() -> None:
    run.seed_everything()
    rows = run.training_rows(run.build_tiny_llama(**run.MODEL))
    data = run.batches(rows)
    peaks = {}
    for n, variant in enumerate(["full", *VARIANTS]):  # the first, unrecorded, takes one-off allocations
        gc.collect()
        with tempfile.TemporaryDirectory() as output_dir:
            model = build(variant)
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
            baseline = run.proc_kb("VmRSS")
            one = run.Runner("iwsft_column", model, rows, output_dir)
            for i in range(run.MEM_STEPS):
                one.step(data[i % run.N_BATCHES])
            if n > 0:
                peaks[variant] = (run.proc_kb("VmHWM") - baseline) / 1024
            del one, model
    print(json.dumps(peaks))


def main() -> None:
    run.seed_everything()
    rows = run.training_rows(run.build_tiny_llama(**run.MODEL))
    times = time_steps(rows)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    memory = json.loads(subprocess.run([sys.executable, __file__, "--memory-worker"], env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True, check=True).stdout.strip().splitlines()[-1])
    summary = {
        "checkpointing_over_plain_time": round(run.paired(times["checkpointing"], times["full"]), 3),
        "checkpointing_over_plain_mem": round(memory["checkpointing"] / memory["full"], 3),
        "lora_over_full_time": round(run.paired(times["lora"], times["full"]), 3),
        "lora_over_full_mem": round(memory["lora"] / memory["full"], 3),
        "step_s_median": {variant: round(statistics.median(values), 4) for variant, values in times.items()},
        "peak_mb": {variant: round(value, 1) for variant, value in memory.items()},
        "rounds": len(times["full"]),
    }
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(json.dumps(summary))


if __name__ == "__main__":
    if sys.argv[1:] == ["--memory-worker"]:
        memory_worker()
    else:
        main()
