"""Shared fixtures.

Two kinds of data, for two kinds of tests:
- the CONFIGURED dataset (`params`, `raw_data`, `split`, `bundle`): whatever params.yaml
  names; its tests take every expectation from params and from the model's stored schema;
- FIXTURE tables (`fixture_cases`, `classification_case`, `multiclass_case`): small seeded
  tables made by tests/fixture_data.py, for the tests of the pipeline's mechanics, which
  must not depend on the configured dataset.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from src.config import ROOT
from src.data.make_dataset import clean_and_split, load_source
from src.features.build_features import build_features
from src.models.artifact import make_bundle
from src.models.train_model import train
from src.utils import load_params
from tests import fixture_data
from tests.repo_tools import copy_repo, run, stages_run, venv_env  # noqa: F401 (re-export)


@pytest.fixture(scope="session")
def params() -> dict:
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def raw_data(params, tmp_path_factory) -> pd.DataFrame:
    return load_source(params["data"]["source"], None, tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="session")
def split(params, raw_data) -> tuple[pd.DataFrame, pd.DataFrame]:
    _, train, test = clean_and_split(raw_data, params)
    return train, test


def train_bundle(params: dict, train_df: pd.DataFrame) -> dict:
    """Run features + train in memory (no files, no MLflow) and return the model bundle."""
    schema, preprocessor, matrix = build_features(train_df, params)
    pipeline, metrics, folds = train(
        params, {"schema": schema, "preprocessor": preprocessor}, matrix, train_df
    )
    metadata = {
        "training_metrics": metrics,
        "cv_folds": folds,
        "classes": schema.get("classes", []),
    }
    return make_bundle(pipeline, schema, metadata)


@pytest.fixture(scope="session")
def bundle(params, split) -> dict:
    return train_bundle(params, split[0])


# -- which tests depend on the configured dataset -----------------------------------------

# The fixtures that read the configured dataset or run its pipeline. A new one goes here.
CONFIGURED_FIXTURES = frozenset(
    {"params", "raw_data", "split", "bundle", "pipeline_repo", "rerun_repo"}
)


def uses_configured_dataset(item: pytest.Item) -> bool:
    """A fixture of CONFIGURED_FIXTURES among the test's fixtures, also through other
    fixtures and through a parametrized fixture that picks one by name (`served` in
    tests/serving/test_api.py: `request.getfixturevalue(request.param)`)."""
    manager = item.session._fixturemanager  # pytest's own resolution of fixture names
    callspec = getattr(item, "callspec", None)
    picked = [v for v in callspec.params.values() if isinstance(v, str)] if callspec else []
    todo, seen = [*getattr(item, "fixturenames", ()), *picked], set()
    while todo:
        name = todo.pop()
        if name in CONFIGURED_FIXTURES:
            return True
        if name in seen:
            continue
        seen.add(name)
        for fixturedef in manager.getfixturedefs(name, item) or ():
            todo.extend(fixturedef.argnames)
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`mechanics` (pyproject.toml) takes a test out of tests.run_on_dataset's runs on other
    datasets: refuse it on a test that uses the configured dataset."""
    wrong = [
        i.nodeid for i in items if i.get_closest_marker("mechanics") and uses_configured_dataset(i)
    ]
    if wrong:
        raise pytest.UsageError(
            "marked mechanics but uses a fixture of the configured dataset "
            f"(CONFIGURED_FIXTURES, tests/conftest.py): {', '.join(wrong)}"
        )


# -- fixture tables (tests of mechanics) ---------------------------------------------------


@dataclass(frozen=True)
class FixtureCase:
    """A fixture table run through prepare + features + train in memory (do not modify)."""

    task: str
    params: dict[str, Any]
    raw: pd.DataFrame
    train: pd.DataFrame
    test: pd.DataFrame
    bundle: dict[str, Any]

    @property
    def target(self) -> str:
        return self.params["data"]["target"]


def make_fixture_case(task: str) -> FixtureCase:
    params = fixture_data.make_params(task)
    raw = fixture_data.make_table(task)
    _, train, test = clean_and_split(raw, params)
    return FixtureCase(task, params, raw, train, test, train_bundle(params, train))


class FixtureCases(dict):
    """task -> FixtureCase, each built on first use and shared by the session."""

    def __missing__(self, task: str) -> FixtureCase:
        self[task] = make_fixture_case(task)
        return self[task]


@pytest.fixture(scope="session")
def fixture_cases() -> FixtureCases:
    return FixtureCases()


@pytest.fixture(scope="session", params=fixture_data.CLASSIFICATION_TASKS)
def classification_case(request, fixture_cases) -> FixtureCase:
    """Each classification fixture in turn (binary, multiclass)."""
    return fixture_cases[request.param]


@pytest.fixture(scope="session")
def multiclass_case(fixture_cases) -> FixtureCase:
    return fixture_cases["multiclass"]


# Whole-repo helpers live in tests/repo_tools.py (benchmarks use them too).


# The full `dvc repro` runs are the slow suite's biggest cost (README, Tests): the tests
# that only read a pipeline's outputs share these two instead of running their own.


def repro_copy(dest: Path, hash_seed: str, threads: str, *args: str) -> tuple[Path, str]:
    """A copy of the repo at `dest` after `dvc repro *args` with this PYTHONHASHSEED and
    OpenMP thread count. Returns the copy and DVC's output."""
    repo = copy_repo(dest)
    for out in ("metrics", "plots"):  # prove the pipeline writes them itself
        shutil.rmtree(repo / out, ignore_errors=True)
    env = venv_env(repo, PYTHONHASHSEED=hash_seed, OMP_NUM_THREADS=threads)
    return repo, run(["dvc", "repro", *args], repo, env=env).stdout


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory) -> Path:
    """A copy of the repo in which `dvc repro` has run once (shared, do not modify: copy it
    with shutil.copytree(..., symlinks=True) to change it)."""
    repo, _ = repro_copy(tmp_path_factory.mktemp("pipeline") / "repo", "1", "1")
    return repo


@dataclass(frozen=True)
class Rerun:
    repo: Path
    stdout: str  # of its `dvc repro -f`


@pytest.fixture(scope="session")
def rerun_repo(tmp_path_factory) -> Rerun:
    """A second copy of the repo, at another absolute path, in which `dvc repro -f` ran with
    another PYTHONHASHSEED and OpenMP thread count than `pipeline_repo`'s: its outputs must
    be byte-identical to `pipeline_repo`'s (shared, do not modify)."""
    dest = tmp_path_factory.mktemp("rerun") / "somewhere" / "else" / "repo"
    return Rerun(*repro_copy(dest, "2", "2", "-f"))
