"""Generation (issue 30): our decode loop against a bare `model.generate` loop on the same prompts, and
against the roofline of the machine's matmul throughput.

Run: `make bench` runs it after head.py (2-5 minutes on a shared 2-core machine), or
`.venv/bin/python benchmarks/generation.py [--profile]`.

* Model: SmolLM2-135M-Instruct from data/models/smollm2-135m-instruct when imported (fp32), else a Llama
  of its shape with random weights. Prompts: PROMPTS short questions rendered with the chat template
  (~40 tokens, ~30 of them the template's system prompt); without the real model, random ids of the same
  lengths behind one shared 31-token prefix.
* Sample-style: K samples per prompt at T = 1, MAX_NEW tokens at most. Ours: `sample_completions`
  (batch_size = all rows). Bare: `model.generate(do_sample=True)` with a neutral config (only the
  temperature; top_k=0) on the K-times-repeated, left-padded prompts in one batch, as the project did
  before. Evaluate-style: K samples + one greedy per prompt: ours `sample_with_greedy`, bare the same
  generate plus a greedy generate.
* Tokens/s = new tokens up to and including the first stop token (what a completion is) per CPU second
  of this process (time.process_time; one thread, so a quiet machine's wall time), because on a shared
  machine the wall clock mostly measures the other processes; the wall-clock ratios are reported beside
  them (`wall_clock_over_bare`). The bare loop also computes rows after their stop, which is part of its
  cost. Rounds run ours and bare back to back, the order reversed every round; the ratio is the median
  of the per-round ratios.
* Roofline: (unique prompt tokens + generated tokens) x 2 x parameters / the matmul FLOP/s measured on
  the model's own weight shapes (every nn.Linear's, lm_head included) at the decode batch (rows =
  prompts x K), measured again in each round, per CPU second. Unique prompt tokens = the shared prefix
  once + each prompt's own rest. The fraction is roofline time / our CPU time in the same round (median
  over rounds): what is left is attention, norms, rotary, the sampler, Python, and matmuls slower inside
  the model than alone.
* Scoring (`scoring_whole_over_prefix_shared`): the last sample-style run's K x PROMPTS completions scored
  whole (score_reference, what sample and evaluate did before) and with each prompt pre-filled once
  (iwsft.evaluation.prefix_scoring, what they do now), 64 rows a batch, CPU seconds of each, once.
* Threads: 1 (BENCH_THREADS), as run.py: the machine is shared. `--profile` prints torch.profiler's
  top operators of one ours and one bare sample-style run.
The last stdout line is one JSON object; `generation_over_bare_tokens_per_s` (sample-style, goal >= 2.0)
and `generation_roofline_fraction` (goal >= 0.6) are its headline keys.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import run  # noqa: E402  (benchmarks/run.py: machine and CPU-share helpers)

import torch  # noqa: E402
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

from iwsft.encoding.chat import ChatFormat  # noqa: E402
from iwsft.evaluation.kv_cache import shared_prefix_length  # noqa: E402
from iwsft.evaluation.generation import sample_completions, sample_with_greedy, stop_token_ids  # noqa: E402

SMOLLM2 = Path(__file__).resolve().parents[1] / "data" / "models" / "smollm2-135m-instruct"
PROMPTS, K, MAX_NEW, ROUNDS = 16, 4, 32, int(os.environ.get("BENCH_GEN_ROUNDS", "2"))
QUESTIONS = ["What is {a} plus {b}?", "Name a colour and a fruit.", "What is {a} times {b}?",
             "Spell the word cat backwards.", "Is {a} larger than {b}?", "Give me a synonym for happy."]


def load():
    if (SMOLLM2 / "iwsft_import.json").is_file():
        from transformers import AutoModelForCausalLM

        from iwsft.model.artifacts import load_tokenizer
        tokenizer = load_tokenizer(SMOLLM2)
        model = AutoModelForCausalLM.from_pretrained(SMOLLM2, dtype=torch.float32).eval()
        chat = ChatFormat.from_setting("auto", tokenizer)
        texts = [QUESTIONS[i % len(QUESTIONS)].format(a=3 * i + 7, b=11 * i + 2) for i in range(PROMPTS)]
        return model, tokenizer, chat, texts, [chat.prompt_ids(t) for t in texts], "smollm2-135m-instruct"
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
                         max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    ids = torch.randint(3, 49152, (PROMPTS, 12)).tolist()
    prefix = torch.randint(3, 49152, (31,)).tolist()
    prompts = [prefix + row[: 6 + i % 7] for i, row in enumerate(ids)]
    texts = [str(i) for i in range(PROMPTS)]
    return LlamaForCausalLM(config).eval(), Ids(dict(zip(texts, prompts)), 2), None, texts, prompts, \
        "random SmolLM2-shaped Llama"


def new_tokens(rows: list[list[int]], stops: set[int]) -> int:
    return sum(next((i + 1 for i, t in enumerate(r) if t in stops), len(r)) for r in rows)


def bare(model, prompts, stops, pad, repeats: int, greedy: bool) -> list[list[int]]:
    flat = [p for p in prompts for _ in range(repeats)]
    longest = max(len(p) for p in flat)
    ids = torch.tensor([[pad] * (longest - len(p)) + p for p in flat])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in flat])
    config = GenerationConfig(do_sample=not greedy, max_new_tokens=MAX_NEW, eos_token_id=sorted(stops),
                              pad_token_id=pad, **({} if greedy else dict(top_k=0, top_p=1.0, temperature=1.0)))
    saved, model.generation_config = model.generation_config, config
    try:
        with torch.inference_mode():
            return model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, longest:].tolist()
    finally:
        model.generation_config = saved


class Ids:
    """A tokenizer stand-in for prompts that are already ids (sample_completions' plain path)."""

    def __init__(self, by_text: dict[str, list[int]], eos: int):
        self.by_text, self.eos_token_id, self.pad_token_id = by_text, eos, eos

    def __call__(self, text):
        return {"input_ids": self.by_text[text]}

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def ours(model, tokenizer, chat, texts, evaluate: bool):
    kwargs = dict(max_new_tokens=MAX_NEW, seed=0, batch_size=len(texts) * (K + 1), show_progress=False, chat=chat)
    if evaluate:
        samples, greedy = sample_with_greedy(model, tokenizer, texts, num_samples=K, **kwargs)
        return [c for s in samples for c in s] + greedy
    return [c for s in sample_completions(model, tokenizer, texts, num_samples=K, **kwargs) for c in s]


def matmul_flops_per_s(model, rows: int, repeats: int = 3) -> float:
    """FLOP/s (per CPU second) of F.linear on every nn.Linear weight of the model (lm_head included), at
    `rows` rows: the median of `repeats` passes over all of them."""
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    flops = sum(2 * rows * w.shape[0] * w.shape[1] for w in weights)
    seconds = []
    with torch.inference_mode():
        xs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in weights}
        for _ in range(repeats):
            start = time.process_time()
            for w in weights:
                torch.nn.functional.linear(xs[w.shape[1]], w)
            seconds.append(time.process_time() - start)
    return flops / statistics.median(seconds)


def timed(fn):
    """(result, CPU seconds of this process, wall seconds)."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def scoring_over_whole(model, prompts, completions) -> dict:
    """Trajectory log-probs of the same rows (each prompt's K samples) scored whole (score_reference, as
    before issue 30) and with each prompt pre-filled once (prefix_scoring.score_trajectories, what sample
    and evaluate use), 64 rows a batch: CPU seconds, and whole / prefix."""
    from datasets import Dataset

    from iwsft.evaluation.prefix_scoring import score_trajectories
    from iwsft.training.reference import score_reference

    rows = Dataset.from_list([{"input_ids": p + c, "labels": [-100] * len(p) + c} for p, c in zip(prompts, completions)])
    _, whole, _ = timed(lambda: score_reference(model, rows, 0, batch_size=64, show_progress=False))
    _, shared, _ = timed(lambda: score_trajectories(model, rows, 64))
    return {"whole_cpu_s": round(whole, 2), "prefix_shared_cpu_s": round(shared, 2), "whole_over_prefix": round(whole / shared, 3)}


def profile_top(fn, label: str) -> None:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as p:
        fn()
    print(f"--- {label}", file=sys.stderr)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=8), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators")
    cli = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    wall, (busy0, own0) = time.perf_counter(), run.cpu_seconds()
    model, tokenizer, chat, texts, prompts, name = load()
    stops = set(stop_token_ids(model, tokenizer))
    if chat is not None:
        stops.add(chat.end_of_turn_id)
    pad = min(stops)
    shared = shared_prefix_length(prompts)
    unique_prompt_tokens = shared + sum(len(p) - shared for p in prompts)
    params = sum(p.numel() for p in model.parameters())
    rates = []
    runs = {"ours_sample": [], "bare_sample": [], "ours_evaluate": [], "bare_evaluate": []}
    for r in range(ROUNDS):
        rates.append(matmul_flops_per_s(model, PROMPTS * K))  # each round: the load drifts
        order = ["ours", "bare"] if r % 2 == 0 else ["bare", "ours"]
        for style in ("sample", "evaluate"):
            for who in order:
                if who == "ours":
                    out, seconds, wall_seconds = timed(lambda: ours(model, tokenizer, chat, texts, style == "evaluate"))
                    count = sum(len(c.token_ids) + c.finished for c in out)
                else:
                    def go():
                        rows = bare(model, prompts, stops, pad, K, False)
                        return rows + (bare(model, prompts, stops, pad, 1, True) if style == "evaluate" else [])
                    out, seconds, wall_seconds = timed(go)
                    count = new_tokens(out, stops)
                runs[f"{who}_{style}"].append((count, seconds, wall_seconds))
    tps = {k: [c / s for c, s, _ in v] for k, v in runs.items()}  # per CPU second
    wall_tps = {k: [c / w for c, _, w in v] for k, v in runs.items()}
    over = {style: statistics.median(o / b for o, b in zip(tps[f"ours_{style}"], tps[f"bare_{style}"]))
            for style in ("sample", "evaluate")}
    wall_over = {style: statistics.median(o / b for o, b in zip(wall_tps[f"ours_{style}"], wall_tps[f"bare_{style}"]))
                 for style in ("sample", "evaluate")}
    # per round: the work at that round's matmul rate / our CPU time in the same round
    work = [(unique_prompt_tokens + count) * 2 * params for count, _, _ in runs["ours_sample"]]
    fractions = [flops / rate / seconds for flops, rate, (_, seconds, _) in zip(work, rates, runs["ours_sample"])]
    fraction = statistics.median(fractions)
    last = ours(model, tokenizer, chat, texts, False)  # K rows per prompt, in prompt order
    scoring = scoring_over_whole(model, [p for p in prompts for _ in range(K)],
                                 [c.token_ids + ([c.stop_token_id] if c.finished else []) for c in last])
    if cli.profile:
        profile_top(lambda: ours(model, tokenizer, chat, texts, False), "ours, sample-style")
        profile_top(lambda: bare(model, prompts, stops, pad, K, False), "bare generate, sample-style")
    wall_s = time.perf_counter() - wall
    busy, own = run.cpu_seconds()
    print(json.dumps({
        "generation_over_bare_tokens_per_s": round(over["sample"], 3),
        "generation_roofline_fraction": round(fraction, 3),
        "generation_evaluate_over_bare_tokens_per_s": round(over["evaluate"], 3),
        "wall_clock_over_bare": {k: round(v, 3) for k, v in wall_over.items()},
        "tokens_per_cpu_s": {k: round(statistics.median(v), 1) for k, v in tps.items()},
        "tokens_per_wall_s": {k: round(statistics.median(v), 1) for k, v in wall_tps.items()},
        "scoring_whole_over_prefix_shared": scoring,
        "goals": {"over_bare": {"goal": 2.0, "pass": over["sample"] >= 2.0},
                  "roofline_fraction": {"goal": 0.6, "pass": fraction >= 0.6}},
        "roofline": {"matmul_gflop_per_cpu_s": [round(r / 1e9, 1) for r in rates],
                     "fractions": [round(f, 3) for f in fractions],
                     "parameters": params, "shared_prefix": shared, "unique_prompt_tokens": unique_prompt_tokens,
                     "generated_tokens": [c for c, _, _ in runs["ours_sample"]],
                     "ours_cpu_s": [round(s, 1) for _, s, _ in runs["ours_sample"]]},
        "setup": {"model": name, "prompts": PROMPTS, "k": K, "max_new_tokens": MAX_NEW, "rounds": ROUNDS,
                  "prompt_tokens": [len(p) for p in prompts]},
        "machine": run.machine_info((busy - busy0) - (own - own0), wall_s),
        "wall_s": round(wall_s, 1),
    }))


if __name__ == "__main__":
    main()
