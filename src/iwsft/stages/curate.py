"""curate: raw samples -> the curated training set D+ and a report with counts per rule.

Rules (iwsft.data.curation): drop empty, unfinished and over-long ones, keep verified successes, drop
exact and near duplicates, drop prompts that overlap a held-out prompt; text is never changed. A
record without a reward but with an answer is rewarded by the task's verifier first (iwsft.tasks,
params `task:`); one with both is re-scored, and the agreement is in the report
(`reward_agreement`: checked, disagreeing, fraction, examples) and checked by the raw gate.

Three data gates run here (iwsft.gates): `raw` on the input before anything else, `eval` on the
held-out prompts (iwsft.data.eval_prompts), and `curated` on the kept records before they are written,
so a failing gate leaves no curated set behind. Invalid raw records within gates.max_invalid_fraction go to rejects.jsonl and are counted in the report.
"""

from __future__ import annotations

from iwsft.config.schema import Params
from iwsft.encoding.chat import ChatFormat, check_renderable
from iwsft.data.curation import EmptyCurationError, curate
from iwsft.encoding.token_counts import token_counter
from iwsft.gates.curated import curated_input
from iwsft.gates.eval_prompts import eval_input
from iwsft.gates.raw import raw_input
from iwsft.gates.settings import settings
from iwsft.gates.results import Check
from iwsft.gates.runner import run_gate
from iwsft.io.durable import write_json_atomic, write_jsonl_atomic
from iwsft.stages import DATA
from iwsft.tasks import from_params
from iwsft.tasks.rewards import fill_missing_rewards
from iwsft.model.tokenizer import load_tokenizer
from iwsft.tracking.runs import track_stage

OUT = DATA / "curate"


def run(params: Params) -> None:
    config = params.curate
    # The task's verifier re-scores records that carry an answer and a reward (the raw gate fails
    # when they disagree too often: a wrong verifier is caught before training), and rewards
    # records that carry an answer but no reward.
    task = from_params(params)
    # the student's tokenizer: a record's completion_ids must be its ids (what reference would refuse later)
    tokenizer = load_tokenizer(params.model.base, params.model.trust_remote_code)
    try:
        raw_gate = raw_input(config.raw, settings("raw", params), task, tokenizer, f"model.base ({params.model.base})")
        run_gate(raw_gate)
        samples = raw_gate.payload
        # then the held-out prompts (a raw file failing its schema stops first, before GX loads):
        # a bad file stops the run before any work; decontamination compares against these records
        eval_gate = eval_input(config.eval_prompts, settings("eval", params))
        run_gate(eval_gate)
        records = samples.records
        fill_missing_rewards(records, task)
    finally:
        task.close()
    agreement = raw_gate.lookups.get("reward_agreement")
    chat = ChatFormat.from_params(params, tokenizer)
    # message-list prompts need a chat template: say which record, before counting any tokens
    check_renderable(records, chat, config.raw, samples.lines, samples.unit)
    check_renderable(eval_gate.payload.records, chat, config.eval_prompts, eval_gate.payload.lines)
    lengths = token_counter(tokenizer, chat)
    eval_prompts = [row["prompt"] for row in eval_gate.payload.records]
    try:
        result = curate(records, eval_prompts, config, lengths)
        kept, emptied = result.kept, None
    except EmptyCurationError as error:  # reported by the curated gate, next to its other checks
        kept, emptied = [], Check("curation", False, description=str(error))
    curated_gate = curated_input(kept, str(OUT / "train.jsonl"), settings("curated", params), lengths, eval_prompts)
    curated_gate.checks += [emptied] if emptied else []
    run_gate(curated_gate)
    write_jsonl_atomic(OUT / "train.jsonl", kept)
    write_jsonl_atomic(OUT / "rejects.jsonl", [
        {"line": r.line, "problems": [str(p) for p in r.problems], "record": r.raw} for r in samples.rejected])
    write_json_atomic(OUT / "report.json", {**result.report, "rejected": len(samples.rejected), "reward_agreement": agreement})
    gates = DATA / "gates"
    artifacts = [OUT / "report.json"] + [gates / f"{boundary}.json" for boundary in ("eval", "raw", "curated")]
    track_stage("curate", params, sections=["curate"], artifacts=artifacts,
                metrics={**result.report, **{f"dropped.{r['rule']}": r["dropped"] for r in result.report["rules"]}})
