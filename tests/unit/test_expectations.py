"""tests/expectations.py: the gate's bounds from either layout of `gate:`, and the scores."""

import numpy as np
import pandas as pd
import pytest

from tests.expectations import classification_scores, gate_bounds

FLAT = {"min": {"f1_macro": 0.9}, "max": {"log_loss": 0.3}, "max_drop": {"f1_macro": 0.02}}


def test_flat_gate_applies_to_classification():
    assert gate_bounds({"gate": FLAT}) == FLAT


def test_per_family_gate_picks_the_family():
    gate = {"classification": {"min": {"accuracy": 0.8}}, "regression": {"max": {"rmse": 3.0}}}
    assert gate_bounds({"gate": gate}) == {"min": {"accuracy": 0.8}, "max": {}, "max_drop": {}}
    assert gate_bounds({"gate": gate}, "regression")["max"] == {"rmse": 3.0}


def test_no_gate_means_no_bounds():
    assert gate_bounds({}) == {"min": {}, "max": {}, "max_drop": {}}
    assert gate_bounds({"gate": {"classification": None}})["min"] == {}


@pytest.mark.parametrize("classes", [["a", "b"], ["a", "b", "c"]])
def test_scores_of_a_perfect_and_a_uniform_model(classes):
    y = np.array(classes * 4)
    perfect = pd.DataFrame(np.eye(len(classes))[[classes.index(v) for v in y]], columns=classes)
    scores = classification_scores(y, perfect)
    assert scores["accuracy"] == scores["balanced_accuracy"] == scores["f1_macro"] == 1.0
    assert scores["roc_auc_ovr"] == 1.0 and scores["log_loss"] < 1e-6
    uniform = pd.DataFrame(1 / len(classes), index=range(len(y)), columns=classes)
    assert classification_scores(y, uniform)["log_loss"] == pytest.approx(np.log(len(classes)))
