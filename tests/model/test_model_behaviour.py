"""Behavioural tests of the model trained on the CONFIGURED dataset: quality floor (from the
gate in params.yaml), better than a baseline, invariances, directional expectations and every
class reachable. Nothing here names a column or a class: features, types and classes come
from the model's stored schema, importances from permutation on the test set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.inspection import permutation_importance

from src.features.schema import to_model_frame
from src.models.artifact import predict
from src.models.factory import MODEL_BUILDERS
from src.tasks import metric_direction
from tests.conftest import train_bundle
from tests.expectations import classification_scores, gate_bounds

BASELINE_METRICS = ("balanced_accuracy", "f1_macro", "log_loss")
# Permuting the least important feature may change at most this share of test predictions.
IRRELEVANT_MAX_CHANGED = 0.05


def scores(bundle, test, target) -> dict[str, float]:
    """What the evaluate stage reports: test-set metrics and the training (CV) metrics."""
    _, proba = predict(bundle, test)
    return {**bundle["metadata"]["training_metrics"], **classification_scores(test[target], proba)}


def broken_bounds(
    measured: dict[str, float], bounds: dict[str, dict], rules=("min", "max")
) -> list[str]:
    """The gate's absolute bounds (of `rules`) that `measured` breaks; fails if none applies."""
    checked, broken = 0, []
    for rule in rules:
        for name, bound in bounds[rule].items():
            if name not in measured:
                continue
            checked += 1
            if (measured[name] < bound) if rule == "min" else (measured[name] > bound):
                broken.append(f"{name} = {measured[name]:.4f}, gate.{rule} {bound}")
    assert checked, f"no gate.{rules} bound names a metric computed here: {bounds}"
    return broken


@pytest.fixture(scope="module")
def target(params) -> str:
    return params["data"]["target"]


@pytest.fixture(scope="module")
def importance(bundle, split, params, target) -> pd.Series:
    """Permutation importance per feature on the test set (as the evaluate stage does)."""
    test = split[1]
    X = to_model_frame(test, bundle["schema"])
    result = permutation_importance(
        bundle["pipeline"],
        X,
        test[target].astype(str).to_numpy(),
        n_repeats=int(params["evaluate"]["permutation_repeats"]),
        random_state=int(params["base"]["random_state"]),
        scoring="accuracy",
        n_jobs=1,
    )
    return pd.Series(result.importances_mean, index=X.columns).sort_values(ascending=False)


def test_default_model_meets_the_gate_on_the_test_set(bundle, split, params, target):
    broken = broken_bounds(scores(bundle, split[1], target), gate_bounds(params))
    assert not broken, broken


def test_model_beats_the_majority_class_baseline_by_the_allowed_drop(bundle, split, params, target):
    """A model that lost the gate's max_drop must still be better than predicting the
    class frequencies of the training set."""
    train, test = split
    classes = bundle["schema"]["classes"]
    dummy = DummyClassifier(strategy="prior").fit(np.zeros((len(train), 1)), train[target])
    baseline_proba = pd.DataFrame(dummy.predict_proba(np.zeros((len(test), 1))), columns=classes)
    baseline = classification_scores(test[target], baseline_proba)
    model = scores(bundle, test, target)
    max_drop = gate_bounds(params)["max_drop"]
    for name in sorted(set(BASELINE_METRICS) | (set(max_drop) & set(baseline))):
        direction = metric_direction(name)
        assert direction != 0, name
        margin = float(max_drop.get(name, 0.0))
        gain = direction * (model[name] - baseline[name])
        assert gain > margin, f"{name}: model {model[name]:.4f} vs baseline {baseline[name]:.4f}"


@pytest.mark.parametrize("model_type", sorted(MODEL_BUILDERS))
def test_every_model_type_learns_the_task(model_type, params, split, target):
    """Every model type, untuned, reaches the gate's minimum scores (losses, which depend
    on calibration, are the configured model's business: see the test above)."""
    p = {**params, "train": {**params["train"], "model_type": model_type, "n_estimators": 50}}
    model = train_bundle(p, split[0])
    measured = classification_scores(split[1][target], predict(model, split[1])[1])
    broken = broken_bounds(measured, gate_bounds(params), rules=("min",))
    assert not broken, (model_type, broken)


def test_predictions_invariant_to_column_order_and_extra_columns(bundle, split):
    test = split[1]
    shuffled = test[list(reversed(test.columns))].assign(note="ignored")
    labels1, proba1 = predict(bundle, test)
    labels2, proba2 = predict(bundle, shuffled)
    assert (labels1 == labels2).all()
    np.testing.assert_array_equal(proba1.to_numpy(), proba2.to_numpy())


def typical(group: pd.DataFrame, feature: dict) -> object:
    """A class's typical value of a feature: the median, or the most frequent category."""
    column = group[feature["name"]]
    return column.median() if feature["type"] == "numeric" else column.mode().iloc[0]


def test_every_class_is_predicted_for_a_typical_member(bundle, split, target):
    for cls, group in split[0].groupby(target):
        member = {f["name"]: typical(group, f) for f in bundle["schema"]["features"]}
        labels, _ = predict(bundle, pd.DataFrame([member]))
        assert labels[0] == cls, member


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


def test_directional_the_most_important_feature_moves_predictions_between_classes(
    bundle, split, target, importance
):
    """Give one class's test rows another class's typical value of the most important
    feature (of those whose typical value differs between classes): on average the model
    must move towards that other class, both ways."""
    train, test = split
    features = {f["name"]: f for f in bundle["schema"]["features"]}
    for name in importance.index:
        values = {cls: typical(g, features[name]) for cls, g in train.groupby(target)}
        if features[name]["type"] == "numeric":
            low, high = min(values, key=values.get), max(values, key=values.get)
        else:
            distinct = {v: cls for cls, v in values.items()}
            if len(distinct) < 2:
                continue
            low, high = list(distinct.values())[:2]
        if values[low] != values[high]:
            break
    else:
        pytest.fail("no feature has a typical value that differs between two classes")
    for a, b in ((low, high), (high, low)):
        rows = test[test[target] == a]
        _, before = predict(bundle, rows)
        _, after = predict(bundle, rows.assign(**{name: values[b]}))
        assert after[b].mean() > before[b].mean(), (name, a, b, values)


def test_invariance_to_the_least_important_feature(bundle, split, params, importance):
    """Permuting the feature the permutation importance ranks last barely changes the
    predictions (it measured that permuting it barely changes the accuracy)."""
    test = split[1]
    least = importance.index[-1]
    rng = np.random.default_rng(int(params["base"]["random_state"]) + 1)
    permuted = test.assign(**{least: rng.permutation(test[least].to_numpy())})
    labels, _ = predict(bundle, test)
    labels_permuted, _ = predict(bundle, permuted)
    changed = float((labels != labels_permuted).mean())
    assert changed <= IRRELEVANT_MAX_CHANGED, (least, importance[least], changed)


def test_retraining_is_deterministic(bundle, split, params):
    again = train_bundle(params, split[0])
    _, p1 = predict(bundle, split[1])
    _, p2 = predict(again, split[1])
    np.testing.assert_array_equal(p1.to_numpy(), p2.to_numpy())
