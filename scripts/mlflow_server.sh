#!/usr/bin/env bash
# The project's MLflow server in the foreground, on 127.0.0.1:${MLFLOW_PORT:-5000}: SQLite backend
# mlruns/mlflow.db and artifacts in mlruns/artifacts (the store `dvc repro` uses when no server is
# up), job runner off. scripts/serve.sh runs it under setsid with .run/mlflow.pid; `make stop` ends it.
# The flags live in one place: src/iwsft/tracking/server.py (`exec` replaces this shell with the server).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${IWSFT_BIN:-$PWD/.venv/bin}
exec "$BIN/python" -m iwsft.tracking.server exec --port "${MLFLOW_PORT:-5000}"
