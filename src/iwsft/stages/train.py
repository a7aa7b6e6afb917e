"""train@METHOD: fine-tune pi_ref with sft, iwsft, sftq, iwsftq or dft on the curated set.

All methods start from the same pi_ref with the same budget, data order seed and learning rate;
only the loss weights (and, for the (Q) methods, the sampling) differ. The reference column is
refused unless its fingerprint matches this data, this base model and this tokenizer.
"""

from __future__ import annotations

import json
import tempfile

import torch
from datasets import Dataset

from iwsft.config.schema import Params, Peft
from iwsft.io.durable import write_json_atomic
from iwsft.encoding.chat import ChatFormat
from iwsft.encoding.sequences import tokenize_dataset
from iwsft.errors import UserError
from iwsft.model.adapters import merged, save_adapter, with_lora
from iwsft.model.artifacts import atomic_directory, load_model, save_model
from iwsft.model.devices import device_and_dtype, training_precision
from iwsft.stages import DATA, MODELS
from iwsft.tracking.runs import track_stage
from iwsft.training.arguments import NoFinalCheckpoint, PruneCheckpoints, fine_tune, optimizer_steps, section_arguments
from iwsft.training.checkpoints import Checkpoints, identity_of
from iwsft.training.launch import is_main_process
from iwsft.training.reference import check_reference, expected_fingerprint
from iwsft.training.summary import train_metrics
from iwsft.training.trainer import IwSftConfig, quality_resample

# train.precision -> the dtype the trained model is saved in
SAVED_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def run(params: Params, method: str) -> None:
    config = params.train
    iw_config = IwSftConfig.from_train(method, config, chunk_size=params.reference.chunk_size)
    # fp32 master weights on the runtime device; bf16 / fp16 (train.precision) is autocast by the Trainer
    device, dtype = device_and_dtype(params)
    model, tokenizer = load_model(params.model.base, params.model.trust_remote_code, device=device)
    reference_dir = DATA / "reference"
    dataset = tokenize_dataset(Dataset.from_parquet(str(reference_dir / "train.parquet")), tokenizer,
                               chat=ChatFormat.from_params(params, tokenizer))  # the tokens the column was scored on
    stored = json.loads((reference_dir / "fingerprint.json").read_text())
    # reference.policy's column only (model.base's, or sample.policy's when it says sampler)
    expected = expected_fingerprint(params, dataset, model, tokenizer, stored, str(reference_dir / "fingerprint.json"))
    check_reference(stored, expected, source=str(reference_dir / "fingerprint.json"))
    lora = params.peft
    if lora.enabled:  # after the fingerprint: the reference column belongs to the base weights
        model = with_lora(model, lora)

    if iw_config.uses_quality and iw_config.quality_mode == "sample":
        dataset = quality_resample(dataset, seed=params.seed)
    elif iw_config.uses_quality:
        dataset = dataset.add_column("sample_weight", [float(m) for m in dataset["multiplicity"]])

    steps = optimizer_steps(config, len(dataset))
    callbacks, checkpoints, resume_from = [], None, None
    if config.save_steps:  # outside the stage's outs, so that a crashed stage's checkpoints survive
        checkpoints = Checkpoints(DATA / "checkpoints" / method, identity_of(method, params, config, stored, lora))
        # the main process tidies the folder; the others read the same answer without touching it
        resume_from = checkpoints.prepare() if is_main_process() else checkpoints.resumable()
        callbacks.append(PruneCheckpoints(checkpoints, config.keep_checkpoints))
        if config.keep_checkpoints == 0:  # the last step's checkpoint would be deleted as soon as written
            callbacks.append(NoFinalCheckpoint())
    precision = training_precision(params, device, dtype)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            trainer = fine_tune(
                model, tokenizer, dataset, iw_config, checkpoints.folder if checkpoints else scratch,
                callbacks=callbacks, resume_from=resume_from,
                **section_arguments(config, steps=steps, seed=params.seed, device=device, precision=precision),
            )
        except torch.OutOfMemoryError as error:  # the same settings would fail the same way: not retried
            raise UserError(
                f"train@{method} ran out of {device} memory ({str(error).splitlines()[0]}). Lower train.batch_size "
                "(raise train.gradient_accumulation to keep the global batch), or set train.gradient_checkpointing: "
                "true, or train.precision: bf16; with train.save_steps set, the next run resumes from the last "
                "checkpoint") from None
    if not is_main_process():  # several processes (iwsft.training.launch): the main one writes the outputs
        return
    # saved in the dtype it trained in (bf16 on a GPU, fp32 on the CPU): half the disk of an fp32 copy
    # in the models/ folder, the DVC cache and every registry version
    save = dict(tokenizer=tokenizer, lora=lora, base_dir=params.model.base, dtype=SAVED_DTYPES[precision])
    with atomic_directory(MODELS / method) as directory:
        save_trained(model, directory=directory, **save)
    log_dir = DATA / "train" / method
    if trainer.ema_model is not None:  # q_mode ema: evaluation's iw bound needs the q that was trained with
        with atomic_directory(log_dir / "q_model") as directory:
            save_trained(trainer.ema_model, directory=directory, **save)
    write_json_atomic(log_dir / "train_log.json", trainer.state.log_history)
    write_json_atomic(log_dir / "weights.json", trainer.weight_history)
    # a DVC metric (outside the stage's folder out): steps, final loss, the weights' mean / std / ESS (iwsft study reads it)
    write_json_atomic(DATA / "train_metrics" / f"{method}.json", train_metrics(method, trainer.state.log_history))
    track_stage(f"train@{method}", params, sections=["seed", "model", "train"], method=method,
                history=trainer.state.log_history, artifacts=[log_dir / "weights.json"])
    if checkpoints:
        checkpoints.finish(keep=config.keep_checkpoints)  # the stage's work is all done: no longer needed


def save_trained(model, tokenizer, directory, lora: Peft, base_dir, dtype) -> None:
    """The trained model as evaluation and the registry load it: plain (full fine-tuning), merged
    (LoRA, peft.merge: true) or the adapter alone with a record of its base (peft.merge: false)."""
    if not lora.enabled:
        save_model(model, tokenizer, directory, dtype=dtype)
    elif lora.merge:
        save_model(merged(model), tokenizer, directory, dtype=dtype)
    else:
        save_adapter(model, tokenizer, directory, base_dir)
