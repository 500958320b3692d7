"""tests/expectations.py: the gate's bounds from either layout of `gate:`, and the scores."""

import numpy as np
import pandas as pd
import pytest

from tests.expectations import classification_scores, gate_bounds, regression_scores

pytestmark = pytest.mark.mechanics  # never reads the configured dataset (pyproject.toml)

FLAT = {"min": {"f1_macro": 0.9}, "max": {"log_loss": 0.3}, "max_drop": {"f1_macro": 0.02}}
PER_FAMILY = {
    "classification": {"min": {"accuracy": 0.8}},
    "regression": {"min": {"r2": 0.3}, "max": {"rmse": 3.0}},
}
# `data` blocks of each family, as params.yaml declares them
CLASSIFICATION_DATA = {"target": "y", "task": "auto", "schema": {"y": "category"}}
REGRESSION_DATA = {"target": "y", "task": "auto", "schema": {"y": "float"}}
DECLARED_REGRESSION_DATA = {"target": "y", "task": "regression", "schema": {"y": "int"}}


@pytest.mark.parametrize("data", [CLASSIFICATION_DATA, REGRESSION_DATA])
def test_flat_gate_applies_to_every_family(data):
    assert gate_bounds({"data": data, "gate": FLAT}) == FLAT


def test_per_family_gate_picks_the_family_of_the_data_block():
    classification = gate_bounds({"data": CLASSIFICATION_DATA, "gate": PER_FAMILY})
    assert classification == {"min": {"accuracy": 0.8}, "max": {}, "max_drop": {}}
    for data in (REGRESSION_DATA, DECLARED_REGRESSION_DATA):
        regression = gate_bounds({"data": data, "gate": PER_FAMILY})
        assert regression == {"min": {"r2": 0.3}, "max": {"rmse": 3.0}, "max_drop": {}}


def test_an_explicit_family_overrides_the_data_block():
    gate = {"data": CLASSIFICATION_DATA, "gate": PER_FAMILY}
    assert gate_bounds(gate, "regression")["max"] == {"rmse": 3.0}


def test_no_gate_means_no_bounds():
    assert gate_bounds({"data": CLASSIFICATION_DATA}) == {"min": {}, "max": {}, "max_drop": {}}
    none = {"data": CLASSIFICATION_DATA, "gate": {"classification": None}}
    assert gate_bounds(none)["min"] == {}
    # a family without a block has no bounds
    only = {"data": REGRESSION_DATA, "gate": {"classification": {"min": {"accuracy": 0.8}}}}
    assert gate_bounds(only) == {"min": {}, "max": {}, "max_drop": {}}


@pytest.mark.parametrize("classes", [["a", "b"], ["a", "b", "c"]])
def test_scores_of_a_perfect_and_a_uniform_model(classes):
    y = np.array(classes * 4)
    perfect = pd.DataFrame(np.eye(len(classes))[[classes.index(v) for v in y]], columns=classes)
    scores = classification_scores(y, perfect)
    assert scores["accuracy"] == scores["balanced_accuracy"] == scores["f1_macro"] == 1.0
    assert scores["roc_auc_ovr"] == 1.0 and scores["log_loss"] < 1e-6
    uniform = pd.DataFrame(1 / len(classes), index=range(len(y)), columns=classes)
    assert classification_scores(y, uniform)["log_loss"] == pytest.approx(np.log(len(classes)))


def test_regression_scores_of_a_perfect_and_a_mean_model():
    y = np.array([1.0, 2.0, 4.0, 8.0])
    perfect = regression_scores(y, y)
    assert perfect == {"rmse": 0.0, "mae": 0.0, "r2": 1.0}
    mean = regression_scores(y, np.full(len(y), y.mean()))
    assert mean["r2"] == 0.0
    assert mean["rmse"] == pytest.approx(y.std())
    assert mean["mae"] == pytest.approx(np.abs(y - y.mean()).mean())
