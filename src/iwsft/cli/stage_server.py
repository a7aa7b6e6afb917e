"""A resident stage runner for `iwsft run`: the stages' imports are paid once per run, not once per stage.

Why: in the micro DAG an evaluate stage spent ~7 s before ~1 s of work, importing torch, transformers
(and its Llama modelling code, at the first from_pretrained), MLflow and reasoning-gym (py-spy, issue 30).
Fifteen stages paid that fifteen times. Here one server process imports them once (PRELOAD); `dvc repro`
still runs every stage's own command (`iwsft train --method sft`), whose client hands its arguments,
working directory, environment and standard streams (the file descriptors themselves, SCM_RIGHTS) to the
server over a Unix socket. The server forks; the child becomes that stage's process (the same code as
`iwsft <stage>`, writing to DVC's pipes, in DVC's directory and environment) and its exit status goes back
to the client, which exits with it. DVC sees an ordinary command; a signal the client gets (Ctrl-C, a
timeout's SIGTERM) is passed on to the child.

Scope: `iwsft run`, `iwsft study` and the Prefect flows start a server for the length of their run
(IWSFT_STAGE_SERVER, the socket's path, is in dvc's environment), so stages always run the code of this
checkout. A stage that comes while the server is still importing waits for it (the run's first, usually).
Without that variable (a plain `dvc repro`), when the server is gone, does not answer or refuses (another
environment), a stage runs in a process of its own, as before: the same code either way. No server starts on a CUDA host (NVIDIA_DEVICE) or with IWSFT_NO_STAGE_SERVER set.

Fork safety: the server only imports. It runs no torch operation (no OpenMP or MKL thread pool exists to
be inherited half-initialised), opens no MLflow store, starts no Python thread (a native allocator thread
of an imported library, jemalloc's, has its own fork handlers), and its collector's objects are frozen
(gc.freeze), so the children share its pages copy-on-write. Python reseeds `random` in a forked
child; every stage seeds what it draws from params.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ENV = "IWSFT_STAGE_SERVER"  # the socket's path, for the stages' clients
PRELOAD = ("torch", "transformers", "transformers.models.llama.modeling_llama", "mlflow",
           "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.tracking.rest_store", "peft", "accelerate",
           "iwsft.tasks.chain_sum", "iwsft.tracking.runs")  # + every iwsft.stages module (main.STAGES)
HEADER = struct.Struct("!I")  # the request's length, before its JSON
OFF = "IWSFT_NO_STAGE_SERVER"  # set (to anything): no server, a process per stage
# On a CUDA host no server is started: a process forked after CUDA's driver was touched (transformers asks
# torch whether a GPU is there) cannot use the GPU, and this path is untested on GPUs. There, the imports
# are a small part of a stage anyway.
NVIDIA_DEVICE = "/dev/nvidiactl"
STOP_WAIT_S = 10  # how long the end of a run waits for its server to exit
STARTUP_WAIT_S = 60  # how long a stage waits for a server that is still importing
PARENT_CHECK_S = 5  # how often the server checks that the process that started it is alive
# variables that differ from one stage command to the next and are read at run time only: DVC's (DVC_ROOT,
# DVC_STAGE, an experiment's DVC_EXP_*), the shell's, and this module's own
PER_COMMAND_PREFIXES = ("DVC_",)
PER_COMMAND = frozenset({ENV, "PWD", "OLDPWD", "SHLVL", "_"})


# --- client: the `iwsft <stage>` process dvc starts --------------------------------------------------------

def run_remotely(argv: list[str]) -> int | None:
    """Runs this stage command in a child of the server named by IWSFT_STAGE_SERVER and returns its exit
    status; None when there is no server to ask (the caller runs the stage itself)."""
    path = os.environ.get(ENV)
    if not path:
        return None
    _wait_while_starting(path)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
    except OSError:  # gone, or failed to start: run here
        connection.close()
        return None
    with connection:
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        socket.send_fds(connection, [HEADER.pack(len(request)) + request], [0, 1, 2])
        replies = connection.makefile("r")
        first = replies.readline()
        if first.startswith("refused"):  # an environment the server's imports did not see: run here
            return None
        child = int(first or 0)
        if child:
            for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # Ctrl-C, a timeout: to the stage
                signal.signal(number, lambda received, frame: os.kill(child, received))
        status = replies.readline().split()
    if not child or not status:
        print(f"iwsft {argv[1] if len(argv) > 1 else ''}: the stage server ({path}) ended before the stage did",
              file=sys.stderr)
        return 1
    return int(status[-1])


def _wait_while_starting(path: str) -> None:
    """The run's first stage usually starts before the server has finished its imports (~5 s): it waits
    for them rather than making the same imports beside them on the same cores, as long as the server
    is alive (its pid is in the socket's folder) and for STARTUP_WAIT_S at most."""
    try:
        server = int(Path(path).with_name("pid").read_text())
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + STARTUP_WAIT_S
    while not os.path.exists(path) and time.monotonic() < deadline and _alive(server):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running, not a zombie (a server that died while importing stays one until its run waits for it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# --- the run's side: one server for the length of a `dvc repro` -----------------------------------------------

@contextlib.contextmanager
def running(env: dict, log: Path = Path("logs") / "stage-server.log"):
    """A server for the block, started with `env` (the environment dvc gets); yields `env` with
    IWSFT_STAGE_SERVER set. The server's own messages (never a stage's) go to `log`.

    The server has a session of its own: a Ctrl-C reaches the stages through their clients (which DVC
    stops), not through the server. At the end of the block it stops taking stages (new clients run
    theirs themselves) and exits once the stages it runs have ended: an interrupted `iwsft study` leaves
    DVC's workers running their experiments, and none of them fails for it."""
    if env.get(OFF) or os.path.exists(NVIDIA_DEVICE):
        yield dict(env)  # every stage in a process of its own
        return
    folder = tempfile.mkdtemp(prefix="iwsft-stages-")  # short: a Unix socket's path has ~100 bytes at most
    path = os.path.join(folder, "socket")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as output:
        server = subprocess.Popen([sys.executable, "-m", "iwsft.cli.stage_server", path], env=env,
                                  stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    Path(folder, "pid").write_text(str(server.pid))
    try:
        yield {**env, ENV: path}
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=STOP_WAIT_S)  # at once, unless stages are still running: then it ends with them
        shutil.rmtree(folder, ignore_errors=True)  # the socket: gone already, or its server is draining


# --- server ----------------------------------------------------------------------------------------------

def serve(path: str, stages: tuple[str, ...], environment: dict) -> None:
    """Import PRELOAD and the stages, then run each request's stage in a forked child; on SIGTERM, stop
    taking requests and return once the running stages have ended. environment: the server's as it was
    started (imports set some variables, TQDM_DELAY, that a stage's client has not set yet)."""
    import gc

    gc.disable()  # imports only make objects that live as long as the process: nothing to collect
    for name in (*PRELOAD, *(f"iwsft.stages.{stage}" for stage in stages)):
        try:
            importlib.import_module(name)
        except ImportError:  # an optional extra: its stage imports it, or says it is missing, as usual
            pass
    gc.freeze()
    gc.enable()
    # SIGTERM only sets a flag; the byte signal writes to `wake` ends the select (the self-pipe idiom)
    wake, woken = os.pipe()
    os.set_blocking(woken, False)
    signal.set_wakeup_fd(woken)
    stopping = []
    signal.signal(signal.SIGTERM, lambda received, frame: stopping.append(received))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(16)
    os.rename(path + ".tmp", path)  # the socket appears once it is ready
    waiting: dict[int, tuple[socket.socket, int]] = {}  # pidfd -> (the client's connection, child pid)
    clients: dict[socket.socket, int] = {}  # the client's connection -> its child's pid
    parent = os.getppid()
    while not stopping or waiting:
        if os.getppid() != parent and not stopping:  # the run was killed (SIGKILL): no server outlives it
            stopping.append("parent gone")
        if stopping and listener.fileno() >= 0:  # no new stages; new clients find no socket and run their own
            listener.close()
            os.unlink(path)
            print(f"stopping: {len(waiting)} stages still running", flush=True)
        ready, _, _ = select.select([wake, *([listener] if listener.fileno() >= 0 else []), *waiting, *clients], [], [],
                                    PARENT_CHECK_S)
        for item in ready:
            if item == wake:
                os.read(wake, 64)
            elif item is listener:
                connection, _ = listener.accept()
                started = _start(connection, environment, (listener, wake, woken))
                if started:
                    waiting[os.pidfd_open(started)] = (connection, started)
                    clients[connection] = started
                    print(f"pid {started}: started", flush=True)
            elif isinstance(item, socket.socket):  # readable: the client hung up (DVC killed it)
                with contextlib.suppress(OSError):
                    if item.recv(1):
                        continue  # a client sends nothing after its request: not a hang-up
                os.kill(clients.pop(item), signal.SIGTERM)
            else:
                connection, child = waiting.pop(item)
                clients.pop(connection, None)
                os.close(item)
                _, status = os.waitpid(child, 0)
                code = os.waitstatus_to_exitcode(status)
                code = code if code >= 0 else 128 - code  # killed by a signal: 128 + its number, as a shell says
                print(f"pid {child}: exit {code}", flush=True)
                _reply(connection, f"exit {code}\n")
    print("stopped", flush=True)


def _reply(connection: socket.socket, text: str) -> None:
    try:
        connection.sendall(text.encode())
    except OSError:  # the client is gone (killed): nothing to tell
        pass
    connection.close()


def _start(connection: socket.socket, environment: dict, servers_own: tuple) -> int | None:
    """Fork the child that runs the request's stage; its pid (sent to the client too), None on a bad request."""
    try:
        request, fds = _receive(connection)
        print(f"{' '.join(request['argv'][1:])} in {request['cwd']}", flush=True)
        differ = environment_differences(environment, request["env"])
    except (OSError, ValueError, KeyError, TypeError) as error:  # not our client's request: refused, server up
        print(f"stage server: a request could not be read: {error!r}", flush=True)
        connection.close()
        return None
    if differ:
        print(f"refused: the environment differs in {', '.join(differ)}; the stage runs in its own process",
              flush=True)
        for fd in fds:
            os.close(fd)
        _reply(connection, "refused\n")
        return None
    child = os.fork()
    if child == 0:
        signal.set_wakeup_fd(-1)
        listener, wake, woken = servers_own
        listener.close()
        os.close(wake)
        os.close(woken)
        connection.close()
        _run_child(request, fds)  # never returns
    for fd in fds:
        os.close(fd)
    try:
        connection.sendall(f"{child}\n".encode())
    except OSError:  # the client died before its stage started: stop the stage
        os.kill(child, signal.SIGTERM)
    return child


def environment_differences(own: dict, theirs: dict) -> list[str]:
    """Names of the variables, set or changed, in which a stage's environment differs from the server's,
    leaving out those DVC and the shell set per command (PER_COMMAND). Some are read at import time
    (HF_HOME, HF_HUB_OFFLINE, OMP_NUM_THREADS, TQDM_DELAY...), so a stage whose environment differs
    would not see what a process of its own sees: it is refused, and runs in a process of its own."""
    names = (set(own) | set(theirs))
    return sorted(name for name in names
                  if own.get(name) != theirs.get(name) and not name.startswith(PER_COMMAND_PREFIXES)
                  and name not in PER_COMMAND)


def _receive(connection: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
    if len(fds) != 3 or len(data) < HEADER.size:
        for fd in fds:
            os.close(fd)
        raise ValueError("expected a request and three file descriptors")
    (length,) = HEADER.unpack(data[: HEADER.size])
    body = data[HEADER.size :]
    while len(body) < length:
        more = connection.recv(length - len(body))
        if not more:
            raise ValueError("the request ended early")
        body += more
    return json.loads(body), fds


def _run_child(request: dict, fds: list[int]) -> None:
    """The stage's process: the client's streams, directory, environment and arguments, then `iwsft`'s main."""
    code = 1
    try:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL if number != signal.SIGINT else signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.pop(ENV, None)  # a stage that launches processes of its own (num_processes > 1) starts them plainly
        sys.argv = list(request["argv"])
        from iwsft.cli.main import main

        code = main(sys.argv[1:])
    except SystemExit as exit_:  # argparse's usage errors, sys.exit in a stage
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - as an uncaught exception ends a process: its traceback, status 1
        traceback.print_exc()
        code = 1
    finally:
        try:
            atexit._run_exitfuncs()  # what a normal exit runs (MLflow, logging); then the streams
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


if __name__ == "__main__":
    started_with = dict(os.environ)
    from iwsft.cli.main import STAGES, set_command_defaults

    set_command_defaults()  # what main() sets before any import of a command, here before the imports
    serve(sys.argv[1], STAGES, started_with)
