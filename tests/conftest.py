"""Shared fixtures: the params, the raw data, a model trained in memory, repo copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from src.config import ROOT
from src.data.make_dataset import load_source, split_data, validate_raw
from src.features.build_features import build_features
from src.models.artifact import make_bundle
from src.models.train_model import train
from src.utils import load_params
from tests.repo_tools import copy_repo, run, stages_run, venv_env  # noqa: F401 (re-export)


@pytest.fixture(scope="session")
def params() -> dict:
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def raw_data(params, tmp_path_factory) -> pd.DataFrame:
    return load_source(params["data"]["source"], None, tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="session")
def split(params, raw_data) -> tuple[pd.DataFrame, pd.DataFrame]:
    clean = validate_raw(raw_data, params["data"]["schema"], params["data"]["target"])
    return split_data(
        clean,
        params["data"]["target"],
        params["split"]["test_size"],
        params["base"]["random_state"],
    )


def train_bundle(params: dict, train_df: pd.DataFrame) -> dict:
    """Run features + train in memory (no files, no MLflow) and return the model bundle."""
    schema, preprocessor, matrix = build_features(train_df, params)
    pipeline, metrics = train(
        params, {"schema": schema, "preprocessor": preprocessor}, matrix, train_df
    )
    return make_bundle(
        pipeline, schema, {"training_metrics": metrics, "classes": schema["classes"]}
    )


@pytest.fixture(scope="session")
def bundle(params, split) -> dict:
    return train_bundle(params, split[0])


# Whole-repo helpers live in tests/repo_tools.py (benchmarks use them too).


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory) -> Path:
    """A copy of the repo in which `dvc repro` has run once (shared, do not modify)."""
    repo = copy_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    for out in ("metrics", "plots"):  # prove the pipeline writes them itself
        shutil.rmtree(repo / out, ignore_errors=True)
    run(["dvc", "repro"], repo)
    return repo
