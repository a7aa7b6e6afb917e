#!/usr/bin/env bash
# PNGs of the Prefect and MLflow UIs, taken with headless Chromium (a manual, documented step).
#
#   apt-get update && apt-get install -y chromium      # Debian 12: Chromium 15x, ~400 MB installed
#   make serve && prefect deployment run 'iwsft-pipeline/nightly'    # wait until it is Completed
#   scripts/screenshot_ui.sh [OUT.png] [URL]             # Prefect: the run page (docs/prefect-ui.png)
#   scripts/screenshot_ui.sh mlflow [OUT.png] [MODEL]    # MLflow: the registered model (docs/mlflow-registry.png)
#
# Prefect without URL: the newest Completed run of the iwsft-pipeline flow on the server of .run/prefect.env.
# MLflow: MLFLOW_TRACKING_URI if it is http(s), else 127.0.0.1:$MLFLOW_PORT (5000); MODEL: iwsft.
# docs/prefect-flow-run.png and docs/mlflow-registry.png come from the browser tests instead, on the
# micro project they serve (IWSFT_UI_SHOTS=docs pytest tests/integration/test_prefect.py -k browser).
# Both UIs are single-page apps: --virtual-time-budget lets their scripts fetch and draw before the shot.
# A fresh --user-data-dir and the --disable-* flags keep Chromium from phoning home (no network here).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${IWSFT_BIN:-$PWD/.venv/bin}
MAX_BYTES=500000
command -v chromium > /dev/null || { echo "screenshot: no chromium; apt-get install -y chromium" >&2; exit 1; }

if [[ ${1:-} == mlflow ]]; then
    OUT=${2:-docs/mlflow-registry.png}
    MODEL=${3:-iwsft}
    SERVER=${MLFLOW_TRACKING_URI:-}
    [[ $SERVER == http* ]] || SERVER=http://127.0.0.1:${MLFLOW_PORT:-5000}
    curl -sf -o /dev/null "$SERVER/health" || { echo "screenshot: no MLflow server at $SERVER; make serve" >&2; exit 1; }
    URL=${SERVER%/}/#/models/$MODEL
    WINDOW=1600,2000  # wide: MLflow opens its Assistant panel on the right; tall: a row per version
else
    OUT=${1:-docs/prefect-ui.png}
    URL=${2:-}
    WINDOW=1440,1000
fi

if [[ -z $URL ]]; then
    [[ -f .run/prefect.env ]] && source .run/prefect.env
    : "${PREFECT_API_URL:?screenshot: no server; run make serve first (or set PREFECT_API_URL)}"
    RUN_ID=$("$BIN/python" - <<'EOF'
import json, os, sys, urllib.request
query = {"flows": {"name": {"any_": ["iwsft-pipeline"]}}, "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
         "sort": "END_TIME_DESC", "limit": 1}
request = urllib.request.Request(os.environ["PREFECT_API_URL"] + "/flow_runs/filter", data=json.dumps(query).encode(),
                                 headers={"Content-Type": "application/json"})
runs = json.load(urllib.request.urlopen(request))
print(runs[0]["id"] if runs else "")
EOF
)
    [[ -n $RUN_ID ]] || { echo "screenshot: no completed iwsft-pipeline run yet" >&2; exit 1; }
    URL=${PREFECT_API_URL%/api}/runs/flow-run/$RUN_ID
fi

PROFILE=$(mktemp -d)
trap 'rm -rf "$PROFILE"' EXIT
mkdir -p "$(dirname "$OUT")"
# timeout: a page that never settles must not hang the script (a shot takes ~3 s on 2 cores)
timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$PROFILE" --hide-scrollbars \
    --window-size="$WINDOW" --virtual-time-budget=20000 --screenshot="$OUT" "$URL" 2> "$PROFILE/chromium.log" \
    || { cat "$PROFILE/chromium.log" >&2; exit 1; }

# a UI full of gradients can exceed what a repo should hold: fall back to a 256-colour palette
if (($(stat -c %s "$OUT") > MAX_BYTES)); then
    "$BIN/python" -c "import sys; from PIL import Image
Image.open(sys.argv[1]).convert('RGB').quantize(256).save(sys.argv[1], optimize=True)" "$OUT"
fi
echo "screenshot: $URL -> $OUT ($(stat -c %s "$OUT") bytes)"
