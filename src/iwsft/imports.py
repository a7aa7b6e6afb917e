"""Which of the package's own source files a stage runs: the import closure of its module.

dvc.yaml must list every such file among the stage's deps, or a code change leaves stale outputs
that `dvc repro` calls up to date. tests/unit/test_dvc_deps.py checks dvc.yaml against this, and
`python -m iwsft.imports STAGE_MODULE` prints the files (what to paste into dvc.yaml).

Static (ast), so imports inside functions count too, as they should: they run. No heavy imports.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1]  # .../src
PACKAGE = "iwsft"

# Imported by every stage, yet no output byte depends on them: changing one must not re-run the DAG.
OUTPUT_NEUTRAL = {
    "iwsft/io/durable.py": "how outputs reach the disk (synced, renamed into place), not what they hold",
    "iwsft/runtime.py": "whether progress bars are shown",
    "iwsft/errors.py": "exception classes: the wording of a failure, not the outputs of a success",
    "iwsft/tracking/runs.py": "what is logged to MLflow; outputs are written before it is called",
    "iwsft/tracking/store.py": "which MLflow store the logging goes to",
    "iwsft/tracking/lineage.py": "the git state and dvc.lock hashes MLflow runs are tagged with",
    "iwsft/tracking/retry.py": "how often an MLflow call is tried, not what it does",
    "iwsft/tracking/server.py": "where the MLflow store is",
}


def module_file(name: str) -> Path | None:
    """src/iwsft/a/b.py or src/iwsft/a/b/__init__.py for 'iwsft.a.b'; None outside the package."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path) -> set[str]:
    """Every absolute module name `path` imports, including `from pkg import submodule`."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # maybe submodules
    return names


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(module: str) -> set[str]:
    """Paths relative to src/ ('iwsft/stages/train.py', ...) of every package file `module` runs."""
    seen: set[Path] = set()
    pending = _with_parents(module)
    while pending:
        path = module_file(pending.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        for name in _imported_names(path):
            pending.extend(_with_parents(name))
    return {path.relative_to(SRC).as_posix() for path in seen}


def is_package_marker(path: str) -> bool:
    """An __init__.py that holds only its docstring: it says what the folder is, and runs nothing."""
    if not path.endswith("/__init__.py"):
        return False
    body = ast.parse((SRC / path).read_text()).body
    return len(body) <= 1 and all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def output_neutral(path: str) -> bool:
    return path in OUTPUT_NEUTRAL or is_package_marker(path)


def stage_sources(module: str) -> list[str]:
    """The closure minus the output-neutral files, sorted: what dvc.yaml's deps must cover."""
    return sorted(path for path in closure(module) if not output_neutral(path))


def dvc_deps(module: str) -> list[str]:
    """stage_sources with a whole package folder in place of its files where the stage runs every
    file of it: `src/iwsft/gates` rather than its six modules. A folder holding an output-neutral
    file the stage would not otherwise depend on stays listed file by file."""
    needed = set(stage_sources(module))
    folders = {}
    for path in needed:
        folder = path.rpartition("/")[0]
        if folder != PACKAGE:
            folders.setdefault(folder, set()).add(path)
    whole = {folder for folder, files in folders.items()
             if {path for p in (SRC / folder).glob("*.py")
                 if not output_neutral(path := p.relative_to(SRC).as_posix()) or is_package_marker(path)}
             == files | {f"{folder}/__init__.py"}}
    return sorted({path.rpartition("/")[0] if path.rpartition("/")[0] in whole else path for path in needed})


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg}:")
        for path in dvc_deps(arg):
            print(f"  - src/{path}")
