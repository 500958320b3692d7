"""Estimator builders shared by the tasks: `(train params, seed) -> unfitted estimator`.

The tree ensembles take the same hyperparameters for classification and regression; each
task module passes its own scikit-learn class (and `class_weight` for classifiers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sklearn.base import BaseEstimator

Builder = Callable[[dict[str, Any], int], BaseEstimator]


def random_forest(cls: type, weighted: bool = False) -> Builder:
    def build(p: dict[str, Any], seed: int) -> BaseEstimator:
        extra = {"class_weight": p.get("class_weight")} if weighted else {}
        return cls(
            n_estimators=p["n_estimators"],
            max_depth=p["max_depth"],
            min_samples_leaf=p["min_samples_leaf"],
            random_state=seed,
            n_jobs=1,
            **extra,
        )

    return build


def gradient_boosting(cls: type) -> Builder:
    def build(p: dict[str, Any], seed: int) -> BaseEstimator:
        return cls(
            n_estimators=p["n_estimators"],
            max_depth=p["max_depth"],
            min_samples_leaf=p["min_samples_leaf"],
            learning_rate=p["learning_rate"],
            random_state=seed,
        )

    return build


def hist_gradient_boosting(cls: type, weighted: bool = False) -> Builder:
    def build(p: dict[str, Any], seed: int) -> BaseEstimator:
        extra = {"class_weight": p.get("class_weight")} if weighted else {}
        return cls(
            max_iter=p["max_iter"],
            max_depth=p["max_depth"],
            min_samples_leaf=p["min_samples_leaf"],
            learning_rate=p["learning_rate"],
            early_stopping=False,
            random_state=seed,
            **extra,
        )

    return build
