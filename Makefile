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

.PHONY: setup run test bench clean-venv

setup: $(STAMP)

# torch first, from the pinned CPU build, so that no dependency pulls a multi-GB CUDA wheel.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The whole demo DAG (about 5 min on 2 cores after set-up), then the report table.
run: setup
	dvc repro
	iwsft show-report

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/run.py

clean-venv:
	rm -rf $(VENV)
