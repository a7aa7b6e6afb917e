"""Splitting prompts / rows over processes and merging back (iwsft.evaluation.sharding); the 2-process
run itself: tests/integration/test_sharding.py."""

from pathlib import Path

import pytest

from iwsft.config.loading import read_yaml
from iwsft.config.schema import check
from iwsft.evaluation.sharding import map_shards, merge, relaunch_command, strided, whole_batches

ROOT = Path(__file__).resolve().parents[3]


def test_strided_shards_cover_every_item_once_and_merge_back_in_order():
    parts = [(strided(7, rank, 3), [f"r{i}" for i in strided(7, rank, 3)]) for rank in range(3)]
    assert [p[0] for p in parts] == [[0, 3, 6], [1, 4], [2, 5]]
    assert merge(parts, 7) == [f"r{i}" for i in range(7)]
    with pytest.raises(RuntimeError, match="covered 5 of 7"):
        merge(parts[:2], 7)
    with pytest.raises(RuntimeError, match="2 results for 3 items"):
        merge([([0, 3, 6], ["a", "b"])], 3)


def test_whole_batches_give_each_process_the_one_process_runs_batches_in_length_order():
    lengths = [5, 1, 4, 1, 3, 9, 2]  # sorted stably: 1 3 6 4 2 0 5 -> batches [1,3] [6,4] [2,0] [5]
    split = whole_batches(lengths, 2)
    assert split(7, 0, 2) == [1, 3, 2, 0] and split(7, 1, 2) == [6, 4, 5]
    assert sorted(split(7, 0, 2) + split(7, 1, 2)) == list(range(7))
    # a scorer that sorts its share by length (stably) and cuts every 2 meets the same batches
    share = split(7, 1, 2)
    again = sorted(range(len(share)), key=lambda i: lengths[share[i]])
    assert [share[i] for i in again] == share


def test_one_process_maps_everything_and_starts_no_launcher(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert map_shards(["a", "b"], lambda indices, items: [f"{i}{x}" for i, x in zip(indices, items)]) == ["0a", "1b"]
    params = check(read_yaml(ROOT / "params.yaml"))
    assert relaunch_command(params, ["sample"]) is None  # num_processes: 1
    two = params.model_copy(update={"launch": params.launch.model_copy(update={"num_processes": 2})})
    line = relaunch_command(two, ["sample", "--params", "p.yaml"])
    assert line[1:4] == ["-m", "torch.distributed.run", "--nproc_per_node"] and line[4] == "2"
    assert line[-5:] == ["-m", "iwsft.cli.main", "sample", "--params", "p.yaml"]
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert relaunch_command(two, ["sample"]) is None  # already one of the two
