"""Each boundary's data as the DataFrames its suite checks, plus the checks plain Python does better.

A frame holds the data's own columns and derived ones (token counts, log-prob counts, repeat
flags), so that a rule such as "one log-prob per completion token" is one GX expectation on two
columns. Every frame has position columns (`line` + `id`, `row` + `id`, or `model`) so that a
failure can name the offending records. Python checks cover what GX expresses badly: reading a
file at all (UTF-8, JSON, per-record types: iwsft.data.records), and comparing hashes (fingerprint).

Positions: `line` is a 1-based JSONL line (as editors show), `row` a 0-based Parquet row (df.iloc).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from iwsft.data.conversation import completion_content, completion_problem, exact_key, prompt_key_text, prompt_problem
from iwsft.data.curation import TokenLengths, decontamination_key, reward_agreement, verifier_rewards
from iwsft.errors import DataError, UserError
from iwsft.data.eval_prompts import read_eval_prompts
from iwsft.gates.results import Check, GateInput
from iwsft.data.records import SCHEMA_FIELDS, read_raw_samples

RATE_METRICS = ("pass_at_1", "pass_at_1_ci_low", "pass_at_1_ci_high", "greedy_accuracy", "maj_at_k", "coverage", "c_ref")
FINITE_METRICS = ("j_importance", "sft_bound", "iw_bound")
# present for every model; iw_bound only where the method trained with a q (metrics' bound_q)
REQUIRED_METRICS = tuple(m for m in RATE_METRICS + FINITE_METRICS if m != "iw_bound")
COUNT_METRICS = ("n_prompts", "n_samples", "k", "n_trajectories")


def eval_input(path: str | Path, settings: dict) -> GateInput:
    """The held-out prompts file: iwsft.data.eval_prompts' per-record checks first (they name line, id
    and field), then the frame of valid prompts for the GX suite. A message-list prompt is shown as
    its JSON text (a frame cell of lists would not render in data docs). `payload` is the
    EvalPrompts, so curate goes on with the records it checked."""
    try:
        prompts = read_eval_prompts(path)
    except DataError as error:
        return GateInput("eval", str(path), {}, settings, [Check("record schema", False, description=str(error))])
    count = len(prompts.records)
    schema = Check("record schema", True, description=f"all {count} prompts valid", rows=count)
    frame = pd.DataFrame([
        {"line": line, "id": r["id"], "prompt": r["prompt"] if isinstance(r["prompt"], str) else json.dumps(r["prompt"]),
         "conversational": not isinstance(r["prompt"], str), "answer": r["answer"], "metadata": "metadata" in r}
        for line, r in zip(prompts.lines, prompts.records)
    ], columns=["line", "id", "prompt", "conversational", "answer", "metadata"])
    return GateInput("eval", prompts.source, {"prompts": frame}, settings, [schema], ("line", "id"), prompts)


def raw_input(path: str | Path, settings: dict, task=None) -> GateInput:
    """The raw samples file: iwsft.data.records's per-record checks first (they name line, id and field);
    the records that pass become the frame for the GX suite. Records set aside under
    max_invalid_fraction travel in `payload` (RawSamples) for the rejects file.

    With a `task` (an iwsft.tasks.Task: the curate stage passes its own), each record that carries
    both `answer` and `reward` is re-scored by the task's verifier (column `verifier_reward`), so a
    verifier that disagrees with the file's rewards (the wrong task, a broken scorer) stops the run
    here, naming records; the summary is in `lookups["reward_agreement"]` for curate's report."""
    try:
        samples = read_raw_samples(path, settings["max_invalid_fraction"])
    except DataError as error:
        return GateInput("raw", str(path), {}, settings, [Check("record schema", False, description=str(error))])
    total = len(samples.records) + len(samples.rejected)
    note = (f"{len(samples.rejected)} of {total} records set aside (max_invalid_fraction="
            f"{settings['max_invalid_fraction']})" if samples.rejected else f"all {total} records valid")
    schema = Check("record schema", True, description=note, unexpected=len(samples.rejected), rows=total)
    position = "row" if samples.unit != "line" else "line"
    frame = pd.DataFrame(samples.records, columns=list(SCHEMA_FIELDS))
    frame.insert(0, position, samples.lines)
    settings = {**settings, "verifier": getattr(task, "name", None) if task is not None else None}
    gate = GateInput("raw", samples.source, {"records": frame}, settings, [schema], (position, "id"), samples)
    if task is not None:
        rescored = verifier_rewards(samples.records, task)
        frame["verifier_reward"] = pd.Series(rescored, index=frame.index, dtype=object)  # None: not checked
        gate.lookups["reward_agreement"] = reward_agreement(samples.records, rescored)
    return gate


def _contents(value):
    """A broken message list's non-system contents (so that the text expectations see an empty one);
    any other value as it is."""
    if not isinstance(value, list):
        return value
    return "\n".join(str(m.get("content", "")) for m in value if isinstance(m, dict) and m.get("role") != "system")


def curated_input(records: Sequence[dict], source: str, settings: dict, lengths: TokenLengths,
                  eval_prompts: Sequence) -> GateInput:
    """The curated set (as curate is about to write it, or as read back): token counts with the
    base model's tokenizer (iwsft.data.curation.TokenLengths), a flag for repeated (prompt, completion)
    pairs, and the decontamination key of each prompt (lowercased, whitespace removed, as
    iwsft.data.curation compares them). A conversational record's text columns hold its key texts (the
    non-system contents), so the text expectations read the same for both formats."""
    seen: set = set()
    rows = []
    for line, record in enumerate(records, start=1):
        pair = (record.get("prompt"), record.get("completion"))
        # a field that is neither text nor a valid message list: the text expectations name it
        usable = prompt_problem(pair[0]) is None and completion_problem(pair[1]) is None
        key = (exact_key(pair[0]), exact_key(pair[1])) if usable else None
        rows.append({
            "line": line, "id": record.get("id"),
            "prompt": prompt_key_text(pair[0]) if usable else _contents(pair[0]),
            "completion": completion_content(pair[1]) if usable else _contents(pair[1]),
            "reward": record.get("reward"),
            "prompt_tokens": lengths.prompt(pair[0]) if usable else None,
            "completion_tokens": lengths.completion(pair[1]) if usable else None,
            "repeat": key in seen if usable else False,
            "prompt_key": decontamination_key(pair[0]) if usable else None,
        })
        if usable:
            seen.add(key)
    columns = ["line", "id", "prompt", "completion", "reward", "prompt_tokens", "completion_tokens", "repeat", "prompt_key"]
    frame = pd.DataFrame(rows, columns=columns)
    gate = GateInput("curated", source, {"examples": frame}, {**settings, "eval_prompts": len(eval_prompts)}, [])
    gate.lookups["eval_prompt_keys"] = sorted({decontamination_key(prompt) for prompt in eval_prompts})
    return gate


def quality_input(records: Sequence[dict], summary: dict, source: str, settings: dict) -> GateInput:
    """Scores and multiplicities per example; the percentile thresholds as their own small table."""
    frame = pd.DataFrame(
        [{"line": line, "id": r.get("id"), "quality": r.get("quality"), "multiplicity": r.get("multiplicity")}
         for line, r in enumerate(records, start=1)],
        columns=["line", "id", "quality", "multiplicity"],
    )
    percentiles, thresholds = summary.get("percentiles") or [], summary.get("thresholds") or []
    checks = []
    if len(percentiles) != len(thresholds):
        checks.append(Check("thresholds recorded", False, description=f"summary has {len(percentiles)} percentiles "
                            f"but {len(thresholds)} thresholds"))
    table = pd.DataFrame({"percentile": percentiles[: len(thresholds)], "threshold": thresholds[: len(percentiles)]})
    checks += distinct_bins(percentiles, thresholds, settings)
    return GateInput("quality", source, {"examples": frame, "thresholds": table}, settings, checks,
                     ("line", "id", "percentile"))


def _percentile_name(value) -> str:
    return f"p{int(value) if float(value).is_integer() else value}"


def distinct_bins(percentiles: Sequence, thresholds: Sequence, settings: dict) -> list[Check]:
    """With a (Q) method in params.yaml's `methods:`, equal thresholds fail: the (Q) methods' bins
    (PAPER.md section 4: D_{>=p90} + D_{>=p95} + D_{>=p98}, three overlapping bins) coincide, so
    multiplicity skips levels (only 0 or 3 when all three are equal). Without one: no check."""
    methods = settings.get("quality_methods") or []
    if not methods or not thresholds or len(percentiles) != len(thresholds):
        return []
    # runs of equal neighbouring thresholds (they are sorted: percentiles of one score)
    groups = [list(run) for _, run in itertools.groupby(range(len(thresholds)), key=lambda i: thresholds[i])]
    equal = [group for group in groups if len(group) > 1]
    name = "distinct quality bins"
    if not equal:
        return [Check(name, True, description=f"{len(thresholds)} distinct thresholds for {', '.join(methods)}",
                      rows=len(thresholds))]
    same = "; ".join(" = ".join([_percentile_name(percentiles[i]) for i in group] + [f"{thresholds[group[0]]:.6g}"])
                     for group in equal)
    levels = len(groups)
    source = settings.get("source")
    advice = ("use a graded score: quality.source: graded_difficulty (-log of pi_ref's probability of the successes, "
              "written by `iwsft sample`) or score (your raw file's `score` field)" if source == "difficulty" else
              "the score takes too few distinct values at the top: use a finer one (quality.source), more samples per "
              "prompt (sample.k) or other quality.percentiles")
    return [Check(name, False, rows=len(thresholds), unexpected=sum(len(g) - 1 for g in equal), description=(
        f"{same}: the (Q) methods' bins coincide ({', '.join(methods)} in params.yaml methods), so an example reaching "
        f"one of these thresholds reaches the others too and the multiplicity takes {levels + 1} values, not "
        f"{len(thresholds) + 1} (quality.source={source}). To fix: {advice}; or remove {', '.join(methods)} from methods."))]


def reference_input(directory: Path, source: str, settings: dict, model, tokenizer,
                    quality_records: Sequence[dict] | None, chat=None) -> GateInput:
    """data/reference: the stored log-probs against an independent tokenization of each example,
    and the stored fingerprint against one recomputed from the quality stage's records (the data
    the column must belong to), the base model and its tokenizer."""
    import pyarrow.parquet as pq

    from iwsft.training.reference import ReferenceMismatchError, check_reference, fingerprint
    from iwsft.encoding.sequences import completion_token_count, encode_record

    try:
        rows = pq.read_table(directory / "train.parquet").to_pylist()
        stored = json.loads((directory / "fingerprint.json").read_text())
    except (OSError, ValueError) as error:  # pyarrow's errors are OSError / ValueError subclasses
        return GateInput("reference", source, {}, settings, [Check("readable", False, description=f"{source}: {error}")])
    encoded = [encode_record(tokenizer, r, chat) for r in rows]
    values = [[v for v in r.get("ref_logprobs") or []] for r in rows]
    frame = pd.DataFrame([
        {"row": index, "id": r.get("id"), "logprobs": len(logprobs), "completion_tokens": completion_token_count(pair["labels"]),
         "max_logprob": max((v for v in logprobs if _is_finite(v)), default=None),
         "nonfinite_logprobs": sum(1 for v in logprobs if not _is_finite(v))}
        for index, (r, pair, logprobs) in enumerate(zip(rows, encoded, values))
    ], columns=["row", "id", "logprobs", "completion_tokens", "max_logprob", "nonfinite_logprobs"])
    # The data part of the fingerprint is recomputed from the records the column must belong to.
    expected_rows = quality_records if quality_records is not None else rows
    expected_pairs = [encode_record(tokenizer, r, chat) for r in expected_rows]
    expected = fingerprint({"input_ids": [p["input_ids"] for p in expected_pairs],
                            "labels": [p["labels"] for p in expected_pairs]}, model, tokenizer,
                           weights_dtype=stored.get("model_dtype"))
    try:
        check_reference(stored, expected, source=f"{source}/fingerprint.json")
        match = Check("fingerprint", True, description="matches the data, the base model and its tokenizer")
    except ReferenceMismatchError as error:
        match = Check("fingerprint", False, description=str(error))
    return GateInput("reference", source, {"examples": frame}, settings, [match], ("row", "id"))


def _is_finite(value) -> bool:
    # Parquet may hold a NaN as null (pandas writes it so): both are "not finite" here.
    return isinstance(value, (int, float)) and math.isfinite(value)


def evaluation_input(directory: Path, models: Sequence[str], settings: dict) -> GateInput:
    """One row per evaluated model: its metrics and the number of samples it wrote."""
    rows, checks = [], []
    for model in models:
        metrics_path, samples_path = directory / model / "metrics.json", directory / model / "samples.jsonl"
        try:
            metrics = json.loads(metrics_path.read_text())
            samples = sum(1 for line in samples_path.read_bytes().split(b"\n") if line.strip())
        except (OSError, ValueError) as error:
            checks.append(Check("readable", False, description=f"{model}: {error}"))
            continue
        if not isinstance(metrics, dict):
            checks.append(Check("readable", False, description=f"{metrics_path}: expected a JSON object"))
            continue
        if (metrics.get("iw_bound") is None) != (metrics.get("bound_q") is None):
            checks.append(Check("iw bound with its q", False, description=(
                f"{metrics_path}: iw_bound is {metrics.get('iw_bound')!r} but bound_q is {metrics.get('bound_q')!r}: "
                "an iw bound needs the q it was computed with, and a method that trained with a q needs its bound")))
        rows.append({"model": model, **{key: metrics.get(key) for key in RATE_METRICS + FINITE_METRICS + COUNT_METRICS},
                     "sample_rows": samples})
    frame = pd.DataFrame(rows, columns=["model", *RATE_METRICS, *FINITE_METRICS, *COUNT_METRICS, "sample_rows"])
    # JSON null and NaN must both read as missing: object columns would keep None apart from NaN.
    for column in RATE_METRICS + FINITE_METRICS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    checks += degenerate_check(frame, settings.get("allow_degenerate", False))
    return GateInput("evaluation", str(directory), {"models": frame}, settings, checks, ("model",))


def degenerate_check(frame: pd.DataFrame, allow: bool) -> list[Check]:
    """Every model at pass@1 exactly 0 (or exactly 1) is what a verifier that never (or always)
    matches gives, not a result: the issue-11 trial scored 0.000 everywhere while hand-scoring
    found 0.06 and 0.12. Failed unless gates.evaluation.allow_degenerate; no check without rows."""
    values = frame["pass_at_1"].dropna().tolist()
    if not values or len(values) != len(frame) or len({float(v) for v in values}) != 1 or values[0] not in (0.0, 1.0):
        return []
    models = ", ".join(map(str, frame["model"]))
    what = f"every model's pass_at_1 is exactly {values[0]:g} ({models})"
    if allow:
        return [Check("pass@1 not degenerate", True, description=f"{what}: accepted (gates.evaluation.allow_degenerate)")]
    return [Check("pass@1 not degenerate", False, description=(
        f"{what}: the verifier is probably wrong for this task (check it by hand with iwsft score --task NAME "
        f"--answer A COMPLETION, on a few of data/evaluate/*/samples.jsonl); set gates.evaluation.allow_degenerate: "
        f"true to accept this table"))]


def read_records(path: Path) -> list[dict]:
    """A pipeline intermediate as a list of objects; a line that is not an object is a UserError."""
    from iwsft.data.records import read_jsonl

    records = read_jsonl(path)
    bad = [index for index, record in enumerate(records, start=1) if not isinstance(record, dict)]
    if bad:
        raise UserError(f"{path}: record {bad[0]} is not a JSON object; rerun the stage that writes it")
    return records
