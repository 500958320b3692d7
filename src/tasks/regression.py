"""Regression: a numeric target, a number per record.

Metrics: RMSE and MAE (lower is better) and R² (higher is better) on the test set and in
cross-validation. Plots: predicted vs actual, residuals, permutation importance (R² drop).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
)
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from src.tasks.estimators import gradient_boosting, hist_gradient_boosting, random_forest

DECIMALS = 6


def _ridge(p: dict[str, Any], seed: int) -> BaseEstimator:
    # Linear models need scaled inputs; the scaler travels with the estimator.
    return Pipeline(
        [("scale", StandardScaler()), ("reg", Ridge(alpha=p["alpha"], random_state=seed))]
    )


class RegressionTask:
    name = "regression"
    family = "regression"
    is_classifier = False
    binary = False
    estimators: ClassVar[dict[str, Any]] = {
        "random_forest": random_forest(RandomForestRegressor),
        "gradient_boosting": gradient_boosting(GradientBoostingRegressor),
        "hist_gradient_boosting": hist_gradient_boosting(HistGradientBoostingRegressor),
        "ridge": _ridge,
    }
    importance_scoring = "r2"
    importance_label = "mean R² drop when shuffled"
    cv_scoring: ClassVar[dict[str, str]] = {
        "rmse": "neg_root_mean_squared_error",
        "mae": "neg_mean_absolute_error",
        "r2": "r2",
    }
    # scikit-learn's scorers negate losses so that higher is better; undo that for reports
    cv_sign: ClassVar[dict[str, float]] = {"rmse": -1.0, "mae": -1.0, "r2": 1.0}

    @staticmethod
    def encode_target(y: pd.Series) -> pd.Series:
        return pd.to_numeric(y, errors="raise").astype("float64")

    def stratify(self, y: pd.Series) -> None:
        return None

    def cv_splitter(self, folds: int, seed: int, y: pd.Series) -> KFold:
        if folds < 2 or folds > len(y):
            raise ValueError(f"train.cv_folds={folds} must be between 2 and the rows ({len(y)})")
        return KFold(n_splits=folds, shuffle=True, random_state=seed)

    def train_metrics(self, y: pd.Series, pipeline: Any, X: pd.DataFrame) -> dict[str, float]:
        return {"train_r2": round(float(r2_score(y, pipeline.predict(X))), DECIMALS)}

    @staticmethod
    def outputs(pipeline: Any, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(pipeline.predict(X), dtype=np.float64)

    @staticmethod
    def predictions(outputs: np.ndarray) -> np.ndarray:
        return outputs

    def test_metrics(self, y_true: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
        scores = {
            "rmse": float(np.sqrt(mean_squared_error(y_true, outputs))),
            "mae": mean_absolute_error(y_true, outputs),
            "r2": r2_score(y_true, outputs),
        }
        return {k: round(float(v), DECIMALS) for k, v in scores.items()}

    def plot_frames(self, y_true: np.ndarray, outputs: np.ndarray) -> dict[str, pd.DataFrame]:
        """Predicted vs actual per test row (residual = actual - predicted)."""
        frame = pd.DataFrame(
            {
                "actual": np.asarray(y_true, dtype=np.float64),
                "predicted": outputs,
            }
        )
        frame["residual"] = frame["actual"] - frame["predicted"]
        return {"predictions": frame.round(DECIMALS)}

    def test_summary(self, y_true: np.ndarray, outputs: np.ndarray) -> dict[str, Any]:
        """Summary of the test residuals (actual - predicted), logged to MLflow."""
        residual = np.asarray(y_true, dtype=np.float64) - outputs
        stats = {
            "mean": residual.mean(),
            "std": residual.std(),
            "min": residual.min(),
            "p05": np.percentile(residual, 5),
            "median": np.median(residual),
            "p95": np.percentile(residual, 95),
            "max": residual.max(),
            "max_abs": np.abs(residual).max(),
        }
        return {"residual": {k: round(float(v), DECIMALS) for k, v in stats.items()}}
