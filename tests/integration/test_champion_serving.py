"""The champion as users consume it: a model logged by iwsft.tracking.model_logging and registered with the
alias `champion` answers through `mlflow models serve` (real server, --env-manager local, 127.0.0.1, a free
port) and `mlflow.pyfunc.load_model`, the way it was trained:

- SmolLM2-135M-Instruct (a real chat model): an OpenAI-style chat request gets the assistant's reply, the
  one iwsft's own greedy generation writes on the ChatML-rendered prompt (so the server rendered the
  template), without the template's markers, and it is right ("10 - 8" -> 2); a plain string is the
  user's turn; a bad request is a 400 that says what to send.
- The demo's char model (no chat template): plain completion, as iwsft generates it.

About 1.5 min on 2 cores, most of it copying and loading SmolLM2's 540 MB.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from iwsft.encoding.chat import ChatFormat
from iwsft.evaluation.generation import generate_completions
from iwsft.model.artifacts import load_model

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = ROOT / "data/models/smollm2-135m-instruct"
BIN = Path(sys.executable).parent
QUESTION = "Calculate 10 - 8."
MAX_TOKENS = 16
MARKERS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "assistant\n", "system\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(url: str, body: dict) -> tuple[int, dict | str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def register(store: Path, model_dir: Path, name: str) -> str:
    """Log `model_dir` as the register stage does (model_logging) and make it `name`@champion; the store's URI."""
    from mlflow.tracking import MlflowClient

    from iwsft.tracking.model_logging import log_transformers_model

    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment(name, artifact_location=str(store / "artifacts" / name))
    run = client.create_run(experiment, run_name="register")
    info = log_transformers_model(uri, client, model_dir, "sft", run.info.run_id, f"# {name}", QUESTION, False)
    client.set_terminated(run.info.run_id)
    client.create_registered_model(name)
    version = client.create_model_version(name, info.model_uri, run_id=run.info.run_id, model_id=info.model_id)
    client.set_registered_model_alias(name, "champion", version.version)
    return uri


@pytest.fixture(scope="module")
def smollm2_store(tmp_path_factory):
    if not (SMOLLM2 / "iwsft_import.json").is_file():
        pytest.skip("SmolLM2 not imported: run `make smollm2`")
    store = tmp_path_factory.mktemp("serving-store")
    return register(store, SMOLLM2, "smollm2"), store


@pytest.fixture(scope="module")
def served(smollm2_store):
    """`mlflow models serve` of models:/smollm2@champion; stopped (its whole process group) after the module."""
    uri, store = smollm2_store
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    log = open(store / "serve.log", "wb")
    process = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", "models:/smollm2@champion",
                                "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                               env=env, stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mlflow models serve did not come up:\n{(store / 'serve.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def own_generation():
    """SmolLM2's own greedy replies, by iwsft's generation: on the ChatML-rendered prompt and on the raw text."""
    if not (SMOLLM2 / "iwsft_import.json").is_file():
        pytest.skip("SmolLM2 not imported: run `make smollm2`")
    model, tokenizer = load_model(SMOLLM2)
    chat = ChatFormat.from_setting("auto", tokenizer)
    rendered = generate_completions(model, tokenizer, [QUESTION], greedy=True, max_new_tokens=MAX_TOKENS,
                                    show_progress=False, chat=chat)[0][0]
    raw = generate_completions(model, tokenizer, [QUESTION], greedy=True, max_new_tokens=MAX_TOKENS,
                               show_progress=False)[0][0]
    return rendered, raw


def test_the_served_champion_answers_a_chat_request_as_it_was_trained(served, own_generation):
    rendered, raw = own_generation
    status, answer = post(f"{served}/invocations",
                          {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": MAX_TOKENS})
    assert status == 200, answer
    assert answer["object"] == "chat.completion" and len(answer["choices"]) == 1
    message = answer["choices"][0]["message"]
    assert message["role"] == "assistant"
    reply = message["content"]
    assert reply == rendered  # the server rendered ChatML as the pipeline does (greedy: the same tokens)
    assert reply != raw  # ... which is not what the bare text gets
    assert not any(marker in reply for marker in MARKERS), reply  # the reply alone, not the template around it
    assert "2" in reply and QUESTION not in reply, reply  # the answer, not the question echoed
    assert answer["usage"]["prompt_tokens"] > 20  # the template's system prompt was in the prompt


def test_a_plain_string_is_the_users_turn_and_bad_requests_say_what_to_send(served, own_generation):
    rendered, _ = own_generation
    status, answer = post(f"{served}/invocations", {"inputs": [QUESTION], "params": {"max_tokens": MAX_TOKENS}})
    assert status == 200, answer
    assert answer == {"predictions": [rendered]}
    status, answer = post(f"{served}/invocations", {"messages": "Calculate 10 - 8."})
    assert status == 400 and '\\"messages\\" must be a list' in answer, answer


def test_pyfunc_load_model_by_alias_takes_messages_and_strings(smollm2_store, own_generation, monkeypatch):
    import mlflow

    uri, _ = smollm2_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model("models:/smollm2@champion")
    rendered, _ = own_generation
    assert model.predict([QUESTION], params={"max_tokens": MAX_TOKENS}) == [rendered]
    answer = model.predict({"messages": [{"role": "user", "content": QUESTION}], "max_tokens": MAX_TOKENS})
    assert answer["choices"][0]["message"]["content"] == rendered


def test_a_model_without_a_chat_template_completes_plain_text(tmp_path, monkeypatch):
    """The demo's char model: strings are continued as they are, as `iwsft generate` does."""
    import mlflow
    import mlflow.transformers

    from iwsft.model.tiny_lm import build_char_tokenizer, build_tiny_llama

    tokenizer = build_char_tokenizer()
    model = build_tiny_llama(len(tokenizer), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, seed=1)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    uri = register(tmp_path / "store", tmp_path / "tiny", "tiny")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    served = mlflow.pyfunc.load_model("models:/tiny@champion")
    prompts = ["12+7=", "38-57-10="]
    expected = [c[0] for c in generate_completions(model, tokenizer, prompts, greedy=True, max_new_tokens=6,
                                                   show_progress=False)]
    assert served.predict(prompts, params={"max_tokens": 6}) == expected
    with pytest.raises(Exception, match="without a chat template"):
        served.predict({"messages": [{"role": "user", "content": "12+7="}]})
    # the files: safetensors weights, the loader as source, nothing pickled; the transformers flavor intact
    local = Path(mlflow.artifacts.download_artifacts("models:/tiny@champion", dst_path=str(tmp_path / "down")))
    names = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {"model/model.safetensors", "code/iwsft_chat_pyfunc.py", "MLmodel"} <= names, names
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".bin", ".pt", ".pth"))], names
    pipeline = mlflow.transformers.load_model("models:/tiny@champion")
    assert pipeline.model.num_parameters() == model.num_parameters()
