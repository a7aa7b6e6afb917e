#!/bin/sh
# Entrypoint of both images: the `iwsft` CLI.
#   docker run IMAGE train --method sft          ->  iwsft train --method sft
#   docker run IMAGE iwsft train --method sft    ->  the same
# A few programs run as themselves: the Prefect Docker worker starts its flow runs with
# `prefect flow-run execute`, docker/compose.yaml runs `mlflow server` / `prefect server start` / `sh -c ...`
# on the CPU image, and people want `dvc repro`, `python` or a shell.
set -e
case "${1:-}" in
    iwsft | prefect | mlflow | dvc | python | python3 | bash | sh) exec "$@" ;;
esac
exec iwsft "$@"
