#!/usr/bin/env bash
# A PNG of the Prefect UI, taken with headless Chromium (a manual, documented step: docs/prefect-ui.png).
#
#   apt-get update && apt-get install -y chromium      # Debian 12: Chromium 15x, ~400 MB installed
#   make serve && prefect deployment run 'iwsft-pipeline/nightly'    # wait until it is Completed
#   scripts/screenshot_ui.sh [OUT.png] [URL]
#
# Without URL: the newest Completed run of the iwsft-pipeline flow on the server of .run/prefect.env.
# The UI is a single-page app: --virtual-time-budget lets its scripts fetch and draw before the shot.
# A fresh --user-data-dir and the --disable-* flags keep Chromium from phoning home (no network here).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/prefect-ui.png}
URL=${2:-}
BIN=${IWSFT_BIN:-$PWD/.venv/bin}
MAX_BYTES=500000
command -v chromium > /dev/null || { echo "screenshot: no chromium; apt-get install -y chromium" >&2; exit 1; }

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
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$PROFILE" --hide-scrollbars \
    --window-size=1440,1000 --virtual-time-budget=20000 --screenshot="$OUT" "$URL" 2> "$PROFILE/chromium.log" \
    || { cat "$PROFILE/chromium.log" >&2; exit 1; }

# a UI full of gradients can exceed what a repo should hold: fall back to a 256-colour palette
if (($(stat -c %s "$OUT") > MAX_BYTES)); then
    "$BIN/python" -c "import sys; from PIL import Image
Image.open(sys.argv[1]).convert('RGB').quantize(256).save(sys.argv[1], optimize=True)" "$OUT"
fi
echo "screenshot: $URL -> $OUT ($(stat -c %s "$OUT") bytes)"
