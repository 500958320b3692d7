"""Behavioural tests of the trained model: quality floor, invariances, every class reachable."""

import numpy as np
import pandas as pd
import pytest

from src.models.artifact import predict
from src.models.factory import MODEL_BUILDERS
from tests.conftest import train_bundle

MIN_BALANCED_ACCURACY = 0.95


def balanced_accuracy(bundle, test, target):
    from sklearn.metrics import balanced_accuracy_score

    labels, _ = predict(bundle, test)
    return balanced_accuracy_score(test[target], labels)


def test_default_model_meets_minimum_test_score(bundle, split, params):
    assert balanced_accuracy(bundle, split[1], params["data"]["target"]) >= MIN_BALANCED_ACCURACY


@pytest.mark.parametrize("model_type", sorted(MODEL_BUILDERS))
def test_every_model_type_learns_the_task(model_type, params, split):
    p = {**params, "train": {**params["train"], "model_type": model_type, "n_estimators": 50}}
    model = train_bundle(p, split[0])
    assert balanced_accuracy(model, split[1], params["data"]["target"]) >= 0.9


def test_predictions_invariant_to_column_order_and_extra_columns(bundle, split):
    test = split[1]
    shuffled = test[list(reversed(test.columns))].assign(note="ignored")
    labels1, proba1 = predict(bundle, test)
    labels2, proba2 = predict(bundle, shuffled)
    assert (labels1 == labels2).all()
    np.testing.assert_array_equal(proba1.to_numpy(), proba2.to_numpy())


def test_every_class_is_predicted_for_a_typical_member(bundle, split, params):
    train = split[0]
    target = params["data"]["target"]
    for cls, group in train.groupby(target):
        typical = {
            f["name"]: (
                group[f["name"]].median()
                if f["type"] == "numeric"
                else group[f["name"]].mode().iloc[0]
            )
            for f in bundle["schema"]["features"]
        }
        labels, _ = predict(bundle, pd.DataFrame([typical]))
        assert labels[0] == cls


def test_probabilities_are_a_distribution_over_all_classes(bundle, split):
    _, proba = predict(bundle, split[1])
    assert list(proba.columns) == bundle["schema"]["classes"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert ((proba >= 0) & (proba <= 1)).all().all()


def test_missing_values_are_handled(bundle, split):
    row = split[1].iloc[[0]].copy()
    for f in bundle["schema"]["features"]:
        row[f["name"]] = np.nan if f["type"] == "numeric" else None
    labels, proba = predict(bundle, row)
    assert labels[0] in bundle["schema"]["classes"]
    assert np.isfinite(proba.to_numpy()).all()


def test_directional_longer_bills_move_towards_non_adelie(bundle, split):
    """Adelie penguins have short bills: lengthening the bill must lower P(Adelie)."""
    adelie = split[0][split[0]["species"] == "Adelie"].dropna().iloc[[0]]
    longer = adelie.assign(bill_length_mm=adelie["bill_length_mm"] + 12)
    _, p_short = predict(bundle, adelie)
    _, p_long = predict(bundle, longer)
    assert p_long["Adelie"].iloc[0] < p_short["Adelie"].iloc[0]


def test_retraining_is_deterministic(bundle, split, params):
    again = train_bundle(params, split[0])
    _, p1 = predict(bundle, split[1])
    _, p2 = predict(again, split[1])
    np.testing.assert_array_equal(p1.to_numpy(), p2.to_numpy())
