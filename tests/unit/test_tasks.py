"""Tasks: the rule that picks one, and the checks that stop a bad choice in one line."""

from __future__ import annotations

import pandas as pd
import pytest

from src.tasks import TaskError, get_task, metric_direction, resolve_task, task_family

pytestmark = pytest.mark.mechanics  # never reads the configured dataset (pyproject.toml)


def data(target_type: str, task: str | None = None) -> dict:
    d = {"target": "y", "schema": {"y": target_type, "x": "float"}}
    if task is not None:
        d["task"] = task
    return d


@pytest.mark.parametrize(
    ("target_type", "task", "family"),
    [
        ("category", None, "classification"),
        ("category", "auto", "classification"),
        ("float", "auto", "regression"),
        ("int", "classification", "classification"),
        ("int", "regression", "regression"),
        ("float", "binary", "classification"),  # then stopped by resolve_task, see below
    ],
)
def test_task_family_follows_the_rule_in_params(target_type, task, family):
    assert task_family(data(target_type, task)) == family


def test_an_int_target_must_be_declared():
    with pytest.raises(TaskError, match=r"data.target 'y' is declared int.*set data.task"):
        task_family(data("int"))


def test_an_unknown_task_names_the_choices():
    with pytest.raises(TaskError, match="data.task 'clustering' is not one of: auto"):
        task_family(data("category", "clustering"))


def test_a_target_missing_from_the_schema_is_named():
    with pytest.raises(TaskError, match="data.target 'y' is not declared in data.schema"):
        task_family({"target": "y", "schema": {"x": "float"}})


@pytest.mark.parametrize(
    ("values", "name"),
    [(["a", "b", "a"], "binary"), (["a", "b", "c"], "multiclass"), ([0, 1, 1], "binary")],
)
def test_classification_is_binary_or_multiclass_by_class_count(values, name):
    kind = "int" if isinstance(values[0], int) else "category"
    assert resolve_task(data(kind, "classification"), pd.Series(values)) == name


def test_a_numeric_target_never_silently_becomes_a_classifier():
    y = pd.Series([171.0, 166.0, 190.5, 201.0])
    with pytest.raises(TaskError, match=r"declared float.*4.*set data.task: regression"):
        resolve_task(data("float", "classification"), y)
    assert resolve_task(data("float"), y) == "regression"


def test_a_text_target_cannot_be_regressed():
    with pytest.raises(TaskError, match="declared category but data.task is regression"):
        resolve_task(data("category", "regression"), pd.Series(["a", "b"]))


def test_one_class_is_refused():
    with pytest.raises(TaskError, match=r"has one class \('a'\): classification needs at least 2"):
        resolve_task(data("category"), pd.Series(["a", "a"]))


def test_declared_binary_with_three_classes_is_refused():
    with pytest.raises(TaskError, match="data.task is binary but .* has 3 classes"):
        resolve_task(data("category", "binary"), pd.Series(["a", "b", "c"]))


def test_a_constant_regression_target_is_refused():
    with pytest.raises(TaskError, match="single value"):
        resolve_task(data("float"), pd.Series([1.0, 1.0]))


@pytest.mark.parametrize(
    ("metric", "direction"),
    [
        ("accuracy", 1),
        ("log_loss", -1),
        ("rmse", -1),
        ("mae", -1),
        ("r2", 1),
        ("roc_auc", 1),
        ("average_precision", 1),
        ("cv_r2_mean", 1),
        ("cv_rmse_mean", -1),
        ("cv_r2_std", -1),
        ("train_accuracy", 0),  # lower can mean less overfitting: no verdict
        ("train_r2", 0),
        ("train_log_loss", 0),  # a train-set loss too: no verdict, though losses have one
        ("n_test", 0),
        ("something_custom", 0),
    ],
)
def test_metric_directions(metric, direction):
    assert metric_direction(metric) == direction


def test_each_task_owns_its_metrics_and_estimators():
    binary, multiclass, regression = (get_task(n) for n in ("binary", "multiclass", "regression"))
    assert "roc_auc" in binary.cv_scoring and "roc_auc" not in multiclass.cv_scoring
    assert set(regression.cv_scoring) == {"rmse", "mae", "r2"}
    assert "ridge" in regression.estimators and "logistic_regression" not in regression.estimators
    assert "logistic_regression" in binary.estimators
    assert {"random_forest", "gradient_boosting", "hist_gradient_boosting"} <= set(
        regression.estimators
    )
    assert not regression.is_classifier and regression.stratify(pd.Series([1.0])) is None
