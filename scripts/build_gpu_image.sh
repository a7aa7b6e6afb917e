#!/usr/bin/env bash
# Build docker/Dockerfile (iwsft:gpu) here, on a machine with no registry for base images and no GPU, and run
# it on the CPU. Optional and NOT part of CI (a Docker engine, ~5 min, ~7 GB of images). Needs root
# (apt-get, debootstrap, dockerd), Debian bookworm, PyPI (torch's CUDA wheel and the nvidia-* wheels: ~3 GB).
#
#   scripts/build_gpu_image.sh            # build iwsft:gpu, smoke-test it, the micro pipeline, a rebuild
#   MICRO=0 scripts/build_gpu_image.sh    # without the micro pipeline (~2 min less)
#
# 1. apt-get install docker.io debootstrap (Debian's engine 20.10: its legacy builder reads docker/Dockerfile).
#    Compose is not needed here: scripts/compose_smoke.sh installs it the same way when it is missing.
# 2. The stand-in for python:3.11.14-slim-bookworm, the same as scripts/build_cpu_image.sh's: debootstrap
#    --variant=minbase bookworm with python3 (3.11.2), python3-venv, python3-dev, imported as
#    localhost/python:3.11-bookworm (pip reaches PyPI through a CA only the host trusts: PIP_CERT).
# 3. An engine: the one DOCKER_HOST (or /var/run/docker.sock) answers on, else a dockerd started here with
#    its defaults (bridge networks: scripts/compose_smoke.sh needs them), left running.
# 4. docker build --network host --build-arg BASE_IMAGE=localhost/python:3.11-bookworm; torch comes from PyPI
#    as on a GPU host. Then, with --network none as uid 1000: `iwsft --help`, torch's CUDA build, and the
#    micro pipeline (`iwsft profile micro && dvc repro`, HF_HUB_OFFLINE=1) on the CPU; then a rebuild after a
#    change in the build context, which must reuse the torch and dependency layers.
# Measured here (2 shared cores; docker/README.md): cold build 311 s, image 6.5 GB, micro pipeline 270 s,
# rebuild 5 s. The build cache stays in the engine (~9 GB with iwsft:cpu): docker image prune when done.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/iwsft-docker}
BASE=localhost/python:3.11-bookworm
PROBE=docker/.rebuild-probe
export DOCKER_BUILDKIT=0
mkdir -p "$WORK"
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

log "3. a Docker engine"
if ! docker version >/dev/null 2>&1; then
  dockerd >"$WORK/dockerd.log" 2>&1 &
  for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
  docker version >/dev/null || { tail "$WORK/dockerd.log"; exit 1; }
  echo "started dockerd (pid $!), log $WORK/dockerd.log; it keeps running"
fi
docker image inspect "$BASE" >/dev/null 2>&1 \
  || tar -C "$WORK/rootfs" -c . | docker import \
       --change 'ENV PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt' --change 'CMD ["python3"]' - "$BASE" >/dev/null
trap 'rm -f "$PROBE"' EXIT

log "4. docker build -f docker/Dockerfile -t iwsft:gpu ."
build() {
  docker build --network host -f docker/Dockerfile -t iwsft:gpu --build-arg BASE_IMAGE="$BASE" \
    --build-arg GIT_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" . >"$WORK/gpu-build.log" 2>&1 \
    || { tail -40 "$WORK/gpu-build.log"; exit 1; }
}
started=$SECONDS; build
echo "build: $((SECONDS - started)) s, image: $(( $(docker image inspect -f '{{.Size}}' iwsft:gpu) / 1000000 )) MB"

log "smoke test (no network, uid 1000)"
run() { docker run --rm --network none -e HF_HUB_OFFLINE=1 iwsft:gpu "$@"; }
run --help | head -2
run sh -c 'echo "user: $(id -un) ($(id -u))"'
run python -c "import torch, mlflow, prefect, dvc; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
'GPU available:', torch.cuda.is_available())"
if [ "${MICRO:-1}" = 1 ]; then
  started=$SECONDS
  run sh -c 'iwsft profile micro && dvc repro && iwsft show-report' >"$WORK/gpu-micro.log" 2>&1 \
    || { tail -40 "$WORK/gpu-micro.log"; exit 1; }
  grep -E '^(Running stage|Stage .* didn.t change)' "$WORK/gpu-micro.log" | sed 's/^/  /' | head -20
  echo "micro pipeline (iwsft profile micro && dvc repro, on the CPU): ok, $((SECONDS - started)) s; report:"
  sed -n '/^#/,$p' "$WORK/gpu-micro.log" | head -12 | sed 's/^/  /'
fi

log "rebuild after a change in the build context (as a code change)"
date >"$PROBE"
started=$SECONDS; build
rm -f "$PROBE"
echo "rebuild: $((SECONDS - started)) s; torch and dependency layers reused:" \
  "$(grep -A1 -E 'torch==|requirements.txt' "$WORK/gpu-build.log" | grep -c 'Using cache') of 2"
