"""Expectations for the CONFIGURED dataset, read from params.yaml rather than written down.

- `gate_bounds(params)`: the quality gate's {min, max, max_drop} for the task family of
  params' `data` block (or the family given), from either layout of `gate:` (flat, or one
  block per task family);
- `classification_scores(...)`, `regression_scores(...)`: the test-set metrics the gate
  names, computed here with scikit-learn (an oracle independent of src/), under the keys
  of metrics/scores.json.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from src.tasks import task_family

RULES = ("min", "max", "max_drop")
FAMILIES = ("classification", "regression")


def gate_bounds(params: dict[str, Any], family: str | None = None) -> dict[str, dict]:
    """{"min": {...}, "max": {...}, "max_drop": {...}} of `gate:` for `family` (default: the
    family of params' `data` block, as `src.tasks.task_family` picks it).

    Accepts the flat layout `gate: {min, max, max_drop}` (one gate for every task) and the
    per-family layout `gate: {classification: {min, ...}, regression: {...}}`; a family
    without a block has no bounds.
    """
    if family is None:
        family = task_family(params["data"])
    gate = params.get("gate") or {}
    if any(key in gate for key in FAMILIES):
        gate = gate.get(family) or {}
    return {rule: dict(gate.get(rule) or {}) for rule in RULES}


def classification_scores(y_true: np.ndarray | pd.Series, proba: pd.DataFrame) -> dict[str, float]:
    """Test-set metrics from true labels and per-class probabilities (columns = classes)."""
    y_true = np.asarray(y_true).astype(str)
    classes = [str(c) for c in proba.columns]
    y_pred = np.asarray(classes)[proba.to_numpy().argmax(axis=1)]
    scores = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
        "f1_macro": skm.f1_score(y_true, y_pred, average="macro", labels=classes),
        "log_loss": skm.log_loss(y_true, proba.to_numpy(), labels=classes),
    }
    if len(classes) == 2:
        scores["roc_auc"] = skm.roc_auc_score(y_true == classes[1], proba[classes[1]])
        scores["roc_auc_ovr"] = scores["roc_auc"]
        scores["average_precision"] = skm.average_precision_score(
            y_true == classes[1], proba[classes[1]]
        )
    elif len(set(y_true)) == len(classes):
        scores["roc_auc_ovr"] = skm.roc_auc_score(
            y_true, proba.to_numpy(), multi_class="ovr", labels=classes
        )
    return {k: float(v) for k, v in scores.items()}


def regression_scores(y_true: np.ndarray | pd.Series, predicted: np.ndarray) -> dict[str, float]:
    """Test-set metrics from true and predicted numbers."""
    y_true = np.asarray(y_true, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    scores = {
        "rmse": np.sqrt(skm.mean_squared_error(y_true, predicted)),
        "mae": skm.mean_absolute_error(y_true, predicted),
        "r2": skm.r2_score(y_true, predicted),
    }
    return {k: float(v) for k, v in scores.items()}
