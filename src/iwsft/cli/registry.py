"""`iwsft registry show|promote VERSION|rollback` and `iwsft generate`: the registry from the shell.

Wired into iwsft.cli.main with add_commands(subparsers) and handle(args). The registry is the one at MLFLOW_TRACKING_URI, else the
project's local store (mlruns/mlflow.db); a server that does not answer is an error that names it
and `make serve` (exit 1), and nothing is changed.
"""

from __future__ import annotations

import argparse
import time

from iwsft.errors import UserError

COMMANDS = ("registry", "generate")


def add_commands(subparsers) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="where registry.model_name is read")
    common.add_argument("--name", help="registered model name (default: params.yaml registry.model_name)")
    registry = subparsers.add_parser("registry", help="the MLflow model registry: show, promote, roll back")
    actions = registry.add_subparsers(dest="registry_command", required=True)
    actions.add_parser("show", parents=[common], help="versions, aliases and metrics")
    promote = actions.add_parser("promote", parents=[common], help="make VERSION the champion (by hand)")
    promote.add_argument("version")
    actions.add_parser("rollback", parents=[common], help="restore previous-champion as champion")

    generate = subparsers.add_parser("generate", help="complete prompts with a model (HF dir or models:/NAME@ALIAS)")
    generate.add_argument("--model", required=True,
                          help="models:/NAME@champion, models:/NAME/3, or a local HF directory")
    generate.add_argument("--prompt", action="append", required=True, help="repeat for several prompts")
    generate.add_argument("--max-new-tokens", type=int, default=16)
    generate.add_argument("--samples", type=int, default=0, help="0: greedy; n: n samples per prompt at --temperature")
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--trust-remote-code", action="store_true", help="only for models whose code you trust")


def handle(args) -> bool:
    """Run args.command if it is one of ours; False otherwise (the caller handles it)."""
    if args.command == "registry":
        {"show": _show, "promote": _promote, "rollback": _rollback}[args.registry_command](args)
        return True
    if args.command == "generate":
        _generate(args)
        return True
    return False


def _registry(args):
    from pathlib import Path

    from iwsft.config.loading import load_params
    from iwsft.config.schema import Registry as RegistrySettings
    from iwsft.tracking.registry import Registry

    name = args.name
    if not name:  # params.yaml's registry.model_name; without the file, the schema's default
        settings = load_params(args.params).registry if Path(args.params).is_file() else RegistrySettings()
        name = settings.model_name
    return Registry.connect(name)


def _show(args) -> None:
    from iwsft.tracking.registry import version_score
    from iwsft.tracking.store import display_uri

    registry = _registry(args)
    versions = registry.versions()
    print(f"registered model {registry.name!r} at {display_uri(registry.uri)}")
    if not versions:
        print("no versions yet: the register stage adds them (`dvc repro`, or `make run`)")
        if others := registry.other_models():  # a profile run registers under its own name
            print(f"this store also holds: {', '.join(others)} (`iwsft registry show --name NAME`)")
        return
    by_version: dict[str, list[str]] = {}
    for alias, version in registry.aliases().items():
        by_version.setdefault(str(version), []).append(alias)
    rows = [("version", "aliases", "method", "pass@1", "95% CI", "decision", "registered")]
    for v in versions:
        score = version_score(v)
        decision = "rolled back" if v.tags.get("iwsft.rolled_back") == "true" else v.tags.get("iwsft.decision", "")
        rows.append((str(v.version), ", ".join(sorted(by_version.get(str(v.version), []))) or "-",
                     v.tags.get("iwsft.method", "?"), f"{score.value:.3f}" if score else "?",
                     f"[{score.ci_low:.3f}, {score.ci_high:.3f}]" if score else "",
                     decision, time.strftime("%Y-%m-%d %H:%M", time.localtime(v.creation_timestamp / 1000))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    champion = next((v for v in versions if "champion" in by_version.get(str(v.version), [])), None)
    if champion is not None and champion.tags.get("iwsft.promotion_reason"):
        print(f"champion v{champion.version}: {champion.tags['iwsft.promotion_reason']}")


def _promote(args) -> None:
    registry = _registry(args)
    done = registry.promote(args.version, reason=f"promoted by hand ({time.strftime('%Y-%m-%d %H:%M')})")
    if not done["changed"]:
        print(f"registry: v{done['champion']} already is the champion of {registry.name}")
        return
    registry.tag_version(done["champion"], {"iwsft.decision": "promoted"})
    print(f"registry: {registry.name} champion is now v{done['champion']} "
          f"(previous-champion: v{done['previous_champion'] or '-'})")


def _rollback(args) -> None:
    registry = _registry(args)
    done = registry.rollback()
    print(f"registry: rolled back {registry.name}: champion v{done['demoted']} -> v{done['champion']} "
          f"(previous-champion: v{done['previous_champion'] or '-'})")


def _generate(args) -> None:
    from pathlib import Path

    from transformers.utils import logging as transformers_logging

    from iwsft.evaluation.generation import generate_completions

    transformers_logging.disable_progress_bar()  # "Loading weights" bars between the answers

    if Path(args.model).is_dir():
        from iwsft.model.artifacts import load_model

        model, tokenizer = load_model(args.model, args.trust_remote_code)
    elif args.model.startswith(("models:/", "runs:/")):
        from iwsft.tracking.registry import load_from_registry

        model, tokenizer = load_from_registry(args.model, args.trust_remote_code)
    else:
        raise UserError(f"--model {args.model!r}: not a directory and not a models:/ or runs:/ URI")
    greedy = args.samples <= 0
    completions = generate_completions(model, tokenizer, args.prompt, num_samples=max(args.samples, 1),
                                       temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                       seed=args.seed, greedy=greedy, show_progress=False)
    for prompt, outputs in zip(args.prompt, completions):
        print(f"{prompt}{outputs[0]}" if greedy else f"{prompt} -> {outputs}")
