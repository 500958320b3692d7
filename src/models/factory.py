"""Model factory: `train.model_type` -> an unfitted scikit-learn estimator.

To add your own model, add one entry to MODEL_BUILDERS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from src.utils import PipelineError


def _random_forest(p: dict[str, Any], seed: int) -> BaseEstimator:
    return RandomForestClassifier(
        n_estimators=p["n_estimators"],
        max_depth=p["max_depth"],
        min_samples_leaf=p["min_samples_leaf"],
        class_weight=p.get("class_weight"),
        random_state=seed,
        n_jobs=1,
    )


def _gradient_boosting(p: dict[str, Any], seed: int) -> BaseEstimator:
    return GradientBoostingClassifier(
        n_estimators=p["n_estimators"],
        max_depth=p["max_depth"],
        min_samples_leaf=p["min_samples_leaf"],
        learning_rate=p["learning_rate"],
        random_state=seed,
    )


def _hist_gradient_boosting(p: dict[str, Any], seed: int) -> BaseEstimator:
    return HistGradientBoostingClassifier(
        max_iter=p["max_iter"],
        max_depth=p["max_depth"],
        min_samples_leaf=p["min_samples_leaf"],
        learning_rate=p["learning_rate"],
        class_weight=p.get("class_weight"),
        early_stopping=False,
        random_state=seed,
    )


def _logistic_regression(p: dict[str, Any], seed: int) -> BaseEstimator:
    # Linear models need scaled inputs; the scaler travels with the estimator.
    return Pipeline(
        [
            ("scale", StandardScaler()),
            (
                "clf",
                LogisticRegression(
                    C=p["C"],
                    max_iter=p["max_iter"],
                    class_weight=p.get("class_weight"),
                    random_state=seed,
                ),
            ),
        ]
    )


MODEL_BUILDERS: dict[str, Callable[[dict[str, Any], int], BaseEstimator]] = {
    "random_forest": _random_forest,
    "gradient_boosting": _gradient_boosting,
    "hist_gradient_boosting": _hist_gradient_boosting,
    "logistic_regression": _logistic_regression,
}


def make_estimator(train_params: dict[str, Any], random_state: int) -> BaseEstimator:
    """Build the estimator named by `train_params["model_type"]` from its params."""
    model_type = train_params.get("model_type")
    if model_type not in MODEL_BUILDERS:
        raise PipelineError(
            f"train.model_type {model_type!r} is not one of: {', '.join(MODEL_BUILDERS)}"
        )
    try:
        return MODEL_BUILDERS[model_type](train_params, random_state)
    except KeyError as exc:
        raise PipelineError(f"train.{exc.args[0]} is required for {model_type}") from exc
