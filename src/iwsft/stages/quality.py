"""quality: a graded score per curated example, the percentile thresholds and each example's
multiplicity (how many thresholds it reaches), for SFT(Q) and iw-SFT(Q)."""

from __future__ import annotations

import math
import sys
from collections import defaultdict

import numpy as np

from iwsft.config.schema import Params
from iwsft.data.conversation import completion_content, exact_key
from iwsft.data.quality import degenerate_scores, quality_multiplicity, quality_thresholds
from iwsft.data.records import DataError, read_jsonl
from iwsft.io.durable import write_json_atomic, write_jsonl_atomic
from iwsft.stages import DATA

OUT = DATA / "quality"


SOURCES = ("graded_difficulty", "difficulty", "likelihood", "score")


def success_log_probabilities(records: list[dict], source: str = "the curated records") -> dict[str, float]:
    """Per prompt (its exact key): log p(x), p(x) = sum over the DISTINCT successful completions of the
    prompt among `records` (reward 1; distinct `completion_ids`, else distinct completion text) of
    exp(ref_logprob), clipped to 1 (log-sum-exp, so a long completion's tiny probability is not lost).

    p(x) is the exact probability pi_ref puts on the successes it was seen to produce: a
    Rao-Blackwellised success rate, continuous where a K-sample count takes K+1 values. A success
    drawn twice is one sequence, counted once. DataError naming the file, the ids and the field when
    a success has no `ref_logprob` (written by `iwsft sample`)."""
    missing = [r.get("id") for r in records if r.get("reward") == 1 and r.get("ref_logprob") is None]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(
            f"{source}: quality.source=graded_difficulty needs field 'ref_logprob' (log pi_ref of the completion, "
            f"written by `iwsft sample`) on every success, and {len(missing)} of {len(records)} records lack it "
            f"(ids {shown}). Sample with `iwsft sample` (dvc repro sample), or set quality.source to "
            f"difficulty (1 - pi_ref's success rate on the prompt) or score (your raw file's own `score` field) in params.yaml.")
    seen: dict[str, dict] = defaultdict(dict)
    for record in records:
        if record.get("reward") != 1:
            continue
        ids = record.get("completion_ids")
        completion = tuple(ids) if ids is not None else ("text", completion_content(record["completion"]))
        seen[exact_key(record["prompt"])][completion] = float(record["ref_logprob"])
    result = {}
    for prompt, logprobs in seen.items():
        top = max(logprobs.values())
        result[prompt] = min(0.0, top + math.log(math.fsum(math.exp(lp - top) for lp in logprobs.values())))
    return result


def per_token_logprobs(records: list[dict], source: str = "the curated records") -> list[float]:
    """pi_ref's mean log-probability per token of each record's completion: `ref_logprob` (log pi_ref of the
    tokens `iwsft sample` scored: completion_ids, then the stop token unless finished is false) over their
    count. DataError naming the file, the ids and the field when a record lacks either."""
    problems: dict[str, list] = defaultdict(list)
    for record in records:
        logprob, ids = record.get("ref_logprob"), record.get("completion_ids")
        if isinstance(logprob, bool) or not isinstance(logprob, (int, float)) or not math.isfinite(logprob):
            problems["ref_logprob"].append(record.get("id"))
        elif not isinstance(ids, list) or len(ids) + (record.get("finished") is not False) == 0:
            problems["completion_ids"].append(record.get("id"))
    if problems:
        lacking = "; ".join(f"{len(ids)} lack '{field}' (ids {', '.join(repr(i) for i in ids[:3])}"
                            f"{f' and {len(ids) - 3} more' if len(ids) > 3 else ''})" for field, ids in problems.items())
        raise DataError(
            f"{source}: quality.source=likelihood needs 'ref_logprob' (a finite log pi_ref of the completion) and "
            f"'completion_ids' (its tokens), written by `iwsft sample`, on every record; of {len(records)} records, "
            f"{lacking}. Sample with `iwsft sample` (dvc repro sample), or set quality.source to score (your raw "
            f"file's own `score` field) in params.yaml.")
    return [float(r["ref_logprob"]) / (len(r["completion_ids"]) + (r.get("finished") is not False)) for r in records]


def quality_scores(records: list[dict], source: str, where: str = "the curated records") -> list[float]:
    """graded_difficulty: -log p(x) in nats, p(x) = pi_ref's probability of the distinct successes seen
    on the prompt (success_log_probabilities). It orders examples as 1 - p(x) does, so it bins them the
    same way, but 1 - p(x) rounds to exactly 1.0 once p(x) < 1e-16 (a 40-token success at -1 nat per
    token), and ties there would merge the top bins. A record whose prompt has no success among
    `records` (only with require_reward: false) ranks above every solved prompt: the hardest score + 1.
    difficulty: 1 - pi_ref's success rate on the prompt (a success on a prompt pi_ref rarely solves is
    rarer, so worth more); likelihood: minus pi_ref's mean log-probability per token of the completion
    (per_token_logprobs), in nats: a solution pi_ref finds less likely scores higher, as in the two sources
    above (what pi_ref rarely produces is worth more), per token so that length does not decide; the one of
    these that is not constant on data that is all successes (a teacher's); score: the raw file's own
    `score` field."""
    if source == "graded_difficulty":
        log_p = success_log_probabilities(records, where)
        unsolved = max((-value for value in log_p.values()), default=0.0) + 1.0
        return [0.0 - log_p[key] if key in log_p else unsolved for key in (exact_key(r["prompt"]) for r in records)]
    if source == "difficulty":
        missing = [r["id"] for r in records if r.get("prompt_pass_rate") is None]
        if missing:
            raise DataError(f"quality.source=difficulty needs rewards for every prompt; none for ids {missing[:3]}")
        return [1.0 - r["prompt_pass_rate"] for r in records]
    if source == "likelihood":
        return [-value for value in per_token_logprobs(records, where)]
    if source == "score":
        missing = [r["id"] for r in records if r.get("score") is None or not math.isfinite(r["score"])]
        if missing:
            raise DataError(f"quality.source=score but records {missing[:3]} have no finite `score` field")
        return [float(r["score"]) for r in records]
    raise DataError(f"quality.source must be one of {', '.join(SOURCES)}, got {source!r} (params.yaml)")


def run(params: Params) -> None:
    config = params.quality
    source = DATA / "curate" / "train.jsonl"
    records = read_jsonl(source)
    scores = quality_scores(records, config.source, f"{source} (curated from {params.curate.raw})")
    multiplicity = quality_multiplicity(scores, config.percentiles)
    if int((multiplicity > 0).sum()) < config.min_multiplicity_examples:
        raise DataError(f"quality: only {int((multiplicity > 0).sum())} examples reach the p{config.percentiles[0]} threshold")
    for record, score, count in zip(records, scores, multiplicity):
        record["quality"], record["multiplicity"] = float(score), int(count)
    thresholds = quality_thresholds(scores, config.percentiles).tolist()
    degenerate = degenerate_scores(scores, list(config.percentiles), thresholds)
    warning = degeneracy_warning(degenerate, config.source, thresholds, list(config.percentiles))
    if warning:  # whatever the methods; with a (Q) method in `methods`, the quality gate (at reference) fails
        print(f"quality: warning: {warning}", file=sys.stderr)
    write_jsonl_atomic(OUT / "train.jsonl", records)
    write_json_atomic(OUT / "summary.json", {
        "examples": len(records),
        "percentiles": list(config.percentiles),
        "thresholds": thresholds,
        "multiplicity_counts": np.bincount(multiplicity, minlength=len(config.percentiles) + 1).tolist(),
        **degenerate,
        "warning": warning,
    })


def degeneracy_warning(degenerate: dict, source: str, thresholds: list[float], percentiles: list) -> str | None:
    """One line saying the score is constant or thresholds coincide, and what to use instead; None if neither."""
    if not degenerate["constant_score"] and not degenerate["coinciding_thresholds"]:
        return None
    what = (f"every example has the same quality score ({thresholds[0]:.6g}), so every example reaches every threshold"
            if degenerate["constant_score"] else "thresholds coincide: " + "; ".join(
                " = ".join(f"p{p:g}" for p in group) for group in degenerate["coinciding_thresholds"]))
    instead = ("likelihood (pi_ref's log-probability per token of each solution) or score (your `score` field)"
               if source in ("difficulty", "graded_difficulty") else "a finer score or other quality.percentiles")
    return (f"{what} (quality.source={source}): the (Q) methods' bins are not distinct, so SFT(Q) / iw-SFT(Q) do not "
            f"weigh by quality (data that is all successes, e.g. a teacher's, makes success-rate scores constant); "
            f"use quality.source: {instead}")
