"""iwsft.io.durable: the directory swap survives a crash at any point, everything is synced, and the
gate's HTML data docs go through the same swap. No torch, no GX (the renderer is replaced)."""

import json
import os
import stat
import sys

import pytest

from iwsft.io import durable
from iwsft.gates import runner
from iwsft.io.durable import write_json_atomic


class Crash(BaseException):
    """The process dying at this point (not an Exception: nothing may catch it as an error)."""


def fill(directory, text):
    (directory / "weights.bin").write_text(text)
    (directory / "sub").mkdir()
    (directory / "sub" / "config.json").write_text(text)


def content(directory):
    return {str(path.relative_to(directory)): path.read_text() for path in directory.rglob("*") if path.is_file()}


def leftovers(target):
    return sorted(path.name for path in target.parent.iterdir() if path.name.startswith(f".{target.name}."))


@pytest.fixture
def old_target(tmp_path):
    target = tmp_path / "models" / "sft"
    with durable.atomic_directory(target) as staging:
        fill(staging, "old")
    return target


def test_the_swap_replaces_the_whole_target_and_leaves_nothing_behind(old_target):
    (old_target / "stale.txt").write_text("from an older run")
    with durable.atomic_directory(old_target) as staging:
        assert staging.parent == old_target.parent and staging.name.startswith(".sft.staging-")
        (staging / "weights.bin").write_text("new")
    assert content(old_target) == {"weights.bin": "new"}
    assert leftovers(old_target) == []
    assert stat.S_IMODE(old_target.stat().st_mode) == 0o755  # not mkdtemp's 0700


def test_a_failure_while_writing_leaves_the_old_target(old_target):
    with pytest.raises(RuntimeError), durable.atomic_directory(old_target) as staging:
        (staging / "weights.bin").write_text("half")
        raise RuntimeError("out of memory")
    assert content(old_target) == {"weights.bin": "old", "sub/config.json": "old"}
    assert leftovers(old_target) == []


def failing_rename(monkeypatch, fail_from, then=OSError):
    """os.rename that works until call `fail_from`, raises Crash there and `then` on every later call."""
    real, calls = os.rename, []

    def rename(source, destination):
        calls.append((str(source), str(destination)))
        if len(calls) == fail_from:
            raise Crash()
        if len(calls) > fail_from and then is not None:
            raise then("the process is gone")
        return real(source, destination)

    monkeypatch.setattr(os, "rename", rename)
    return calls


def test_an_error_between_the_two_renames_puts_the_old_target_back(old_target, monkeypatch):
    calls = failing_rename(monkeypatch, fail_from=2, then=None)  # the rollback's rename works
    with pytest.raises(Crash), durable.atomic_directory(old_target) as staging:
        (staging / "weights.bin").write_text("new")
    assert calls[0][0] == str(old_target) and calls[1][1] == str(old_target)  # aside, then onto the target
    assert content(old_target) == {"weights.bin": "old", "sub/config.json": "old"}
    assert leftovers(old_target) == []


def test_a_crash_between_the_two_renames_keeps_the_old_copy_and_the_next_call_restores_it(old_target, monkeypatch):
    failing_rename(monkeypatch, fail_from=2)  # the rollback fails too: as if the process had been killed
    with pytest.raises(Crash), durable.atomic_directory(old_target) as staging:
        (staging / "weights.bin").write_text("new")
    monkeypatch.undo()
    assert not old_target.exists()  # the one moment the target path is empty ...
    [aside] = [old_target.parent / name for name in leftovers(old_target)]
    assert aside.name.startswith(".sft.old-")
    assert content(aside) == {"weights.bin": "old", "sub/config.json": "old"}  # ... the old copy is complete
    (old_target.parent / ".sft.staging-killed").mkdir()  # a killed process leaves its staging dir too
    (old_target.parent / "sft.v2").mkdir()  # other targets' names are not leftovers
    (old_target.parent / ".sft.v2.old-1").mkdir()

    with pytest.raises(RuntimeError), durable.atomic_directory(old_target):
        raise RuntimeError("the next run fails as well")
    assert content(old_target) == {"weights.bin": "old", "sub/config.json": "old"}  # back in place
    assert leftovers(old_target) == [".sft.v2.old-1"]  # ours are gone, sft.v2's are its own business

    with durable.atomic_directory(old_target) as staging:
        (staging / "weights.bin").write_text("new")
    assert content(old_target) == {"weights.bin": "new"}


def test_a_crash_after_the_swap_leaves_the_new_target_and_the_next_call_cleans_up(old_target, monkeypatch):
    def killed(path):
        raise Crash()

    monkeypatch.setattr(durable, "_remove", killed)  # dies while deleting the old copy
    with pytest.raises(Crash), durable.atomic_directory(old_target) as staging:
        (staging / "weights.bin").write_text("new")
    monkeypatch.undo()
    assert content(old_target) == {"weights.bin": "new"}
    assert [name.split("-")[0] for name in leftovers(old_target)] == [".sft.old"]
    with durable.atomic_directory(old_target) as staging:
        (staging / "weights.bin").write_text("newer")
    assert leftovers(old_target) == [] and content(old_target) == {"weights.bin": "newer"}


@pytest.fixture
def synced(monkeypatch):
    """The path behind every os.fsync call, in order (Linux: /proc/self/fd)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    real, paths = os.fsync, []

    def fsync(descriptor):
        paths.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        return real(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    return paths


def test_every_file_and_directory_is_synced_before_the_swap_and_the_parent_after(old_target, synced):
    with durable.atomic_directory(old_target) as staging:
        fill(staging, "new")
    staged = str(staging)  # bottom-up: a directory's entries before the directory, the parent last (the renames)
    assert synced == [f"{staged}/sub/config.json", f"{staged}/sub", f"{staged}/weights.bin", staged,
                      str(old_target.parent)]


def test_json_files_sync_the_file_then_the_directory(tmp_path, synced):
    write_json_atomic(tmp_path / "out" / "metrics.json", {"x": 1})
    assert len(synced) == 2 and synced[0].startswith(str(tmp_path / "out" / ".metrics.json."))
    assert synced[1] == str(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == {"x": 1}
    assert stat.S_IMODE((tmp_path / "out" / "metrics.json").stat().st_mode) == 0o644


def test_an_exclusive_file_is_written_once(tmp_path):
    path = tmp_path / "choice.json"
    with durable.atomic_file(path, exclusive=True) as handle:
        handle.write("first")
    with pytest.raises(FileExistsError), durable.atomic_file(path, exclusive=True) as handle:
        handle.write("second")
    assert path.read_text() == "first" and os.listdir(tmp_path) == ["choice.json"]


def test_text_and_bytes_are_replaced_whole(tmp_path, synced):
    durable.write_text_atomic(tmp_path / "params.yaml", "seed: 0\n")
    durable.write_bytes_atomic(tmp_path / "params.yaml", b"seed: 1\n")
    assert (tmp_path / "params.yaml").read_bytes() == b"seed: 1\n" and os.listdir(tmp_path) == ["params.yaml"]
    assert synced[1::2] == [str(tmp_path)] * 2  # each: the file, then its directory


# --- the gate's data docs ---

def test_gate_docs_are_swapped_in_whole(tmp_path, monkeypatch):
    docs = tmp_path / "gates" / "raw"
    docs.mkdir(parents=True)
    (docs / "records.html").write_text("old records")
    (docs / "dropped_table.html").write_text("a table the suite no longer has")
    monkeypatch.setattr(runner, "_render_pages", lambda results: {table: f"<html>{table}</html>" for table in results})
    written = runner._write_docs({"records": None, "rejects": None}, docs)
    assert written == [str(docs / "records.html"), str(docs / "rejects.html")]  # final paths, not staging ones
    assert content(docs) == {"records.html": "<html>records</html>", "rejects.html": "<html>rejects</html>"}
    assert leftovers(docs) == []


def test_a_gate_that_dies_while_writing_docs_leaves_the_old_ones(tmp_path, monkeypatch):
    docs = tmp_path / "gates" / "raw"
    docs.mkdir(parents=True)
    (docs / "records.html").write_text("old records")
    monkeypatch.setattr(runner, "_render_pages", lambda results: {"records": "<html>new</html>", "broken": None})
    with pytest.raises(TypeError):  # the second page cannot be written
        runner._write_docs({}, docs)
    assert content(docs) == {"records.html": "old records"} and leftovers(docs) == []


def test_the_swap_needs_neither_torch_nor_transformers():
    import subprocess  # a fresh process: other tests may have imported torch into this one

    done = subprocess.run([sys.executable, "-c", "import sys, iwsft.io.durable, iwsft.data.records, iwsft.gates.runner; "
                           "print(sorted({'torch', 'transformers', 'mlflow'} & set(sys.modules)))"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
