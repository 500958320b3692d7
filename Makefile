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

.PHONY: help setup setup-dev data features train evaluate repro predict test test-fast \
        lint format clean mlflow-ui bench-pipeline

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "; printf "Usage: make <target>\n\n"} \
	  /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(RUN_STAMP): requirements.txt requirements-serve.txt setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt -e .
	touch $@

$(DEV_STAMP): $(RUN_STAMP) requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(RUN_STAMP) ## Create .venv with the pipeline's pinned dependencies
setup-dev: $(DEV_STAMP) ## Create .venv with pipeline + test/lint tools

data: $(RUN_STAMP) ## Stage prepare: load, validate and split the data
	dvc repro prepare
features: $(RUN_STAMP) ## Stage features: learn the schema, fit the preprocessor
	dvc repro features
train: $(RUN_STAMP) ## Stage train: fit the model, log the MLflow run
	dvc repro train
evaluate: $(RUN_STAMP) ## Stage evaluate: metrics/ and plots/
	dvc repro evaluate

repro: $(RUN_STAMP) ## Run the whole pipeline (only what changed)
	dvc repro
	@dvc metrics show

predict: $(RUN_STAMP) ## Batch predict INPUT (default: the test set) to OUT
	python -m src.models.predict_model --input $(INPUT) --model $(MODEL) --out $(OUT)

test: $(DEV_STAMP) ## Run the whole test suite
	pytest

test-fast: $(DEV_STAMP) ## Run the tests that start no servers and no pipeline
	pytest -m "not slow"

lint: $(DEV_STAMP) ## ruff lint + format check
	ruff check .
	ruff format --check .

format: $(DEV_STAMP) ## Format and autofix with ruff
	ruff format .
	ruff check --fix .

mlflow-ui: $(RUN_STAMP) ## Browse the local MLflow runs on http://127.0.0.1:5000
	mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

bench-pipeline: $(DEV_STAMP) ## Benchmark the pipeline; writes reports/bench/pipeline.json
	python -m benchmarks.pipeline

clean: ## Remove caches and local reports (keeps .venv, data, models and MLflow runs)
	rm -rf .pytest_cache .ruff_cache reports build *.egg-info
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
