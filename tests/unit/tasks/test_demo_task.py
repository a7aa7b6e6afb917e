"""The demo task: disjoint seeded pools and a verifier that gives no partial credit."""

from iwsft.config.loading import merge
from iwsft.config.schema import Task
from iwsft.tasks.chain_sum import build_splits, verify

TASK = Task.model_validate({"name": "chain_sum", "min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2,
                            "pretrain_examples": 300, "train_prompts": 100, "eval_prompts": 80})


def test_pools_are_disjoint_sized_and_deterministic():
    splits = build_splits(TASK, seed=0)
    assert [len(splits[k]) for k in ("pretrain", "train", "eval")] == [300, 100, 80]
    held_out = {p["prompt"] for p in splits["eval"]}
    assert not held_out & {p["prompt"] for p in splits["train"]}
    assert not held_out & {p["prompt"] for p in splits["pretrain"]}
    assert build_splits(TASK, seed=0) == splits
    assert build_splits(TASK, seed=1)["eval"] != splits["eval"]
    first = splits["eval"][0]
    assert first["prompt"].endswith("=") and " " not in first["prompt"]
    assert eval(first["prompt"][:-1]) == int(first["answer"])  # the answer is right


def test_verifier_exact_numbers_only():
    assert verify("-29", "-29") == 1
    assert verify(" 7 ", "7") == 1 and verify("07", "7") == 1 and verify("+7", "7") == 1
    assert verify("15", "5") == 0  # reasoning-gym would give 0.5 partial credit
    assert verify("", "5") == 0 and verify(None, "5") == 0 and verify("five", "5") == 0


def test_params_merge_is_deep():
    base = {"train": {"steps": 300, "lr": 0.1}, "seed": 0}
    merged = merge(base, {"train": {"steps": 60}})
    assert merged == {"train": {"steps": 60, "lr": 0.1}, "seed": 0}
    assert base["train"]["steps"] == 300
