"""The bring-your-own-data harness (tests/run_on_dataset.py), without running it: its
registry, the datasets it writes and the params.yaml it writes (`make test-datasets` runs
it for real)."""

import pandas as pd
import pytest
import yaml

from src.config import ROOT
from tests import run_on_dataset as harness


def test_registry_holds_a_classification_and_a_regression_dataset():
    assert harness.DATASETS["breast_cancer"].enabled
    assert not harness.DATASETS["diabetes"].enabled  # enabled once regression lands


def test_breast_cancer_has_readable_labels_and_float_features():
    frame = harness.breast_cancer()
    schema = harness.schema_of(frame)
    assert schema.pop("diagnosis") == "category"
    assert set(schema.values()) == {"float"} and len(schema) == 30
    assert set(frame["diagnosis"]) == {"malignant", "benign"}


def test_diabetes_has_a_float_target():
    frame = harness.diabetes()
    assert harness.schema_of(frame)["progression"] == "float"
    assert frame["progression"].notna().all()


def test_schema_of_names_each_kind():
    frame = pd.DataFrame({"a": [1.5], "b": [2], "c": ["x"], "d": [True]})
    assert harness.schema_of(frame) == {"a": "float", "b": "int", "c": "category", "d": "category"}


@pytest.mark.parametrize("name", sorted(harness.DATASETS))
def test_only_the_data_block_of_params_changes(name, tmp_path):
    dataset = harness.DATASETS[name]
    frame = dataset.load()
    text = (ROOT / "params.yaml").read_text()
    new = harness.replace_data_block(text, harness.data_block(text, dataset, frame))
    before, after = yaml.safe_load(text), yaml.safe_load(new)
    assert after.keys() == before.keys()
    assert all(after[k] == before[k] for k in before if k != "data")
    assert after["data"]["source"] == f"data/external/{dataset.file}"
    assert after["data"]["target"] == dataset.target
    assert after["data"]["drop_columns"] == []
    assert list(after["data"]["schema"]) == list(frame.columns)
    # every line outside the data block is kept as it was, comments included
    outside = [line for line in text.splitlines() if not line.startswith(("data:", "  "))]
    assert [line for line in new.splitlines() if not line.startswith(("data:", "  "))] == outside
    harness.write_data(frame, tmp_path / dataset.file)
    read = pd.read_parquet if dataset.file.endswith(".parquet") else pd.read_csv
    assert read(tmp_path / dataset.file).shape == frame.shape


def test_the_fast_suite_unless_markers_are_chosen():
    assert harness.pytest_selection([]) == ["-m", "not slow"]
    assert harness.pytest_selection(["tests/model", "-x"]) == [
        "-m",
        "not slow",
        "tests/model",
        "-x",
    ]
    assert harness.pytest_selection(["-m", "slow", "tests/integration"]) == [
        "-m",
        "slow",
        "tests/integration",
    ]
