"""The bring-your-own-data harness (tests/run_on_dataset.py), without running it: its
registry, the datasets it writes and the params.yaml it writes (`make test-datasets` runs
it for real)."""

import pandas as pd
import pytest
import yaml

from tests import run_on_dataset as harness
from tests.repo_tools import copy_repo, venv_env

pytestmark = pytest.mark.mechanics  # never reads the configured dataset (pyproject.toml)


def test_registry_holds_a_classification_and_a_regression_dataset():
    assert harness.DATASETS["breast_cancer"].enabled
    assert (
        harness.DATASETS["diabetes"].enabled and harness.DATASETS["diabetes"].task == "regression"
    )


def test_breast_cancer_has_readable_labels_and_float_features():
    frame = harness.breast_cancer()
    assert set(frame["diagnosis"]) == {"malignant", "benign"}
    assert frame.drop(columns="diagnosis").dtypes.eq("float64").all()
    assert frame.shape == (569, 31)


def test_diabetes_has_a_numeric_target_and_a_categorical_feature():
    frame = harness.diabetes()
    assert frame["progression"].dtype == "float64" and frame["progression"].notna().all()
    assert set(frame["sex"]) == {"female", "male"}


@pytest.mark.parametrize("name", sorted(harness.DATASETS))
def test_configure_changes_only_the_data_block_as_make_schema_would(name, tmp_path):
    dataset = harness.DATASETS[name]
    repo = copy_repo(tmp_path / "repo")
    before_text = (repo / "params.yaml").read_text()
    harness.configure(repo, dataset, venv_env(repo))
    after_text = (repo / "params.yaml").read_text()
    before, after = yaml.safe_load(before_text), yaml.safe_load(after_text)
    assert after.keys() == before.keys()
    assert all(after[k] == before[k] for k in before if k != "data")
    frame = dataset.load()
    data = after["data"]
    assert data["source"] == f"data/external/{dataset.file}"
    assert (data["target"], data["task"]) == (dataset.target, dataset.task)
    assert list(data["schema"]) == list(frame.columns)
    assert data["drop_columns"] == []

    # every line outside the data block is kept as it was, comments included
    def outside(text):
        return [line for line in text.splitlines() if not line.startswith(("data:", " "))]

    assert [line for line in outside(after_text) if not line.startswith("#")] == [
        line for line in outside(before_text) if not line.startswith("#")
    ]
    read = pd.read_parquet if dataset.file.endswith(".parquet") else pd.read_csv
    assert read(repo / "data" / "external" / dataset.file).shape == frame.shape


def test_the_fast_suite_unless_markers_are_chosen():
    assert harness.pytest_selection([]) == ["-m", "not slow and not mechanics"]
    assert harness.pytest_selection(["tests/model", "-x"]) == [
        "-m",
        "not slow and not mechanics",
        "tests/model",
        "-x",
    ]
    assert harness.pytest_selection(["-m", "slow", "tests/integration"]) == [
        "-m",
        "slow",
        "tests/integration",
    ]
