"""evaluate's per-sample table in MLflow: what the model wrote, browsable in the UI (params `evaluate.log_samples`).

- For the first N eval prompts (N = evaluate.log_samples; 0: nothing logged), one row per T=1 sample
  and one for the greedy completion: prompt, completion, the task's extracted answer, the gold answer,
  the reward the pipeline gave it, whether it finished before max_new_tokens. The rewards are the
  ones evaluate scored (`correct`); the greedy rewards are recomputed with the same rule
  (iwsft.evaluation.scoring.score_samples: an unfinished completion scores 0 unless score_unfinished).
- Logged with MlflowClient.log_table as ARTIFACT of the stage's run: the run's `mlflow.loggedArtifacts`
  tag marks it a table, so the MLflow UI draws it as one (Artifacts tab, and the evaluation view's
  table picker). data/evaluate/METHOD/samples.jsonl stays the full record; this is the readable slice.
- Where it went is written to data/mlflow_samples/METHOD.json (`link_file`: run id, artifact path, the UI
  URL when the store is a server), which the report reads (`read_link`). Not a DVC output, and outside
  data/evaluate (which report depends on as a folder): it says where this workspace's last evaluate run
  logged, which a clone's store does not have, so a clone pulling the run must not see data/evaluate
  changed by its absence.
- A failure to log is said on stderr and does not fail the stage (as iwsft.tracking.runs.track_stage).
"""

from __future__ import annotations

import json
from pathlib import Path

from iwsft.io.durable import write_json_atomic

ARTIFACT = "samples/evaluate.json"
LINKS = Path("data/mlflow_samples")
# what a reader looks for first on the left: the UI's table is cut at the window's edge
COLUMNS = ("prompt", "completion", "answer", "gold", "reward", "finished", "sample", "greedy", "prompt_index")


def sample_table(task, prompts: list, gold: list, metadata: list, drawn: list, greedy: list, correct,
                 limit: int, score_unfinished: bool) -> dict[str, list]:
    """Column -> values for the first `limit` prompts: their T=1 samples (sample 0..n-1) then the greedy one.

    drawn[p] / greedy[p]: objects with .text and .finished (iwsft.evaluation.generation); correct[p][i]:
    the reward evaluate gave drawn[p][i]. Pure apart from the task's verifier."""
    table = {column: [] for column in COLUMNS}

    def add(index, sample, is_greedy, completion, reward):
        answer = task.extract(completion.text, prompts[index]) if completion.finished or score_unfinished else None
        row = (str(prompts[index]), completion.text, "" if answer is None else str(answer), str(gold[index]),
               int(reward), bool(completion.finished), sample, is_greedy, index)
        for column, value in zip(COLUMNS, row, strict=True):
            table[column].append(value)

    for index in range(min(limit, len(prompts))):
        for sample, completion in enumerate(drawn[index]):
            add(index, sample, False, completion, correct[index][sample])
        g = greedy[index]
        add(index, "greedy", True, g,
            (g.finished or score_unfinished) and task.success(g.text, gold[index], metadata[index], prompts[index]))
    table["sample"] = [str(s) for s in table["sample"]]  # one type per column: 0, 1, ... and "greedy"
    return table


def ui_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's Artifacts tab with the table open, when the store is a server (None for a local file store)."""
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{ARTIFACT}"


def link_file(method: str) -> Path:
    """Where evaluate of `method` says it logged its table (read by the report)."""
    return LINKS / f"{method}.json"


def log_sample_table(params, run_id: str | None, table: dict[str, list], link_file: Path) -> dict | None:
    """Log `table` to run `run_id` (None: tracking is off, nothing to do) and write where to `link_file`."""
    link_file = Path(link_file)
    link_file.unlink(missing_ok=True)  # a link to an older run must not pass for this one's
    if run_id is None or not table["prompt"]:
        return None
    from iwsft.tracking.store import display_uri, pipeline_store, warn

    try:
        import pandas as pd
        from mlflow.tracking import MlflowClient

        uri = pipeline_store(params)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        # not retried: log_table appends to an existing artifact, so a retry after a lost answer would double it
        client.log_table(run_id, pd.DataFrame(table), ARTIFACT)
        experiment_id = client.get_run(run_id).info.experiment_id
    except Exception as error:  # noqa: BLE001 - the stage's outputs are written; say what is missing
        warn(f"could not log the sample table ({type(error).__name__}: {error}); the samples are in "
             f"data/evaluate/{link_file.stem}/samples.jsonl")
        return None
    link = {"run_id": run_id, "experiment_id": experiment_id, "artifact": ARTIFACT,
            "tracking_uri": display_uri(uri), "url": ui_url(display_uri(uri), experiment_id, run_id),
            "rows": len(table["prompt"]), "prompts": len(set(table["prompt_index"]))}
    write_json_atomic(link_file, link)
    return link


def read_link(link_file: Path) -> dict | None:
    """What log_sample_table wrote to `link_file`, or None."""
    path = Path(link_file)
    return json.loads(path.read_text()) if path.is_file() else None


def link_lines(links: dict) -> list[str]:
    """Markdown bullets for the report: method -> where its sample table is (None: not logged)."""
    lines = []
    for method, link in links.items():
        if not link:
            continue
        where = f"[MLflow UI]({link['url']})" if link.get("url") else f"store `{link['tracking_uri']}`"
        lines.append(f"- **{method}**: {link['rows']} samples of the first {link['prompts']} prompts, run "
                     f"`{link['run_id']}`, artifact `{link['artifact']}` ({where})")
    return lines
