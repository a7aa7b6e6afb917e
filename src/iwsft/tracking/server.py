"""The project's local MLflow server on 127.0.0.1, and the store it shares with plain `dvc repro`.

One store per project, under `mlruns/` (gitignored): `mlruns/mlflow.db` (SQLite: runs and the model
registry) and `mlruns/artifacts/` (plain files). Stages with no MLFLOW_TRACKING_URI write to that
store directly (iwsft.tracking.runs), and the server serves the same files, so `make serve` shows the
runs of a `dvc repro` made while no server was up. Artifacts are not proxied (--no-serve-artifacts):
the server and its clients share this machine's disk, and it is one process less to go wrong.

    python -m iwsft.tracking.server exec   [--port P]   # the server in the foreground (scripts/mlflow_server.sh)
    python -m iwsft.tracking.server start  [--port P]   # in the background: .run/mlflow.pid, .run/mlflow.log
    python -m iwsft.tracking.server ensure [--port P]   # MLFLOW_TRACKING_URI if set, else start if needed; prints the URI
    python -m iwsft.tracking.server stop

MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false keeps the server at 2 processes and ~0.5 GB instead of 10
and ~2.4 GB (STACK.md §3); nothing here uses MLflow's job runner. Light imports only: no mlflow.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
DEFAULT_PORT = 5000  # scripts/serve.sh passes MLFLOW_PORT, default 5000 as well
STORE = "mlruns"


def local_store_uri(root: str | Path = ".") -> str:
    """sqlite:///ABS/mlruns/mlflow.db: tracking and registry, no server needed."""
    return f"sqlite:///{(Path(root).resolve() / STORE / 'mlflow.db')}"


def artifact_root(root: str | Path = ".") -> Path:
    return Path(root).resolve() / STORE / "artifacts"


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:  # refused, reset, timed out, HTTP errors (URLError and HTTPError are OSErrors)
        return False


def server_command(root: str | Path, port: int, host: str = HOST) -> list[str]:
    (Path(root) / STORE).mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", local_store_uri(root),
            "--default-artifact-root", str(artifact_root(root)), "--no-serve-artifacts",
            "--host", host, "--port", str(port), "--workers", "1"]


def server_env() -> dict:
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@dataclass
class Server:
    url: str
    pid: int | None  # None: somebody else's server already answered on the port
    seconds_to_healthy: float = 0.0


def start(root: str | Path = ".", port: int = DEFAULT_PORT, run_dir: str | Path | None = None,
          timeout: float = 120.0) -> Server:
    """Start the server in its own process group (so stop() ends its workers too); wait for /health."""
    url = f"http://{HOST}:{port}"
    if healthy(url):
        return Server(url, None)
    run_dir = Path(run_dir) if run_dir else Path(root) / ".run"
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(run_dir / "mlflow.log", "ab") as log:
        process = subprocess.Popen(server_command(root, port), env=server_env(), stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    (run_dir / "mlflow.pid").write_text(f"{process.pid}\n")
    while not healthy(url):
        if process.poll() is not None or time.perf_counter() - started > timeout:
            stop(run_dir / "mlflow.pid")
            tail = (run_dir / "mlflow.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the MLflow server did not answer at {url} within {timeout:.0f} s "
                               f"(see {run_dir / 'mlflow.log'}):\n{tail}")
        time.sleep(0.3)
    return Server(url, process.pid, time.perf_counter() - started)


def stop(pid_file: str | Path = ".run/mlflow.pid", grace: float = 15.0) -> bool:
    """SIGTERM the server's process group, SIGKILL what is left after `grace` s; True if one ran."""
    pid_file = Path(pid_file)
    if not pid_file.is_file():
        return False
    pid = int(pid_file.read_text().split()[0])
    pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        _reap(pid)
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def ensure(root: str | Path = ".", port: int = DEFAULT_PORT) -> str:
    """The URI `make run` should log to: MLFLOW_TRACKING_URI when set, else a local server (started if needed)."""
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    server = start(root, port)
    if server.pid:
        print(f"mlflow: server started at {server.url} in {server.seconds_to_healthy:.1f} s "
              f"(store {STORE}/; stop it with `make stop`)", file=sys.stderr)
    return server.url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iwsft.tracking.server", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["exec", "start", "ensure", "stop"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLFLOW_PORT", DEFAULT_PORT)))
    parser.add_argument("--root", default=".", help="the project root (the store is ROOT/mlruns)")
    args = parser.parse_args(argv)
    if args.action == "exec":  # replace this process: the caller's pid file then names the server itself
        command = server_command(args.root, args.port)
        os.execve(command[0], command, server_env())
    try:
        if args.action == "start":
            server = start(args.root, args.port)
            print(f"mlflow: {'started' if server.pid else 'already running'} at {server.url}")
        elif args.action == "ensure":
            print(ensure(args.root, args.port))
        else:
            print("mlflow: stopped" if stop(Path(args.root) / ".run" / "mlflow.pid") else "mlflow: not running")
    except RuntimeError as error:
        print(f"mlflow: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
