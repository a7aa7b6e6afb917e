"""One training step of IwSftTrainer, run by test_ddp.py under 1 or 2 processes (torchrun, gloo)."""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from iwsft.model.tiny_lm import build_char_tokenizer  # noqa: E402
from iwsft.training.trainer import IwSftConfig  # noqa: E402
from support import make_trainer, tiny_model, toy_dataset  # noqa: E402


# a run name -> IwSftConfig's keywords, for runs that are not a bare method name
VARIANTS = {"iwsft_self": dict(method="iwsft", weight_normalization="self")}


def main(output_dir: str, per_device_batch: int, methods: str) -> None:
    """One step per method or VARIANTS name (comma-separated), each from the same fresh model, in one launch
    (a launch costs far more than a step); run M's results go to OUTPUT_DIR/M/."""
    torch.set_num_threads(1)
    tokenizer = build_char_tokenizer()
    dataset = toy_dataset(tokenizer, n=4)
    for method in methods.split(","):
        folder = f"{output_dir}/{method}"
        model = tiny_model(0, tokenizer)
        trainer = make_trainer(model, dataset, tokenizer, folder, per_device_batch, 1,
                               iw_config=IwSftConfig(**VARIANTS.get(method, dict(method=method))), ddp_backend="gloo")
        result = trainer.train()
        if trainer.args.process_index == 0:
            save_file({k: v.detach().clone() for k, v in model.named_parameters()}, f"{folder}/params.safetensors")
            Path(f"{folder}/result.json").write_text(
                json.dumps({"loss": result.training_loss, "world_size": trainer.args.world_size})
            )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
