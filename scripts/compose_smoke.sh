#!/usr/bin/env bash
# docker/compose.yaml end to end, for real, in one command: the stack up, a deployment run as a job container
# of the GPU image, the results checked in PostgreSQL, a screenshot of the Prefect UI, the stack torn down.
# Prints what it checked, with times. NOT part of `make test` (a Docker engine, images of ~9 GB, minutes).
# Measured here (2 shared cores, docker-compose 1.29, no GPU, images built): 260 s, PASSED (docker/README.md).
#
#   scripts/compose_smoke.sh               # everything, then `down -v` (the stack's containers and volumes)
#   KEEP=1 scripts/compose_smoke.sh        # leave the stack up (tear down: docker compose -f docker/compose.yaml down -v)
#   BUILD=1 scripts/compose_smoke.sh       # rebuild iwsft:cpu and iwsft:gpu first (else only when missing)
#   GPU=1 / GPU=0                          # keep / drop the run's GPU request (default: 1 if the engine has the
#                                          # nvidia runtime)
#
# 1. Compose: v2 (`docker compose`) if there, else docker-compose (Debian's: 1.29 on bookworm). Neither: as root
#    with apt-get, it installs the first of docker-compose-plugin (Docker's apt repository), docker-compose-v2
#    (Ubuntu) and docker-compose (Debian) that apt knows, as scripts/build_gpu_image.sh installs docker.io;
#    otherwise it stops and prints the one command that installs it. docker/.env: kept if there;
#    else a temporary one (a random password, the socket's group; POSTGRES_IMAGE is the official image if it can
#    be pulled, else the local Debian base), removed at the end.
# 2. Images: iwsft:cpu (scripts/build_cpu_image.sh) and iwsft:gpu (scripts/build_gpu_image.sh) where missing;
#    iwsft:postgres from docker/Dockerfile.postgres.
# 3. `up -d`, then wait until the four services are healthy.
# 4. `prefect deploy -n nightly-gpu` in the worker, then a run of it with profile=micro (the micro DAG: minutes
#    on a CPU). The worker starts it as a container of iwsft:gpu on the `iwsft` network with the stack's volumes.
#    Without a GPU, the run's job variable container_create_kwargs={"shm_size": "1g"} replaces the pool's (the
#    only change): Docker refuses a GPU device request where there is none ("could not select device driver").
# 5. Checks: the run Completed; its job container ran iwsft:gpu; in PostgreSQL, MLflow's database has the runs and
#    the registered model `iwsft` with a `champion` alias, and Prefect's has the flow run.
# 6. docs/compose-prefect-flow-run.png: the run's page in the Prefect UI (headless chromium, if installed).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-/tmp/iwsft-docker}
RUN_TIMEOUT=${RUN_TIMEOUT:-1800}
SHOT=${SHOT:-docs/compose-prefect-flow-run.png}
mkdir -p "$WORK"
T0=$SECONDS
log() { printf '\n== [%4d s] %s\n' "$((SECONDS - T0))" "$*"; }
check() { printf '  CHECK %-58s %s\n' "$1" "$2"; }
fail() { printf '  FAIL  %s\n' "$*" >&2; exit 1; }

find_compose() {
  if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
  elif docker-compose version >/dev/null 2>&1; then COMPOSE=(docker-compose)
  else return 1; fi
}
# the package that brings Compose here: the first that apt has a candidate for (Debian's registry has no
# docker-compose-plugin; its docker-compose is 1.29 on bookworm, Compose v2 from trixie on)
compose_package() {
  local package
  for package in docker-compose-plugin docker-compose-v2 docker-compose; do
    apt-cache policy "$package" 2>/dev/null | grep -q 'Candidate: [0-9]' && { echo "$package"; return; }
  done
  echo docker-compose
}

log "1. compose, engine, docker/.env"
if ! find_compose; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-cache policy docker-compose 2>/dev/null | grep -q 'Candidate: [0-9]' || apt-get update -qq  # no lists yet
    package=$(compose_package)
    echo "no Docker Compose: apt-get install $package"
    apt-get install -y -qq --no-install-recommends "$package" >/dev/null
    find_compose || fail "apt-get installed $package, but neither \`docker compose\` nor docker-compose answers"
  else
    fail "no Docker Compose (neither \`docker compose\` nor docker-compose): install it with" \
      "\`sudo apt-get install $(compose_package)\`, then run make compose-smoke again"
  fi
fi
"${COMPOSE[@]}" version | sed -n 1p
docker version >/dev/null 2>&1 || fail "no Docker engine answers (scripts/build_gpu_image.sh starts one)"
dc() { "${COMPOSE[@]}" -f docker/compose.yaml "$@"; }
CREATED_ENV=0
if [ ! -f docker/.env ]; then
  if timeout 60 docker pull -q postgres:17.6-bookworm >/dev/null 2>&1; then pg_base=postgres:17.6-bookworm
  else pg_base=localhost/python:3.11-bookworm; fi
  (umask 077; sed -e "s|^POSTGRES_PASSWORD=.*|POSTGRES_PASSWORD=$(head -c 24 /dev/urandom | base64 | tr -dc A-Za-z0-9)|" \
      -e "s|^DOCKER_GID=.*|DOCKER_GID=$(stat -c %g /var/run/docker.sock)|" \
      -e "s|^POSTGRES_IMAGE=.*|POSTGRES_IMAGE=$pg_base|" docker/.env.example >docker/.env)
  CREATED_ENV=1
  echo "docker/.env: temporary (random password), PostgreSQL on $pg_base"
fi
set -a; . docker/.env; set +a
VOLUMES_BEFORE=$(docker volume ls -q | sort)
teardown() {
  status=$?
  if [ "${KEEP:-0}" = 1 ]; then echo "KEEP=1: the stack stays up (MLflow 127.0.0.1:$MLFLOW_PORT, Prefect 127.0.0.1:$PREFECT_PORT)"
  else
    log "teardown"
    dc down -v --remove-orphans >"$WORK/compose-down.log" 2>&1 || tail "$WORK/compose-down.log"
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | wc -l)
    vols=$(comm -13 <(echo "$VOLUMES_BEFORE") <(docker volume ls -q | sort) | grep -c . || true)
    check "containers / new volumes left after down -v" "$left / $vols"
    [ "$CREATED_ENV" = 1 ] && rm -f docker/.env
  fi
  printf '\n%s after %d s\n' "$([ "$status" = 0 ] && echo PASSED || echo FAILED)" "$((SECONDS - T0))"
}
trap teardown EXIT

log "2. images"
for kind in cpu gpu; do
  if [ "${BUILD:-0}" = 1 ] || ! docker image inspect "iwsft:$kind" >/dev/null 2>&1; then
    started=$SECONDS
    if [ "$kind" = cpu ]; then scripts/build_cpu_image.sh; else MICRO=0 scripts/build_gpu_image.sh; fi
    echo "iwsft:$kind built in $((SECONDS - started)) s"
  fi
done
started=$SECONDS
dc build postgres >"$WORK/compose-build.log" 2>&1 || { tail -30 "$WORK/compose-build.log"; exit 1; }
for image in iwsft:cpu iwsft:gpu iwsft:postgres; do
  check "image $image" "$(( $(docker image inspect -f '{{.Size}}' "$image") / 1000000 )) MB"
done

log "3. up -d, wait for the health checks"
started=$SECONDS
dc up -d >"$WORK/compose-up.log" 2>&1 || { tail -30 "$WORK/compose-up.log"; exit 1; }
for _ in $(seq 120); do
  states=$(for id in $(dc ps -q); do docker inspect -f '{{.Name}}={{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id"; done)
  [ "$(grep -c '=healthy' <<<"$states")" = 4 ] && break
  sleep 3
done
sed 's/^\//    /' <<<"$states"
[ "$(grep -c '=healthy' <<<"$states")" = 4 ] || { dc logs --tail 30; fail "not all four services became healthy"; }
check "postgres, mlflow, prefect-server, prefect-worker healthy" "$((SECONDS - started)) s after up"
check "MLflow answers on 127.0.0.1:$MLFLOW_PORT" "$(curl -sf "http://127.0.0.1:$MLFLOW_PORT/health")"
check "Prefect API answers on 127.0.0.1:$PREFECT_PORT" "$(curl -sf "http://127.0.0.1:$PREFECT_PORT/api/health")"

log "4. deploy nightly-gpu, run it (profile micro)"
dc exec -T prefect-worker prefect --no-prompt deploy -n nightly-gpu >"$WORK/compose-deploy.log" 2>&1 \
  || { tail -30 "$WORK/compose-deploy.log"; exit 1; }
check "prefect deploy -n nightly-gpu (pool iwsft-docker)" ok
gpu=${GPU:-$(docker info --format '{{json .Runtimes}}' | grep -q nvidia && echo 1 || echo 0)}
variables=()
if [ "$gpu" = 0 ]; then
  variables=(--job-variable 'container_create_kwargs={"shm_size": "1g"}')
  echo "no GPU here: the run drops the pool's GPU device request (job variable container_create_kwargs)"
fi
dc exec -T prefect-worker prefect deployment run iwsft-pipeline/nightly-gpu --param profile=micro "${variables[@]}" \
  >"$WORK/compose-run.log" 2>&1 || { cat "$WORK/compose-run.log"; exit 1; }
RUN_ID=$(grep -oE 'UUID: [0-9a-f-]{36}' "$WORK/compose-run.log" | sed -n 1p | cut -d' ' -f2)
[ -n "$RUN_ID" ] || { cat "$WORK/compose-run.log"; fail "no flow run id"; }
echo "flow run $RUN_ID"
state() { curl -sf "http://127.0.0.1:$PREFECT_PORT/api/flow_runs/$RUN_ID" \
  | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["state_type"], r["name"])'; }
started=$SECONDS; job=""; last=""
while :; do
  read -r type name < <(state)
  [ -n "$job" ] || job=$(docker ps -a --filter "name=^/$name\$" --format "{{.Image}} {{.Names}} {{.Status}}" | sed -n 1p)
  [ "$type" != "$last" ] && { echo "  $((SECONDS - started)) s: $type"; last=$type; }
  case $type in COMPLETED|FAILED|CRASHED|CANCELLED) break ;; esac
  [ $((SECONDS - started)) -lt "$RUN_TIMEOUT" ] || fail "the run is still $type after $RUN_TIMEOUT s"
  sleep 5
done
dc logs --no-color prefect-worker >"$WORK/compose-worker.log" 2>&1 || true
[ "$type" = COMPLETED ] || { tail -40 "$WORK/compose-worker.log"; fail "flow run $name: $type"; }
check "flow run $name (nightly-gpu, profile micro) COMPLETED" "$((SECONDS - started)) s"
[[ $job == iwsft:gpu* ]] || fail "the job container was not seen as iwsft:gpu: '$job'"
check "its job container ran image iwsft:gpu" "${job#iwsft:gpu }"

log "5. PostgreSQL: MLflow's runs and champion, Prefect's flow run"
sql() { dc exec -T postgres psql -U "$POSTGRES_USER" -d "$1" -Atc "$2" | tr -d '\r'; }
runs=$(sql mlflow "select count(*) from runs where status = 'FINISHED'")
[ "$runs" -gt 0 ] || fail "no finished MLflow runs in PostgreSQL"
check "mlflow db: finished runs" "$runs"
champion=$(sql mlflow "select name || ' v' || version from registered_model_aliases where alias = 'champion'")
[ -n "$champion" ] || fail "no registered model with a champion alias"
check "mlflow db: alias champion" "$champion"
check "mlflow db: registered versions" "$(sql mlflow "select count(*) from model_versions")"
check "prefect db: flow run state" "$(sql prefect "select state_type from flow_run where id = '$RUN_ID'")"

log "6. screenshot of the Prefect UI"
if command -v chromium >/dev/null; then
  profile=$(mktemp -d)
  timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync --user-data-dir="$profile" \
    --hide-scrollbars --window-size=1440,1000 --virtual-time-budget=20000 --screenshot="$ROOT/$SHOT" \
    "http://127.0.0.1:$PREFECT_PORT/runs/flow-run/$RUN_ID" >"$profile/chromium.log" 2>&1 \
    || cat "$profile/chromium.log"
  rm -rf "$profile"
  check "screenshot $SHOT" "$(stat -c %s "$SHOT" 2>/dev/null || echo missing) bytes"
else
  echo "no chromium (apt-get install chromium): no screenshot"
fi
