"""Shared fixtures: the params, the raw data, a model trained in memory, repo copies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from src.config import ROOT
from src.data.make_dataset import load_source, split_data, validate_raw
from src.features.build_features import build_features
from src.models.artifact import make_bundle
from src.models.train_model import train
from src.utils import load_params


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


# --- whole-repo helpers for the integration tests -------------------------------------


def venv_env(repo: Path, **extra: str) -> dict[str, str]:
    """Environment for running the pipeline inside `repo` with this interpreter's venv."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo)  # the copy's `src`, not the editable install's
    env["GIT_PAGER"] = "cat"
    env.pop("MLFLOW_TRACKING_URI", None)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        env.pop(key, None)
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True):
    """Run a command, returning the CompletedProcess; on failure show its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env or venv_env(cwd), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def copy_repo(dest: Path) -> Path:
    """Copy the project's files (tracked or not ignored) into `dest` and commit them."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    dest.mkdir(parents=True, exist_ok=True)
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for args in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.email", "test@example.com"],
        ["git", "config", "user.name", "test"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "copy"],
    ):
        run(args, dest)
    return dest


def stages_run(output: str) -> list[str]:
    """Names of the stages DVC actually ran, from `dvc repro` output."""
    return [
        line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")
    ]


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory) -> Path:
    """A copy of the repo in which `dvc repro` has run once (shared, do not modify)."""
    repo = copy_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    for out in ("metrics", "plots"):  # prove the pipeline writes them itself
        shutil.rmtree(repo / out, ignore_errors=True)
    run(["dvc", "repro"], repo)
    return repo
