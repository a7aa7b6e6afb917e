"""`iwsft registry show|promote VERSION|rollback` and `iwsft generate`: the registry from the shell.

Wired into iwsft.cli.main with add_commands(subparsers) and handle(args). The registry is the one at MLFLOW_TRACKING_URI, else the
project's local store (mlruns/mlflow.db); a server that does not answer is an error that names it
and `make serve` (exit 1), and nothing is changed.

Which registered model: `--name`, else `--profile NAME` (params.yaml with profiles/NAME.yaml on top, as
`iwsft run --profile NAME` layers it), else `--params FILE` (a profiles/ file is layered the same way),
else the last `iwsft run`'s (reports/last_run.json, written when it starts), else params.yaml's
registry.model_name. The record is read without MLflow, so a profile run's models are the default
until the next run.

`iwsft generate` renders each prompt with the model's chat template as the pipeline does
(iwsft.encoding.chat.ChatFormat; `--chat-template`, else params.yaml's model.chat_template), so a chat
model answers as it was trained; a model without a template (the demo's) continues the raw text.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from iwsft.errors import UserError

COMMANDS = ("registry", "generate")
LAST_RUN = Path("reports/last_run.json")  # git-ignored with reports/
DEMO = "demo"  # params.yaml as it is, as in `iwsft run --profile demo`


def add_commands(subparsers) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", help="where registry.model_name is read: params.yaml or a profiles/ file")
    common.add_argument("--profile", help="the registered model of `iwsft run --profile NAME`")
    common.add_argument("--name", help="registered model name (default: the last `iwsft run`'s, else params.yaml's)")
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
    generate.add_argument("--chat-template", metavar="SETTING",
                          help="auto | none | a Jinja file, as model.chat_template (default: params.yaml's)")


def handle(args) -> bool:
    """Run args.command if it is one of ours; False otherwise (the caller handles it)."""
    if args.command == "registry":
        {"show": _show, "promote": _promote, "rollback": _rollback}[args.registry_command](args)
        return True
    if args.command == "generate":
        _generate(args)
        return True
    return False


def record_last_run(profile: str, model_name: str, path: Path = LAST_RUN) -> None:
    """What `iwsft run` ran (its profile and registry.model_name), for the registry commands' default."""
    from iwsft.io.durable import write_json_atomic

    write_json_atomic(path, {"profile": profile, "model_name": model_name})


def last_run(path: Path = LAST_RUN) -> dict | None:
    """The record of record_last_run; None when there is none or it cannot be read."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("model_name"), str) else None


def registered_name(name: str | None = None, profile: str | None = None, params: str | None = None,
                    record: Path = LAST_RUN) -> tuple[str, str]:
    """(the registered model name, where it came from) by the order of the module docstring."""
    from iwsft.config.loading import PROFILES, load_params, profiled
    from iwsft.config.schema import Registry as RegistrySettings

    if name:
        return name, "--name"
    if profile and profile != DEMO:
        return profiled(profile).registry.model_name, f"profile {profile}"
    if params:
        path = Path(params)
        if path.parent.name == PROFILES.name and path.suffix == ".yaml":  # a profile: layered as `iwsft run` does
            if not path.is_file():
                raise UserError(f"--params {params}: no such file")
            return profiled(path.stem, profiles_dir=path.parent).registry.model_name, f"profile {path.stem}"
        return load_params(path).registry.model_name, str(path)
    if profile != DEMO and (last := last_run(record)) is not None and last.get("profile") != DEMO:
        return last["model_name"], f"the last `iwsft run`, profile {last.get('profile')}; {record}"
    if Path("params.yaml").is_file():
        return load_params("params.yaml").registry.model_name, "params.yaml"
    return RegistrySettings().model_name, "the default"  # without params.yaml, the schema's


def _registry(args):
    """(the Registry, where its name came from)."""
    from iwsft.tracking.registry import Registry

    name, source = registered_name(args.name, args.profile, args.params)
    return Registry.connect(name), source


def _show(args) -> None:
    from iwsft.tracking.evaluations import evaluations, version_score
    from iwsft.tracking.store import display_uri

    registry, source = _registry(args)
    versions = registry.versions()
    source = "" if source in ("params.yaml", "--name") else f" ({source})"
    print(f"registered model {registry.name!r}{source} at {display_uri(registry.uri)}")
    if not versions:
        print("no versions yet: the register stage adds them (`dvc repro`, or `make run`)")
        if others := registry.other_models():  # a profile run registers under its own name
            print(f"this store also holds: {', '.join(others)} (`iwsft registry show --name NAME`)")
        return
    by_version: dict[str, list[str]] = {}
    for alias, version in registry.aliases().items():
        by_version.setdefault(str(version), []).append(alias)
    # pass@1 on the latest register run's eval set; "(+N)": the version has results on N more eval sets
    rows = [("version", "aliases", "method", "pass@1", "95% CI", "eval set", "decision", "registered")]
    for v in versions:
        score = version_score(v)
        decision = "rolled back" if v.tags.get("iwsft.rolled_back") == "true" else v.tags.get("iwsft.decision", "")
        rows.append((str(v.version), ", ".join(sorted(by_version.get(str(v.version), []))) or "-",
                     v.tags.get("iwsft.method", "?"), f"{score.value:.3f}" if score else "?",
                     f"[{score.ci_low:.3f}, {score.ci_high:.3f}]" if score else "", _eval_sets(v, evaluations(v)),
                     decision, time.strftime("%Y-%m-%d %H:%M", time.localtime(v.creation_timestamp / 1000))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    champion = next((v for v in versions if "champion" in by_version.get(str(v.version), [])), None)
    if champion is not None and champion.tags.get("iwsft.promotion_reason"):
        print(f"champion v{champion.version}: {champion.tags['iwsft.promotion_reason']}")


def _eval_sets(version, results: dict) -> str:
    latest = version.tags.get("iwsft.eval_set", "")
    more = len(set(results) - {latest})
    return latest[:8] + (f" (+{more})" if more else "")


def _promote(args) -> None:
    registry, _ = _registry(args)
    done = registry.promote(args.version, reason=f"promoted by hand ({time.strftime('%Y-%m-%d %H:%M')})")
    if not done["changed"]:
        print(f"registry: v{done['champion']} already is the champion of {registry.name}")
        return
    registry.tag_version(done["champion"], {"iwsft.decision": "promoted"})
    print(f"registry: {registry.name} champion is now v{done['champion']} "
          f"(previous-champion: v{done['previous_champion'] or '-'})")


def _rollback(args) -> None:
    registry, _ = _registry(args)
    done = registry.rollback()
    print(f"registry: rolled back {registry.name}: champion v{done['demoted']} -> v{done['champion']} "
          f"(previous-champion: v{done['previous_champion'] or '-'})")


def _generate(args) -> None:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" bars between the answers

    if Path(args.model).is_dir():
        from iwsft.model.artifacts import load_model

        model, tokenizer = load_model(args.model, args.trust_remote_code)
    elif args.model.startswith(("models:/", "runs:/")):
        from iwsft.tracking.registry import load_from_registry

        model, tokenizer = load_from_registry(args.model, args.trust_remote_code)
    else:
        raise UserError(f"--model {args.model!r}: not a directory and not a models:/ or runs:/ URI")
    for line in answers(model, tokenizer, args.prompt, chat_template_setting(args.chat_template), args.samples,
                        args.temperature, args.max_new_tokens, args.seed):
        print(line)


def chat_template_setting(given: str | None) -> str:
    """--chat-template, else params.yaml's model.chat_template (the pipeline's), else the schema's `auto`."""
    if given:
        return given
    from iwsft.config.loading import load_params
    from iwsft.config.schema import Model

    if Path("params.yaml").is_file():
        return load_params("params.yaml").model.chat_template
    return Model.model_fields["chat_template"].default


def answers(model, tokenizer, prompts: list[str], chat_template: str = "auto", samples: int = 0,
            temperature: float = 1.0, max_new_tokens: int = 16, seed: int = 0) -> list[str]:
    """What `iwsft generate` prints, one entry per prompt. Each prompt is rendered as the pipeline renders
    it (iwsft.encoding.chat.ChatFormat, the `model.chat_template` setting), so a chat model answers as it was
    trained, up to its end-of-turn token: `PROMPT -> ANSWER`. A model without a template (the demo's)
    continues the text: `PROMPTCOMPLETION`. With samples > 0: `PROMPT -> [the samples]`."""
    from iwsft.encoding.chat import ChatFormat
    from iwsft.evaluation.generation import generate_completions

    chat = ChatFormat.from_setting(chat_template, tokenizer)
    greedy = samples <= 0
    completions = generate_completions(model, tokenizer, prompts, num_samples=max(samples, 1), temperature=temperature,
                                       max_new_tokens=max_new_tokens, seed=seed, greedy=greedy, show_progress=False,
                                       chat=chat)
    if not greedy:
        return [f"{prompt} -> {outputs}" for prompt, outputs in zip(prompts, completions)]
    return [f"{prompt} -> {outputs[0]}" if chat.is_chat else f"{prompt}{outputs[0]}"
            for prompt, outputs in zip(prompts, completions)]
