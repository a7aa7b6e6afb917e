"""What a dataset source's path is (hub, glob, folder, file) and the file the `sources` stage writes for it,
without the readers: params' checks (iwsft.config.schema) import this, and every stage depends on them."""

from __future__ import annotations

from pathlib import Path

HUB = "hf://datasets/"
GLOB_CHARACTERS = "*?["


def kind(path: str) -> str:
    """hub | glob | folder | file."""
    if path.startswith(HUB):
        return "hub"
    if any(character in path for character in GLOB_CHARACTERS):
        return "glob"
    return "folder" if Path(path).is_dir() else "file"


SOURCES_DIR = "data/sources"  # the `sources` stage's outputs: NAME.jsonl (records) and NAME.json (fingerprint)


def materialised(name: str) -> str:
    return f"{SOURCES_DIR}/{name}.jsonl"


def input_problems(inputs: dict[str, str], sources: dict) -> list[str]:
    """An input setting (curate.raw, ...) is a file DVC can depend on: a dataset is declared under `sources:`
    and the setting names the file the `sources` stage writes for it."""
    problems = []
    for key, value in inputs.items():
        if kind(value) in ("hub", "glob"):
            problems.append(f"{key}: {value} is a dataset, not a file: declare it as `sources: {{NAME: {value}}}` "
                            f"and set {key}: {materialised('NAME')}")
        elif value.startswith(SOURCES_DIR + "/") and value.endswith(".jsonl"):
            name = value.removeprefix(SOURCES_DIR + "/").removesuffix(".jsonl")
            if name not in sources:
                problems.append(f"{key}: {value} is written by the `sources` stage, but no sources.{name} is declared "
                                f"(declared: {', '.join(sources) or 'none'})")
    return problems
