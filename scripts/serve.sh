#!/usr/bin/env bash
# make serve: a local Prefect server and its UI, the deployments of prefect.yaml, a process worker
# for them, and the MLflow server when the project has one (scripts/mlflow_server.sh).
# make stop (scripts/stop.sh) stops exactly these processes, by the pid files under .run/.
#
# Settings (environment):
#   PREFECT_PORT          default 4200; if 4200 is taken and PREFECT_PORT is unset, a free port
#   PREFECT_HOME          default .run/prefect (the SQLite database, profiles, logs)
#   PREFECT_API_DATABASE_CONNECTION_URL   PostgreSQL instead of SQLite, e.g.
#                         postgresql+asyncpg://user:pass@127.0.0.1:5432/prefect
#   MLFLOW_PORT           default 5000, passed to scripts/mlflow_server.sh
# Measured on the 2-core dev machine: server healthy after ~12-25 s, the whole script ~35-60 s.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=$ROOT/.run
BIN=${IWSFT_BIN:-$ROOT/.venv/bin}
PREFECT=$BIN/prefect
HOST=127.0.0.1
POOL=iwsft-process
mkdir -p "$RUN"

export PATH="$BIN:$PATH"  # dvc.yaml's commands call `iwsft`; flow runs inherit the worker's PATH
export PREFECT_HOME=${PREFECT_HOME:-$RUN/prefect}
export PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false GX_ANALYTICS_ENABLED=false

alive() { [[ -f $RUN/$1.pid ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# Each process gets its own session (setsid; non-interactive bash does not make background jobs
# group leaders, so setsid does not fork and $! is the group's id): stop.sh can then stop the
# process and its children as one group without looking anything up by name.
start() {
    local name=$1; shift
    setsid "$@" > "$RUN/$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN/$name.pid"
}

wait_http() {  # url seconds name: until it answers, or fail fast if the process has died
    local deadline=$((SECONDS + $2))
    until curl -sf -o /dev/null "$1"; do
        if ! alive "$3" || ((SECONDS > deadline)); then
            echo "serve: $3 did not answer at $1 (log: .run/$3.log; clean up: make stop)" >&2
            tail -n 20 "$RUN/$3.log" >&2
            exit 1
        fi
        sleep 1
    done
}

# SO_REUSEADDR as uvicorn sets it: a port left in TIME-WAIT by a stopped server is free to it
port_free() {
    "$BIN/python" -c "import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('$HOST', int(sys.argv[1])))" "$1" 2>/dev/null
}

# --- Prefect server (scheduler included: cron schedules only fire on a real server) ---
if alive prefect-server; then
    source "$RUN/prefect.env"
    echo "serve: Prefect server already running (pid $(cat "$RUN/prefect-server.pid"))"
else
    PORT=${PREFECT_PORT:-4200}
    if ! port_free "$PORT"; then
        [[ -n ${PREFECT_PORT:-} ]] && { echo "serve: port $PORT is taken" >&2; exit 1; }
        PORT=$("$BIN/python" -c "import socket; s=socket.socket(); s.bind(('$HOST', 0)); print(s.getsockname()[1])")
    fi
    started=$SECONDS
    # the UI asks the browser to call PREFECT_UI_API_URL, which otherwise says port 4200 whatever --port is
    export PREFECT_API_URL=http://$HOST:$PORT/api PREFECT_UI_API_URL=http://$HOST:$PORT/api
    start prefect-server "$PREFECT" server start --host "$HOST" --port "$PORT"
    wait_http "http://$HOST:$PORT/api/health" 120 prefect-server
    database="SQLite in $PREFECT_HOME"
    [[ -n ${PREFECT_API_DATABASE_CONNECTION_URL:-} ]] && database="PREFECT_API_DATABASE_CONNECTION_URL"
    echo "serve: Prefect server healthy after $((SECONDS - started)) s (database: $database)"
    printf 'export PREFECT_HOME=%q\nexport PREFECT_API_URL=%q\n' "$PREFECT_HOME" "$PREFECT_API_URL" > "$RUN/prefect.env"
    source "$RUN/prefect.env"
fi
UI=${PREFECT_API_URL%/api}

# --- MLflow (only if the project provides its server script and nothing answers on its port) ---
MLFLOW_PORT=${MLFLOW_PORT:-5000}
if [[ -f scripts/mlflow_server.sh ]]; then
    if alive mlflow || curl -sf -o /dev/null "http://$HOST:$MLFLOW_PORT/health"; then
        echo "serve: MLflow already answering on port $MLFLOW_PORT"
    else
        MLFLOW_PORT=$MLFLOW_PORT start mlflow bash scripts/mlflow_server.sh
        wait_http "http://$HOST:$MLFLOW_PORT/health" 120 mlflow
    fi
    export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-http://$HOST:$MLFLOW_PORT}  # flow runs link their runs
fi

# --- work pool (concurrency 1: one DVC command per workspace at a time) and deployments ---
"$PREFECT" work-pool inspect "$POOL" > /dev/null 2>&1 || "$PREFECT" work-pool create "$POOL" --type process > /dev/null
"$PREFECT" work-pool set-concurrency-limit "$POOL" 1 > /dev/null
# Deploy what has a pool: the docker pool exists only once a GPU host's Docker worker created it.
mapfile -t NAMES < <("$BIN/python" - <<'EOF'
import json, os, urllib.request, yaml
deployments = yaml.safe_load(open("prefect.yaml"))["deployments"]
request = urllib.request.Request(os.environ["PREFECT_API_URL"] + "/work_pools/filter", data=b"{}",
                                 headers={"Content-Type": "application/json"})
pools = {pool["name"] for pool in json.load(urllib.request.urlopen(request))}
for deployment in deployments:
    print(("" if deployment["work_pool"]["name"] in pools else "#") + deployment["name"])
EOF
)
DEPLOY=() DEPLOYED=()
for name in "${NAMES[@]}"; do
    if [[ $name == \#* ]]; then echo "serve: skipping deployment ${name#\#} (its work pool does not exist here)"
    else DEPLOY+=(--name "$name"); DEPLOYED+=("$name"); fi
done
"$PREFECT" --no-prompt deploy "${DEPLOY[@]}" > "$RUN/deploy.log" 2>&1 || { cat "$RUN/deploy.log" >&2; exit 1; }
echo "serve: deployed ${DEPLOYED[*]} (schedules: see prefect.yaml)"

# --- worker: runs each flow run as a subprocess in this checkout ---
if alive prefect-worker; then
    echo "serve: worker already running (pid $(cat "$RUN/prefect-worker.pid"))"
else
    start prefect-worker "$PREFECT" worker start --pool "$POOL" --type process --name "iwsft-$(hostname)"
fi

cat <<EOF

Prefect UI    $UI   (deployments: $UI/deployments, runs: $UI/runs)
Prefect API   source .run/prefect.env   # sets PREFECT_API_URL=$PREFECT_API_URL
$([[ -f scripts/mlflow_server.sh ]] && echo "MLflow UI     http://$HOST:$MLFLOW_PORT")
Run now       prefect deployment run 'iwsft-pipeline/nightly'
Logs          .run/*.log        Stop: make stop
EOF
