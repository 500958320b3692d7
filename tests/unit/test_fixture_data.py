"""The fixture tables of tests/fixture_data.py: deterministic, valid for their params, and
mixed enough (categorical and numeric, nullable and not) to exercise every code path."""

import numpy as np
import pandas as pd
import pytest

from src.config import ROOT
from src.data.make_dataset import validate_raw
from src.features.schema import learn_feature_schema, to_model_frame
from src.utils import load_params
from tests import fixture_data
from tests.conftest import make_fixture_case


@pytest.mark.parametrize("task", fixture_data.TASKS)
def test_tables_are_seeded_and_deterministic(task, tmp_path):
    pd.testing.assert_frame_equal(fixture_data.make_table(task), fixture_data.make_table(task))
    assert not fixture_data.make_table(task, seed=1).equals(fixture_data.make_table(task))
    first = fixture_data.write_table(task, tmp_path / "a.csv").read_bytes()
    assert fixture_data.write_table(task, tmp_path / "b.csv").read_bytes() == first


@pytest.mark.parametrize("task", fixture_data.TASKS)
def test_tables_match_their_params(task):
    params = fixture_data.make_params(task)
    data = params["data"]
    assert data["task"] == ("regression" if task == "regression" else "classification")
    repo_params = load_params(ROOT / "params.yaml")
    assert params.keys() == repo_params.keys()
    assert all(params[k] == repo_params[k] for k in params if k != "data")
    raw = fixture_data.make_table(task)
    clean = validate_raw(raw, data["schema"], data["target"])
    assert len(clean) == len(raw) == fixture_data.N_ROWS
    for column in data["schema"]:
        assert clean[column].isna().any() == (column in fixture_data.NULLABLE), column
    kinds = set(data["schema"].values())
    assert kinds == {"category", "float", "int"}


@pytest.mark.parametrize("task", fixture_data.CLASSIFICATION_TASKS)
def test_classification_tables_have_balanced_enough_classes(task):
    target = fixture_data.TARGETS[task]
    counts = fixture_data.make_table(task)[target].value_counts()
    assert sorted(counts.index) == fixture_data.CLASSES[task]
    assert counts.min() >= 0.5 * counts.sum() / len(counts)  # half a fair share at least


def test_learned_schema_has_every_kind_of_feature(classification_case):
    schema = classification_case.bundle["schema"]
    assert schema["classes"] == fixture_data.CLASSES[classification_case.task]
    by_name = {f["name"]: f for f in schema["features"]}
    assert set(by_name) == set(fixture_data.FEATURE_TYPES) - set(fixture_data.DROP_COLUMNS)
    kinds = {(f["type"], f["nullable"]) for f in schema["features"]}
    assert kinds == {
        ("categorical", True),
        ("categorical", False),
        ("numeric", True),
        ("numeric", False),
    }
    assert schema == learn_feature_schema(
        classification_case.train,
        classification_case.params["data"]["schema"],
        classification_case.target,
        fixture_data.DROP_COLUMNS,
        task=classification_case.task,
    )
    assert schema["task"] == classification_case.task


def test_regression_fixture_runs_through_prepare_features_and_train():
    case = make_fixture_case("regression")
    X = to_model_frame(case.test, case.bundle["schema"])
    predicted = np.asarray(case.bundle["pipeline"].predict(X), dtype=float)
    truth = case.test[case.target].to_numpy(dtype=float)
    assert np.isfinite(predicted).all()
    r2 = 1 - ((truth - predicted) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()
    assert r2 > 0.5
