"""Classification (binary and multiclass): everything that differs from regression.

Labels are strings (the target column as text); the model answers per-class
probabilities. Binary tasks add ROC AUC and average precision of the positive class (the
second class in sorted order, as scikit-learn orders them); multiclass tasks use
one-vs-rest ROC AUC.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler, label_binarize

from src.tasks.estimators import gradient_boosting, hist_gradient_boosting, random_forest

DECIMALS = 6


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


class ClassificationTask:
    """Binary (two classes) or multiclass classification."""

    family = "classification"
    is_classifier = True
    estimators: ClassVar[dict[str, Any]] = {
        "random_forest": random_forest(RandomForestClassifier, weighted=True),
        "gradient_boosting": gradient_boosting(GradientBoostingClassifier),
        "hist_gradient_boosting": hist_gradient_boosting(
            HistGradientBoostingClassifier, weighted=True
        ),
        "logistic_regression": _logistic_regression,
    }
    importance_scoring = "accuracy"
    importance_label = "mean accuracy drop when shuffled"

    def __init__(self, binary: bool):
        self.binary = binary
        self.name = "binary" if binary else "multiclass"

    # -- data ----------------------------------------------------------------------------

    @staticmethod
    def encode_target(y: pd.Series) -> pd.Series:
        """Labels as strings: the same text in CSVs, JSON answers and the model."""
        return y.astype(str)

    def stratify(self, y: pd.Series) -> pd.Series:
        return y

    def cv_splitter(self, folds: int, seed: int, y: pd.Series) -> StratifiedKFold:
        smallest = int(y.value_counts().min())
        if folds < 2 or folds > smallest:
            raise ValueError(
                f"train.cv_folds={folds} must be between 2 and the smallest class size ({smallest})"
            )
        return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)

    @property
    def cv_scoring(self) -> dict[str, str]:
        scoring = {
            "accuracy": "accuracy",
            "balanced_accuracy": "balanced_accuracy",
            "f1_macro": "f1_macro",
        }
        if self.binary:
            scoring["roc_auc"] = "roc_auc"
        return scoring

    def train_metrics(self, y: pd.Series, pipeline: Any, X: pd.DataFrame) -> dict[str, float]:
        return {"train_accuracy": round(float(accuracy_score(y, pipeline.predict(X))), DECIMALS)}

    # -- evaluation ----------------------------------------------------------------------

    @staticmethod
    def outputs(pipeline: Any, X: pd.DataFrame) -> pd.DataFrame:
        """Per-class probabilities, one column per class (as the model orders them)."""
        proba = pipeline.predict_proba(X)
        return pd.DataFrame(proba, columns=[str(c) for c in pipeline.classes_], index=X.index)

    @staticmethod
    def predictions(outputs: pd.DataFrame) -> np.ndarray:
        return outputs.columns.to_numpy()[outputs.to_numpy().argmax(axis=1)]

    def test_metrics(self, y_true: np.ndarray, outputs: pd.DataFrame) -> dict[str, float]:
        classes = list(outputs.columns)
        y_pred = self.predictions(outputs)
        proba = outputs.to_numpy()
        scores = {
            "accuracy": accuracy_score(y_true, y_pred),
            "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
            "f1_macro": f1_score(y_true, y_pred, average="macro"),
            "log_loss": log_loss(y_true, proba, labels=classes),
        }
        if self.binary:
            positive = np.asarray(y_true) == classes[1]
            scores["roc_auc"] = roc_auc_score(positive, outputs[classes[1]])
            scores["average_precision"] = average_precision_score(positive, outputs[classes[1]])
        else:
            scores["roc_auc_ovr"] = roc_auc_score(y_true, proba, multi_class="ovr", labels=classes)
        return {k: round(float(v), DECIMALS) for k, v in scores.items()}

    def plot_frames(self, y_true: np.ndarray, outputs: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Confusion data and one-vs-rest ROC / precision-recall points (`class` column)."""
        classes = list(outputs.columns)
        confusion = pd.DataFrame({"actual": y_true, "predicted": self.predictions(outputs)})
        onehot = label_binarize(y_true, classes=classes)
        if len(classes) == 2:
            onehot = np.hstack([1 - onehot, onehot])
        roc_rows, pr_rows = [], []
        for i, cls in enumerate(classes):
            fpr, tpr, _ = roc_curve(onehot[:, i], outputs[cls])
            roc_rows.append(pd.DataFrame({"class": cls, "fpr": fpr, "tpr": tpr}))
            precision, recall, _ = precision_recall_curve(onehot[:, i], outputs[cls])
            pr_rows.append(pd.DataFrame({"class": cls, "recall": recall, "precision": precision}))
        return {
            "confusion_matrix": confusion,
            "roc": pd.concat(roc_rows, ignore_index=True).round(DECIMALS),
            "precision_recall": pd.concat(pr_rows, ignore_index=True).round(DECIMALS),
        }

    def test_summary(self, y_true: np.ndarray, outputs: pd.DataFrame) -> dict[str, Any]:
        """Per-class precision, recall, F1 and support on the test set (logged to MLflow)."""
        classes = list(outputs.columns)
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, self.predictions(outputs), labels=classes, zero_division=0
        )
        return {
            "per_class": {
                cls: {
                    "precision": round(float(precision[i]), DECIMALS),
                    "recall": round(float(recall[i]), DECIMALS),
                    "f1": round(float(f1[i]), DECIMALS),
                    "support": int(support[i]),
                }
                for i, cls in enumerate(classes)
            }
        }
