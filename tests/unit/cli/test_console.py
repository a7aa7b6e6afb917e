"""`iwsft run`'s console (iwsft.cli.console.Relay) on dvc output written here: per stage DVC's two lines
and one line of outcome, the rest in the stage's log; a failed stage's last lines; DVC's own lines kept.
tests/integration/test_mlflow.py counts the lines of a real `iwsft run`."""

import io
import json

from iwsft.cli.console import Relay, key_figure, log_name

EVALUATE = """Running stage 'evaluate@sft':
> iwsft evaluate --model sft
\rLoading weights:   0%|          | 0/38\rLoading weights: 100%|##########| 38/38
gates: Great Expectations loaded in 2.4 s
tracking: evaluate@sft -> http://127.0.0.1:5000/#/experiments/1/runs/abc123 (parent p1; 1.0 s)
iwsft evaluate: done in 6.1 s
WARNING: 'data/evaluate/sft/x' is empty.
Updating lock file 'dvc.lock'
"""


class Terminal(io.StringIO):
    def isatty(self):
        return True


def relay_output(text, tmp_path, console=None, chunk=7, failed=False):
    console = console or io.StringIO()
    relay = Relay(console, logs=tmp_path / "logs")
    for start in range(0, len(text), chunk):  # dvc's output comes in pieces that cut lines anywhere
        relay.feed(text[start:start + chunk])
    relay.close(failed=failed)
    return console.getvalue()


def test_a_stage_is_three_lines_with_its_time_figure_run_and_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/evaluate/sft").mkdir(parents=True)
    (tmp_path / "data/evaluate/sft/metrics.json").write_text(json.dumps(
        {"pass_at_1": 0.215, "pass_at_1_ci_low": 0.18, "pass_at_1_ci_high": 0.25}))
    shown = relay_output("Stage 'curate' didn't change, skipping\n" + EVALUATE, tmp_path).splitlines()
    assert shown[:3] == ["Stage 'curate' didn't change, skipping", "Running stage 'evaluate@sft':",
                         "> iwsft evaluate --model sft"]
    assert len(shown) == 4 and shown[3].startswith("  done in ")
    assert shown[3].endswith(": pass@1 0.215 [0.180, 0.250]; run http://127.0.0.1:5000/#/experiments/1/runs/abc123; "
                             f"log {tmp_path / 'logs/evaluate@sft.log'} (1 warning)")
    log = (tmp_path / "logs/evaluate@sft.log").read_text().splitlines()
    assert log[2] == "Loading weights: 100%|##########| 38/38"  # a redrawn line: what it showed last
    assert "gates: Great Expectations loaded in 2.4 s" in log and log[-1] == "Updating lock file 'dvc.lock'"


def test_a_failed_stage_shows_the_end_of_its_log_then_dvcs_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    failing = ("Running stage 'generate/dvc.yaml:sample':\n> iwsft sample\n"
               + "".join(f"detail {i}\n" for i in range(40))
               + "iwsft sample: error: data/sample/raw.jsonl, record 3, field 'prompt': missing\n"
               + "ERROR: failed to reproduce 'generate/dvc.yaml:sample': failed to run: iwsft sample, exited with 1\n")
    shown = relay_output(failing, tmp_path, failed=True).splitlines()
    log = tmp_path / "logs/generate-sample.log"
    assert shown[2] == f"  failed after {shown[2].split()[2]} s; the last lines of {log}:"
    assert shown[3:-1] == [f"detail {i}" for i in range(16, 40)] + [
        "iwsft sample: error: data/sample/raw.jsonl, record 3, field 'prompt': missing"]
    assert shown[-1].startswith("ERROR: failed to reproduce 'generate/dvc.yaml:sample'")
    assert "detail 0" in (tmp_path / "logs/generate-sample.log").read_text()  # the whole output is kept there


def test_a_progress_bar_is_drawn_in_place_on_a_terminal_and_never_left_as_a_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = "Running stage 'train@sft':\n> iwsft train --method sft\n\r 10%|#  | 10/100\r 50%|#####  | 50/100"
    terminal = Terminal()
    relay = Relay(terminal, logs=tmp_path / "logs")
    relay.feed(text)
    assert terminal.getvalue().endswith("\r 50%|#####  | 50/100\x1b[K")
    relay.feed("\r100%|#######| 100/100\n")
    relay.close()
    final = terminal.getvalue().split("\r\x1b[K")[-1].splitlines()  # after the bar is erased
    assert len(final) == 1 and final[0].startswith("  done in ")
    piped = relay_output(text + "\n", tmp_path)  # no terminal: no partial lines at all
    assert "%" not in piped and len(piped.splitlines()) == 3


def test_key_figures_come_from_what_the_stage_wrote_and_a_missing_file_is_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/train/sft").mkdir(parents=True)
    (tmp_path / "data/train/sft/train_log.json").write_text(json.dumps([{"loss": 1.0}, {"train_loss": 0.28007}]))
    assert key_figure("iwsft train --method sft", []) == "train loss 0.2801"
    assert key_figure("iwsft curate", []) == ""  # no report.json here
    assert key_figure("iwsft prepare", ["{'train_runtime': '58.99', 'train_loss': '1.297', 'epoch': '6.3'}"]) == \
        "train loss 1.2970"  # prepare writes no log of its own: the trainer's summary line
    assert log_name("generate/dvc.yaml:prepare") == "generate-prepare" and log_name("train@sft") == "train@sft"
    (tmp_path / "reports").mkdir()
    registry = {"model_name": "iwsft", "promoted": False, "champion": None, "winner": None,
                "candidate": {"method": "sft", "version": "1"}}
    for record, figure in ((registry, "iwsft: no champion yet, candidate v1 (sft)"),
                           ({**registry, "champion": "1"}, "iwsft: champion v1 kept"),
                           ({**registry, "promoted": True, "champion": "2",
                             "winner": {"method": "iwsft", "version": "2"}}, "iwsft: v2 (iwsft) promoted to champion")):
        (tmp_path / "reports/registry.json").write_text(json.dumps(record))
        assert key_figure("iwsft register", []) == figure


def test_a_run_in_the_local_store_is_named_by_its_id_and_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = ("Running stage 'report':\n> iwsft report\n"
            "tracking: report -> sqlite:////p/mlruns/mlflow.db run 0123abcd (parent p1; 0.4 s)\n")
    shown = relay_output(text, tmp_path).splitlines()
    assert shown[2].endswith(": reports/report.md; run 0123abcd in sqlite:////p/mlruns/mlflow.db; "
                             f"log {tmp_path / 'logs/report.log'}")
