#!/usr/bin/env bash
# Build docker/Dockerfile.cpu here, on a machine with no Docker daemon and no registry for base images
# (our dev machines: STACK.md §7). Optional and NOT part of CI: about 1 min of installs, a debootstrap base,
# a private dockerd. Needs root (apt-get, debootstrap, dockerd), Debian bookworm, PyPI.
#
#   scripts/build_cpu_image.sh                 # build iwsft:cpu, smoke-test it, stop the daemon
#   KEEP_DAEMON=1 scripts/build_cpu_image.sh   # leave dockerd running (DOCKER_HOST is printed)
#
# What it does, and why:
# 1. apt-get install docker.io debootstrap (Debian's engine 20.10; its legacy builder reads Dockerfile.cpu).
# 2. A stand-in for python:3.11.14-slim-bookworm: debootstrap --variant=minbase bookworm with python3 (3.11.2),
#    python3-venv and python3-dev (the headers, as in the official image), imported as
#    localhost/python:3.11-bookworm. pip reaches PyPI here through a CA that only the host trusts, so the
#    host's CA bundle goes into the base and PIP_CERT points at it.
# 3. A private dockerd under $WORK: no iptables, no bridge (builds use the host's network).
# 4. download.pytorch.org is unreachable: torch 2.13.0+cpu and its dependencies come from the host's pip
#    (its wheel folder) and are served as a package index on 127.0.0.1 (TORCH_INDEX_URL).
# 5. docker build --network host, then `iwsft --help`, the imports the services need, `dvc status` without
#    git, and a rebuild after a change in the build context (which must reuse the torch and dependency
#    layers). Prints times and the image size. Measured here (2 cores, shared): cold build 8-9 min,
#    rebuild 6-10 s, image 2.34 GB. The cache stays in $WORK (~7.5 GB): rm -rf it when done.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/iwsft-docker}
PORT=${INDEX_PORT:-8765}
BASE=localhost/python:3.11-bookworm
SOCK=$WORK/run/docker.sock
PROBE=docker/.rebuild-probe
export DOCKER_BUILDKIT=0   # Debian's 20.10 engine, no buildx: the legacy builder
# an engine that already answers (DOCKER_HOST, or /var/run/docker.sock: e.g. scripts/build_gpu_image.sh's,
# which scripts/compose_smoke.sh needs) is used and left alone; else a private one under $WORK
OWN_DAEMON=0
if ! docker version >/dev/null 2>&1; then export DOCKER_HOST=unix://$SOCK OWN_DAEMON=1; fi
mkdir -p "$WORK/run"
log() { printf '\n== %s\n' "$*"; }

log "1. docker.io, debootstrap"
command -v dockerd >/dev/null && command -v debootstrap >/dev/null \
  || apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null

log "2. the stand-in base image $BASE"
if [ ! -e "$WORK/rootfs/usr/include/python3.11/Python.h" ]; then
  rm -rf "$WORK/rootfs"
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  debootstrap --variant=minbase --include=python3,python3-venv,python3-dev,ca-certificates \
    bookworm "$WORK/rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
  cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs/etc/ssl/certs/host-ca-bundle.crt"
  rm -rf "$WORK/rootfs/var/cache/apt/archives"/*.deb "$WORK/rootfs/var/lib/apt/lists"/*
fi

log "3. a private dockerd (unless an engine answers)"
if [ "$OWN_DAEMON" = 1 ] && ! docker version >/dev/null 2>&1; then
  dockerd --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/run/dockerd.pid" \
    -H "$DOCKER_HOST" --iptables=false --ip6tables=false --bridge=none >"$WORK/dockerd.log" 2>&1 &
  for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
fi
stop() {
  rm -f "$PROBE"
  [ -n "${INDEX_PID:-}" ] && kill "$INDEX_PID" 2>/dev/null || true
  if [ "$OWN_DAEMON" = 1 ] && [ "${KEEP_DAEMON:-0}" != 1 ] && [ -f "$WORK/run/dockerd.pid" ]; then
    pid=$(cat "$WORK/run/dockerd.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    umount "$WORK/exec/netns/default" 2>/dev/null || true   # dockerd leaves this bind mount behind
  fi
}
trap stop EXIT
docker image inspect "$BASE" >/dev/null 2>&1 \
  || tar -C "$WORK/rootfs" -c . | docker import \
       --change 'ENV PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt' --change 'CMD ["python3"]' - "$BASE" >/dev/null

log "4. torch 2.13.0+cpu and its dependencies as a local index on 127.0.0.1:$PORT"
torch=$(sed -n 's/^ARG TORCH_VERSION=//p' docker/Dockerfile.cpu)
rm -rf "$WORK/wheels" "$WORK/index" && mkdir -p "$WORK/wheels" "$WORK/index"
pip download --quiet --only-binary=:all: --python-version 3.11 --dest "$WORK/wheels" "torch==$torch" 2>/dev/null
for wheel in "$WORK"/wheels/*.whl; do  # PEP 503: one folder per normalised project name
  name=$(basename "$wheel" | cut -d- -f1 | tr 'A-Z_.' 'a-z--')
  mkdir -p "$WORK/index/$name" && ln -sf "$wheel" "$WORK/index/$name/"
done
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK/index" >/dev/null 2>&1 &
INDEX_PID=$!
sleep 1

log "5. docker build -f docker/Dockerfile.cpu -t iwsft:cpu ."
build() {
  docker build --network host -f docker/Dockerfile.cpu -t iwsft:cpu \
    --build-arg PYTHON_IMAGE="$BASE" --build-arg TORCH_INDEX_URL="http://127.0.0.1:$PORT/" \
    --build-arg GIT_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" . >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log"; exit 1; }
}
started=$SECONDS; build
echo "build: $((SECONDS - started)) s, image: $(( $(docker image inspect -f '{{.Size}}' iwsft:cpu) / 1000000 )) MB"

log "smoke test (no network)"
docker run --rm --network none iwsft:cpu --help | head -3
docker run --rm --network none iwsft:cpu python -c \
  "import torch, mlflow, prefect, prefect_docker, psycopg2, dvc; print('imports ok, torch', torch.__version__)"
if docker run --rm --network none iwsft:cpu dvc status >/dev/null; then echo "dvc status without git: ok"; else echo "dvc status without git: FAILED"; fi

log "rebuild after a change in the build context (as a code change)"
date >"$PROBE"
started=$SECONDS; build
rm -f "$PROBE"
echo "rebuild: $((SECONDS - started)) s; torch and dependency layers reused:" \
  "$(grep -A1 -E 'torch==|requirements.txt' "$WORK/build.log" | grep -c 'Using cache') of 2"
if [ "$OWN_DAEMON" = 1 ] && [ "${KEEP_DAEMON:-0}" = 1 ]; then
  echo "dockerd still runs: export DOCKER_HOST=$DOCKER_HOST; stop it with kill \$(cat $WORK/run/dockerd.pid)"
fi
