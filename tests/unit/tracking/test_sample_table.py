"""iwsft.tracking.sample_table: the per-sample rows evaluate logs, the report's link lines, and the table
itself in a real (file-backed, serverless) MLflow store read back as MLflow reads it."""

import json
from types import SimpleNamespace

import pytest

from iwsft.tracking import sample_table as st


class Last:
    """A fake verifier: the answer is the completion's last word; right when it equals the gold."""

    def extract(self, completion, prompt=None):
        words = (completion or "").split()
        return words[-1] if words else None

    def success(self, completion, answer, metadata=None, prompt=None):
        return int(self.extract(completion, prompt) == str(answer))


def c(text, finished=True):
    return SimpleNamespace(text=text, finished=finished)


PROMPTS, GOLD = ["1+1=", "2+2=", "3+3="], ["2", "4", "6"]
DRAWN = [[c("so 2"), c("so 3")], [c("is 4"), c("is 4", finished=False)], [c("6"), c("6")]]
GREEDY = [c("so 2"), c("is 4", finished=False), c("6")]
CORRECT = [[1, 0], [1, 0], [1, 1]]


def test_rows_cover_the_first_n_prompts_samples_then_greedy():
    table = st.sample_table(Last(), PROMPTS, GOLD, [None] * 3, DRAWN, GREEDY, CORRECT, limit=2, score_unfinished=False)
    assert set(table) == set(st.COLUMNS) and all(len(v) == 6 for v in table.values())
    assert table["prompt_index"] == [0, 0, 0, 1, 1, 1]  # the third prompt is past the limit
    assert table["sample"] == ["0", "1", "greedy", "0", "1", "greedy"]
    assert table["greedy"] == [False, False, True, False, False, True]
    assert table["completion"][:3] == ["so 2", "so 3", "so 2"]
    assert table["reward"] == [1, 0, 1, 1, 0, 0]  # the sampled rewards as evaluate gave them; greedy rescored
    # a completion cut off at max_new_tokens is no answer (nor credit) unless score_unfinished
    assert table["answer"] == ["2", "3", "2", "4", "", ""]
    assert table["finished"] == [True, True, True, True, False, False]


def test_score_unfinished_credits_and_extracts_a_cut_off_greedy_completion():
    table = st.sample_table(Last(), PROMPTS, GOLD, [None] * 3, DRAWN, GREEDY, CORRECT, limit=2, score_unfinished=True)
    assert table["reward"][-1] == 1 and table["answer"][-1] == "4"


def test_zero_logs_nothing(tmp_path):
    table = st.sample_table(Last(), PROMPTS, GOLD, [None] * 3, DRAWN, GREEDY, CORRECT, limit=0, score_unfinished=False)
    assert table["prompt"] == []
    (tmp_path / "sft.json").write_text("{}")  # a link from an earlier run
    assert st.log_sample_table(None, "some-run", table, tmp_path / "sft.json") is None
    assert st.read_link(tmp_path / "sft.json") is None  # removed: it pointed at another run's table


def test_no_run_no_link(tmp_path):
    table = st.sample_table(Last(), PROMPTS, GOLD, [None] * 3, DRAWN, GREEDY, CORRECT, limit=3, score_unfinished=False)
    assert st.log_sample_table(None, None, table, tmp_path / "sft.json") is None and st.read_link(tmp_path / "sft.json") is None


def test_the_ui_link_only_for_a_server():
    assert st.ui_url("sqlite:////x/mlflow.db", "1", "abc") is None
    assert st.ui_url("http://127.0.0.1:5000/", "1", "abc") == \
        "http://127.0.0.1:5000/#/experiments/1/runs/abc/artifacts/samples/evaluate.json"


def test_link_lines_name_run_artifact_and_url():
    lines = st.link_lines({"sft": {"run_id": "r1", "artifact": st.ARTIFACT, "tracking_uri": "sqlite:///db", "url": None,
                                   "rows": 6, "prompts": 2},
                           "iwsft": {"run_id": "r2", "artifact": st.ARTIFACT, "tracking_uri": "http://h:5000",
                                     "url": "http://h:5000/#/x", "rows": 3, "prompts": 1},
                           "base": None})
    assert len(lines) == 2
    assert "`r1`" in lines[0] and st.ARTIFACT in lines[0] and "store `sqlite:///db`" in lines[0]
    assert "[MLflow UI](http://h:5000/#/x)" in lines[1]


def test_the_table_lands_in_the_run_as_an_mlflow_table(tmp_path, monkeypatch):
    """Real MLflow, a SQLite store in tmp_path: the artifact is MLflow's table JSON and the run is tagged with it."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment)
    monkeypatch.setattr("iwsft.tracking.store.pipeline_store", lambda params: uri)
    table = st.sample_table(Last(), PROMPTS, GOLD, [None] * 3, DRAWN, GREEDY, CORRECT, limit=3, score_unfinished=False)
    link = st.log_sample_table(None, run.info.run_id, table, tmp_path / "out" / "sft.json")
    assert link == st.read_link(tmp_path / "out" / "sft.json")
    assert (link["rows"], link["prompts"], link["url"]) == (9, 3, None)
    logged = json.loads(client.get_run(run.info.run_id).data.tags["mlflow.loggedArtifacts"])
    assert logged == [{"path": st.ARTIFACT, "type": "table"}]  # what makes the UI draw it as a table
    path = client.download_artifacts(run.info.run_id, st.ARTIFACT, str(tmp_path / "down"))
    data = json.loads(open(path).read())
    assert data["columns"] == list(st.COLUMNS)
    assert [row[data["columns"].index("completion")] for row in data["data"]][:3] == ["so 2", "so 3", "so 2"]


def test_a_store_that_fails_is_said_and_does_not_raise(tmp_path, monkeypatch, capsys):
    def down(params):
        raise ConnectionError("refused")

    monkeypatch.setattr("iwsft.tracking.store.pipeline_store", down)
    table = st.sample_table(Last(), PROMPTS, GOLD, [None] * 3, DRAWN, GREEDY, CORRECT, limit=1, score_unfinished=False)
    assert st.log_sample_table(None, "r", table, tmp_path / "sft.json") is None
    assert "could not log the sample table" in capsys.readouterr().err and st.read_link(tmp_path / "sft.json") is None


@pytest.mark.parametrize("limit", [1, 5])
def test_limit_past_the_end_is_all_prompts(limit):
    table = st.sample_table(Last(), PROMPTS, GOLD, [None] * 3, DRAWN, GREEDY, CORRECT, limit=limit,
                            score_unfinished=False)
    assert sorted(set(table["prompt_index"])) == list(range(min(limit, 3)))
