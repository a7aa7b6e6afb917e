"""GPU smoke check of the training path (run by hand on a CUDA machine; not part of `make test`).

    PYTHONPATH=src:tests python scripts/gpu_check.py OUT_DIR

Checks, on one GPU: (1) chunked fp32 token log-probs from bf16 logits match a full fp32
log-softmax and use far less peak memory; (2) gradient accumulation 1x4 == 4x1 on CUDA (fp32);
(3) a bf16 IwSftTrainer run of a ~20M Llama for 30 steps: finite, decreasing loss, weights near 1
at the start; column vs online reference step time. Writes gpu_check.json to OUT_DIR.
"""

import json
import sys
import tempfile
import time

import torch

from iwsft.training import kernels
from iwsft.model.tiny_lm import build_char_tokenizer, build_tiny_llama
from iwsft.training.trainer import IwSftConfig
from support import flat_parameters, make_trainer, tiny_model, toy_dataset


def logprob_memory(result):
    torch.manual_seed(0)
    logits = torch.randn(4, 1024, 32000, device="cuda", dtype=torch.bfloat16)
    labels = torch.randint(0, 32000, (4, 1024), device="cuda")
    for name, fn in (
        ("full_fp32", lambda: torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels[:, 1:, None])[..., 0]),
        ("chunked", lambda: kernels.token_logprobs(logits, labels, chunk_size=1024)[0]),
    ):
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        value = fn(); torch.cuda.synchronize()
        result[f"logprob_peak_extra_mb_{name}"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        result[f"_{name}"] = value
    result["logprob_max_abs_diff"] = float((result.pop("_full_fp32") - result.pop("_chunked")).abs().max())


def accumulation_on_cuda(result):
    tokenizer = build_char_tokenizer()
    data = toy_dataset(tokenizer, n=4)
    params = []
    for batch, accumulation in ((4, 1), (1, 4)):
        model = tiny_model(0, tokenizer)
        with tempfile.TemporaryDirectory() as out:
            make_trainer(model, data, tokenizer, out, batch, accumulation, use_cpu=False).train()
        params.append(flat_parameters(model).cpu())
    result["accumulation_max_abs_diff"] = float((params[0] - params[1]).abs().max())


def bf16_training(result):
    tokenizer = build_char_tokenizer()
    from datasets import Dataset
    from iwsft.training.reference import score_reference
    from iwsft.encoding.sequences import tokenize_dataset
    rows = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(40) for b in range(40)]
    data = tokenize_dataset(Dataset.from_list(rows), tokenizer)
    for source in ("column", "online"):
        model = build_tiny_llama(len(tokenizer), hidden_size=512, intermediate_size=2048, num_layers=6,
                                 num_heads=8, seed=0).cuda()
        train = data
        if source == "column":
            column = score_reference(model, data, tokenizer.pad_token_id, batch_size=256, show_progress=False)
            train = data.add_column("ref_logprobs", column)
        with tempfile.TemporaryDirectory() as out:
            trainer = make_trainer(model, train, tokenizer, out, 64, 1, steps=30, use_cpu=False, bf16=True, lr=1e-3, optim="adamw_torch",
                                   iw_config=IwSftConfig(method="iwsft", reference_source=source))
            torch.cuda.synchronize(); start = time.perf_counter()
            trainer.train(); torch.cuda.synchronize()
            result[f"bf16_{source}_seconds_30_steps"] = time.perf_counter() - start
        logs = [e for e in trainer.state.log_history if "loss" in e and "weight_mean" in e]
        result[f"bf16_{source}_first_loss"], result[f"bf16_{source}_last_loss"] = logs[0]["loss"], logs[-1]["loss"]
        result[f"bf16_{source}_first_weight_mean"] = logs[0]["weight_mean"]
        result[f"bf16_{source}_max_weight"] = max(e["weight_max"] for e in logs)
        result["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6


if __name__ == "__main__":
    out = sys.argv[1]
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for check in (logprob_memory, accumulation_on_cuda, bf16_training):
        try:
            check(result)
        except Exception as error:  # report every check, even when one breaks
            result[f"{check.__name__}_error"] = repr(error)
    print(json.dumps(result, indent=1))
    with open(f"{out}/gpu_check.json", "w") as handle:
        json.dump(result, handle, indent=1)
