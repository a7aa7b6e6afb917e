"""Dataset sources: where a samples or prompts file's records come from, resolved to records + a fingerprint.

A source (params `sources.NAME`, iwsft.config.schema.Source; or a plain string) is one of:

  data/raw.jsonl, x.parquet          a local file, read by the checked readers as always (1-based JSONL lines)
  data/shards/*.parquet              a glob of .jsonl / .parquet shards, concatenated in sorted order; a problem
                                     is named by its shard and line (or row index) there
  data/my_dataset/                   a `datasets.Dataset.save_to_disk` folder (a DatasetDict: give `split`)
  hf://datasets/OWNER/NAME[@REV]     a hub dataset in the local Hugging Face cache (HF_HUB_CACHE), never
                                     the network: REV a branch, tag or commit (default main); `config` and
                                     `split` as in datasets.load_dataset. One not in the cache is a UserError
                                     with the one command that downloads it.

and optionally `columns` (iwsft field -> the source's column: {prompt: question, completion: deepseek_attempt,
answer: solution}) and `template` (the prompt built from columns: "{question}\\n\\nPut your final answer in
\\\\boxed{}."; a `{name}` that is a column is filled in, every other brace is kept as written, so LaTeX
survives); `completion_template` builds the completion alike (a reasoning trace and its final answer). Mapping
happens before the schema checks, so the checks and their messages speak of iwsft's fields, and a problem
with a mapped field names its column: "hf://datasets/o/n (split train) row index 17: field 'completion'
(column 'deepseek_attempt') is empty". A dataset's row without an id gets its row index as id
(hub prompt sets rarely have ids; reports name prompts by them).

`fingerprint`: what the records were read from, exactly: the hub commit hash, or each file's sha256. The
`sources` stage (iwsft.stages.sources) writes it next to the records it materialises.
"""

from __future__ import annotations

import glob as globbing
import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from iwsft.data.records import SCHEMA_FIELDS, Problem, Rejected
from iwsft.data.source_paths import HUB, SOURCES_DIR, kind, materialised  # noqa: F401  (re-exported)
from iwsft.errors import DataError, UserError

# {column}: a column name (anything but braces and backslashes); `\boxed{}` has nothing inside, so stays
PLACEHOLDER = re.compile(r"\{([^{}\\]+)\}")


@dataclass(frozen=True)
class Spec:
    """A source as the readers use it: the schema's Source, or a plain string read as its path."""

    path: str
    config: str | None = None
    split: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    template: str | None = None
    completion_template: str | None = None

    @property
    def templates(self) -> dict[str, str]:
        """field -> its template (prompt, completion)."""
        return {name: template for name, template in (("prompt", self.template), ("completion", self.completion_template))
                if template is not None}

    @property
    def plain(self) -> bool:
        """A local file in iwsft's own columns: the readers' original path, unchanged."""
        return kind(self.path) == "file" and not self.columns and not self.templates


def spec_of(source: Any) -> Spec:
    if isinstance(source, Spec):
        return source
    if isinstance(source, (str, Path)):
        return Spec(str(source))
    return Spec(source.path, source.config, source.split, dict(source.columns or {}), source.template,
                getattr(source, "completion_template", None))


@dataclass(frozen=True)
class Loaded:
    """Records at positions (`unit`), the lines that did not parse, the label messages name, the fingerprint;
    `locate(position)`: (source, position, unit) of one record, for sources made of several files."""

    entries: list[tuple[int, Any]]
    unparsed: list[Rejected]
    source: str
    unit: str
    fingerprint: dict
    locate: Callable[[int], tuple[str, int, str]] | None = None
    columns: list[str] | None = None  # a dataset's columns, all of them (None: a file's, seen in its rows)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_file(path: Path, label: str, all_columns: bool) -> tuple[list, list, str]:
    from iwsft.data.raw_files import check_readable_file, load_jsonl, load_parquet

    check_readable_file(path)
    if path.suffix.lower() == ".parquet":
        return *load_parquet(path, label, all_columns), "row index"
    return *load_jsonl(path, label), "line"


def _load_glob(spec: Spec) -> Loaded:
    files = sorted(Path(name) for name in globbing.glob(spec.path, recursive=True) if Path(name).is_file())
    if not files:
        raise DataError(f"{spec.path}: no file matches this pattern")
    entries, unparsed, where = [], [], []
    for path in files:
        found, bad, unit = _read_file(path, str(path), all_columns=True)
        for position, value in found:
            entries.append((len(where), value))
            where.append((str(path), position, unit))
        for rejection in bad:  # a line that is not JSON: named by its own file already
            unparsed.append(replace(rejection, line=len(where)))
            where.append((str(path), rejection.line, "line"))
    fingerprint = {"kind": "glob", "pattern": spec.path, "files": {str(path): sha256(path) for path in files}}
    return Loaded(entries, unparsed, spec.path, "row", fingerprint, lambda position: where[position])


def _pick_split(data, label: str, split: str | None):
    import datasets

    if isinstance(data, datasets.Dataset):
        return data
    names = list(data.keys())
    if split is None and len(names) == 1:
        return data[names[0]]
    if split not in names:
        raise DataError(f"{label}: " + ("has" if split is None else f"no split {split!r}; it has") + f" splits "
                        f"{', '.join(names)}: set `split`")
    return data[split]


def _dataset_loaded(data, spec: Spec, label: str, fingerprint: dict) -> Loaded:
    data = _pick_split(data, label, spec.split)
    wanted = set(spec.columns.values()) | set(SCHEMA_FIELDS)
    wanted |= {name for template in spec.templates.values() for name in template_columns(template, data.column_names)}
    columns = list(data.column_names)
    data = data.select_columns([name for name in columns if name in wanted])  # long unused ones stay unread
    return Loaded(list(enumerate(data.to_list())), [], label, "row index", {**fingerprint, "rows": data.num_rows},
                  columns=sorted(columns))


def _load_folder(spec: Spec) -> Loaded:
    import datasets

    root = Path(spec.path)
    if not any((root / name).is_file() for name in ("dataset_info.json", "dataset_dict.json", "state.json")):
        raise DataError(f"{spec.path}: is a directory, expected a .jsonl or .parquet file or a `datasets` save_to_disk "
                        f"folder (none of dataset_info.json, dataset_dict.json); for shards give a glob: "
                        f"{spec.path.rstrip('/')}/*.parquet")
    try:
        data = datasets.load_from_disk(str(root))
    except (OSError, ValueError) as error:
        raise DataError(f"{spec.path}: not a readable datasets folder ({error})") from None
    files = {str(path.relative_to(root)): sha256(path) for path in sorted(root.rglob("*")) if path.is_file()}
    label = spec.path + (f" (split {spec.split})" if spec.split else "")
    return _dataset_loaded(data, spec, label, {"kind": "datasets folder", "path": spec.path, "files": files})


def parse_hub(path: str) -> tuple[str, str | None]:
    """hf://datasets/OWNER/NAME[@REV] -> ("OWNER/NAME", REV or None)."""
    repo, _, revision = path.removeprefix(HUB).partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise UserError(f"{path}: a hub dataset is hf://datasets/OWNER/NAME, optionally @REVISION")
    return repo, revision or None


def download_command(repo: str, revision: str | None) -> str:
    return f"HF_HUB_OFFLINE=0 hf download {repo} --repo-type dataset" + (f" --revision {revision}" if revision else "")


def _load_hub(spec: Spec) -> Loaded:
    import datasets
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, revision = parse_hub(spec.path)
    label = spec.path + "".join(f" ({name} {value})" for name, value in (("config", spec.config), ("split", spec.split))
                                if value)
    try:  # the cache only: a snapshot folder, its name the commit hash (refs/REV resolves a branch or tag)
        snapshot = Path(snapshot_download(repo, repo_type="dataset", revision=revision, local_files_only=True))
    except LocalEntryNotFoundError:
        raise UserError(f"{spec.path}: not in the local Hugging Face cache; download it once with:\n  "
                        f"{download_command(repo, revision)}") from None
    try:
        data = datasets.load_dataset(str(snapshot), name=spec.config, split=spec.split)
    except (ValueError, FileNotFoundError) as error:  # an unknown config or split, no data files
        raise DataError(f"{label}: {error}") from None
    fingerprint = {"kind": "hub", "repo": repo, "revision": revision or "main", "commit": snapshot.name,
                   "config": spec.config, "split": spec.split}
    return _dataset_loaded(data, spec, label, fingerprint)


def _quietly(read: Callable[[Spec], Loaded], spec: Spec) -> Loaded:
    """datasets draws a bar per split it prepares: noise for a load that takes a second."""
    import datasets

    if datasets.utils.are_progress_bars_disabled():
        return read(spec)
    datasets.disable_progress_bars()
    try:
        return read(spec)
    finally:
        datasets.enable_progress_bars()


def load(source: Any, checked_columns: bool | None = None) -> Loaded:
    """The source's records as read, before mapping; DataError / UserError if it cannot be read.
    `checked_columns`: a Parquet file's columns checked against the raw schema (default: a plain file)."""
    spec = spec_of(source)
    source_kind = kind(spec.path)
    if source_kind == "hub":
        return _quietly(_load_hub, spec)
    if source_kind == "glob":
        return _load_glob(spec)
    if source_kind == "folder":
        return _quietly(_load_folder, spec)
    path = Path(spec.path)
    entries, unparsed, unit = _read_file(path, spec.path, all_columns=not (spec.plain if checked_columns is None else checked_columns))
    return Loaded(entries, unparsed, spec.path, unit, {"kind": "file", "path": spec.path, "sha256": sha256(path)})


def template_columns(template: str | None, columns: list[str] | set[str]) -> list[str]:
    """The columns a template fills in, in order of appearance."""
    if template is None:
        return []
    return list(dict.fromkeys(name for name in PLACEHOLDER.findall(template) if name in columns))


def fill(template: str, row: dict, names: list[str]) -> str | None:
    """The prompt for one row; None when a column it needs is missing or null there."""
    if any(row.get(name) is None for name in names):
        return None
    return PLACEHOLDER.sub(lambda match: str(row[match.group(1)]) if match.group(1) in names else match.group(0),
                           template)


def mapped(loaded: Loaded, source: Any, fields: tuple[str, ...] = SCHEMA_FIELDS,
           row_ids: bool = False) -> tuple[list[tuple[int, Any]], dict[str, str]]:
    """Entries in iwsft's fields (columns renamed, the prompt templated) and, per mapped field, where it came
    from ("column 'deepseek_attempt'") for messages. `row_ids`: a row without an id gets its position."""
    spec = spec_of(source)
    seen = loaded.columns or sorted({name for _, row in loaded.entries if isinstance(row, dict) for name in row})
    missing = sorted(set(spec.columns.values()) - set(seen)) if loaded.entries else []
    if missing:
        raise DataError(f"{loaded.source}: no column {', '.join(map(repr, missing))} (columns: {', '.join(seen)})")
    placeholders = {name: template_columns(template, seen) for name, template in spec.templates.items()}
    for name, template in spec.templates.items():
        if not placeholders[name]:
            raise DataError(f"{loaded.source}: the template {template!r} names no column (columns: {', '.join(seen)})")
    origin = {name: f"column {column!r}" for name, column in spec.columns.items()}
    for name, names in placeholders.items():
        origin[name] = "template over column" + "s" * (len(names) > 1) + " " + ", ".join(map(repr, names))
    entries = []
    for position, row in loaded.entries:
        if not isinstance(row, dict):
            entries.append((position, row))
            continue
        record = {name: row[name] for name in fields if name in row and name not in spec.columns}
        record.update({name: row.get(column) for name, column in spec.columns.items()})
        record.update({name: fill(spec.templates[name], row, names) for name, names in placeholders.items()})
        if row_ids and record.get("id") is None:
            record["id"] = str(position)
        entries.append((position, record))
    return entries, origin


def named(problem: Problem, origin: dict[str, str], loaded: Loaded) -> Problem:
    """A problem as the user's source names it: its mapped column, its own shard and line."""
    if problem.field in origin:
        problem = replace(problem, message=f"({origin[problem.field]}) {problem.message}")
    if loaded.locate is not None and problem.line is not None:
        source, line, unit = loaded.locate(problem.line)
        problem = replace(problem, source=source, line=line, unit=unit)
    return problem

