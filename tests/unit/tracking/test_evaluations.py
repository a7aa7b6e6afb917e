"""One result per eval set on a registered version (iwsft.tracking.evaluations): the tags written, read
back, and what the promotion rule sees on the current eval set. Versions are plain objects with tags;
tests/integration/test_mlflow.py does the same against a real MLflow server."""

from types import SimpleNamespace

from iwsft.tracking.evaluations import (eval_tags, eval_tags_of, evaluations, latest_tags, same_numbers,
                                        version_score)

METRICS = {"pass_at_1": 0.25, "pass_at_1_ci_low": 0.2, "pass_at_1_ci_high": 0.3, "pass_at_1_se": 0.025,
           "greedy_accuracy": None, "n_prompts": 4}


def version(*results):
    """A version with the tags register writes for each (eval set, metrics, per-prompt) in turn; the
    unprefixed ones are the last result's."""
    tags = {"iwsft.method": "sft"}
    for eval_set, metrics, per_prompt in results:
        tags.update(eval_tags(eval_set, metrics, per_prompt, run_id="r1"))
        tags.update(latest_tags(eval_set, metrics, per_prompt))
    return SimpleNamespace(tags=tags)


def test_each_eval_set_keeps_its_own_result():
    v = version(("aaaa", METRICS, "2:0120"), ("bbbb", {**METRICS, "pass_at_1": 0.5}, ""))
    assert v.tags["eval.aaaa.pass_at_1"] == "0.25" and v.tags["eval.bbbb.pass_at_1"] == "0.5"
    assert "eval.aaaa.greedy_accuracy" not in v.tags  # a value that is not there is not written
    assert set(evaluations(v)) == {"aaaa", "bbbb"} and evaluations(v)["aaaa"]["per_prompt"] == "2:0120"
    on_a, on_b = version_score(v, eval_set="aaaa"), version_score(v, eval_set="bbbb")
    assert (on_a.value, on_a.se, on_a.eval_set, on_a.per_prompt) == (0.25, 0.025, "aaaa", (0.0, 0.5, 1.0, 0.0))
    assert (on_b.value, on_b.per_prompt) == (0.5, ())
    assert version_score(v) == on_b  # without an eval set: the latest register run's
    assert version_score(v, eval_set="cccc") is None  # never evaluated there: nothing to compare


def test_a_version_registered_before_the_eval_tags_is_read_on_its_own_eval_set_only():
    old = SimpleNamespace(tags={"pass_at_1": "0.3", "pass_at_1_se": "0.01", "iwsft.eval_set": "aaaa",
                                "iwsft.per_prompt": "2:02"})
    assert version_score(old, eval_set="aaaa").per_prompt == (0.0, 1.0)
    assert version_score(old, eval_set="bbbb") is None and version_score(old).value == 0.3
    assert version_score(SimpleNamespace(tags={"iwsft.eval_set": "aaaa"}), eval_set="aaaa") is None  # no metric


def test_the_same_numbers_recorded_by_another_run_are_not_a_new_evaluation():
    v = version(("aaaa", METRICS, ""))
    again = eval_tags("aaaa", METRICS, "", run_id="r2")
    assert eval_tags_of(v, "aaaa")["eval.aaaa.run_id"] == "r1" and same_numbers(eval_tags_of(v, "aaaa"), again)
    assert not same_numbers(eval_tags_of(v, "aaaa"), eval_tags("aaaa", {**METRICS, "pass_at_1": 0.3}, "", "r2"))
    assert not same_numbers(eval_tags_of(v, "bbbb"), again)  # {}: not evaluated there yet
    assert latest_tags("aaaa", METRICS)["iwsft.per_prompt"] == ""  # "": the register stage removes a stale one
