"""The one YAML reader of the files users write (iwsft.config.loading.read_yaml): a key given twice
is an error naming the key and both lines, a file that is not a mapping is an error naming the file.
The corpus: tests/data/bad/cases.yaml `params`, files under tests/data/bad/params/, each read the
way iwsft reads it (`as`: params.yaml, a profile, configs/study.yaml, control/params.yaml)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from iwsft.config.loading import DuplicateKey, parse_yaml, read_yaml

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data"
BAD = DATA / "bad" / "params"
CASES = yaml.safe_load((DATA / "bad" / "cases.yaml").read_text())["params"]
IDS = [case["file"] for case in CASES]


def read_as(kind: str, path: Path, tmp_path: Path, monkeypatch, capsys) -> str:
    """The message iwsft gives for `path` read as `kind` (each raises or exits 1)."""
    from iwsft.errors import UserError

    if kind == "profile":  # through the CLI: `iwsft profile NAME` in a project holding it
        from iwsft.cli.main import main

        shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
        (tmp_path / "profiles").mkdir()
        shutil.copy(path, tmp_path / "profiles" / path.name)
        monkeypatch.chdir(tmp_path)
        before = (tmp_path / "params.yaml").read_bytes()
        assert main(["profile", path.stem]) == 1
        assert (tmp_path / "params.yaml").read_bytes() == before  # nothing written
        err = capsys.readouterr().err
        assert err.startswith("iwsft profile: error: ") and "Traceback" not in err
        return err
    with pytest.raises(UserError) as error:
        if kind == "params":
            from iwsft.config.loading import load_params

            load_params(path)
        elif kind == "study":
            from iwsft.config.loading import load_params
            from iwsft.study.plan import load_config

            load_config(path, load_params(ROOT / "params.yaml"))
        else:
            from iwsft.config.control import load

            load(path)
    return str(error.value)


def test_every_bad_params_file_is_a_case_and_each_case_a_file():
    assert {path.name for path in BAD.iterdir()} == set(IDS) and len(IDS) == len(set(IDS))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_yaml_is_one_message_naming_the_file(case, tmp_path, monkeypatch, capsys):
    message = read_as(case["as"], BAD / case["file"], tmp_path, monkeypatch, capsys)
    for fragment in [case["file"], *case["expect"]]:
        assert fragment in message, message


def test_duplicate_keys_are_found_at_any_depth_and_named_by_their_path():
    with pytest.raises(DuplicateKey, match=r"key 'train\.lr' is given twice, on lines 2 and 4"):
        parse_yaml("train:\n  lr: 1\n  steps: 2\n  lr: 3\n")
    with pytest.raises(DuplicateKey, match=r"key 'envs\[0\]\.noise' is given twice, on lines 2 and 3"):
        parse_yaml("envs:\n  - noise: 1\n    noise: 2\n")
    with pytest.raises(DuplicateKey, match="given twice, on lines 1 and 2"):
        parse_yaml("yes: 1\ntrue: 2\n")  # one key as YAML reads it (both are True)


def test_what_is_not_a_duplicate_is_read_as_safe_load_reads_it(tmp_path):
    # a merge key's keys may be overridden (that is what it is for); the same key in two mappings is two keys
    text = "defaults: &d {lr: 1, steps: 2}\ntrain:\n  <<: *d\n  lr: 3\nother: {lr: 1}\n"
    assert parse_yaml(text) == yaml.safe_load(text) == {"defaults": {"lr": 1, "steps": 2},
                                                        "train": {"lr": 3, "steps": 2}, "other": {"lr": 1}}
    for name in ("params.yaml", "control/params.yaml", "configs/study.yaml", *(f"profiles/{p.name}" for p in
                                                                             (ROOT / "profiles").glob("*.yaml"))):
        assert read_yaml(ROOT / name) == yaml.safe_load((ROOT / name).read_text()), name
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert read_yaml(tmp_path / "empty.yaml") == {}


# YAML that users do not write for iwsft: read by plain yaml.safe_load
NOT_USERS_YAML = {"src/iwsft/training/launch.py": "accelerate's own config file (configs/accelerate/)",
                  "src/iwsft/tracking/lineage.py": "dvc.lock, which DVC writes"}


def test_every_yaml_a_user_writes_is_read_by_read_yaml():
    readers = sorted(str(path.relative_to(ROOT)) for folder in ("src", "flows") for path in (ROOT / folder).rglob("*.py")
                     if "yaml.safe_load(" in path.read_text() or "yaml.load(" in path.read_text())
    assert [path for path in readers if path not in NOT_USERS_YAML] == ["src/iwsft/config/loading.py"], readers
