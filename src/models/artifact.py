"""The model artifact: one joblib file holding the fitted Pipeline, the feature schema and
metadata. Written atomically; loaded with checks that name the file and the problem.

Loading it needs scikit-learn, pandas and joblib (no MLflow, no DVC). The predictor does
not load it: it serves the ONNX export of it (the export stage, models/serving/).
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from src.features.schema import to_model_frame
from src.tasks import schema_task
from src.utils import atomic_write

FORMAT = "mloperation.model"
FORMAT_VERSION = 2  # 2: categorical nulls are "" (to_model_frame), Float32 step
REQUIRED_KEYS = ("pipeline", "schema", "metadata")


def to_float32(X: Any) -> np.ndarray:
    """(A module-level function, so the pickled pipeline refers to it by name.)"""
    return np.asarray(X, dtype=np.float32)


class Float32(TransformerMixin, BaseEstimator):
    """The preprocessed matrix as float32 (stateless).

    Hand-written rather than FunctionTransformer(to_float32) because skl2onnx cannot
    convert a FunctionTransformer; its converter (a Cast) is in src/models/export_model.py.
    """

    def fit(self, X: Any, y: Any = None) -> Float32:
        return self

    def transform(self, X: Any) -> np.ndarray:
        return to_float32(X)

    def __sklearn_is_fitted__(self) -> bool:
        return True


def model_pipeline(preprocessor: Any, estimator: Any) -> Pipeline:
    """preprocess -> float32 -> estimator: the estimator sees exactly the float32 matrix
    the served ONNX model sees (scikit-learn's forests cast to float32 anyway; hist
    gradient boosting would compare float64 values with its split thresholds, and values
    within a float32 rounding of a threshold would then go the other way when served)."""
    return Pipeline(
        [
            ("preprocess", preprocessor),
            ("float32", Float32()),
            ("model", estimator),
        ]
    )


class ModelLoadError(RuntimeError):
    """The model file is missing, truncated, corrupt or not an MLOperation model."""


def make_bundle(pipeline: Any, schema: dict[str, Any], metadata: dict[str, Any]) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pipeline": pipeline,
        "schema": schema,
        "metadata": metadata,
    }


def save_model(
    bundle: dict[str, Any],
    path: Path | str,
    before_replace: Callable[[Path], None] | None = None,
) -> Path:
    """Write the bundle atomically: readers see the old file or the new one, never a part.

    `before_replace(tmp)` is called with the complete new file before it replaces `path`
    (train logs its MLflow run there, tagged with the file's sha256); if it raises, `path`
    is left as it was.
    """

    def write(tmp: Path) -> None:
        joblib.dump(bundle, tmp, compress=3)
        if before_replace is not None:
            before_replace(tmp)

    return atomic_write(path, write)


def load_model(path: Path | str) -> dict[str, Any]:
    """Load and check a model bundle; raise ModelLoadError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path} (run `make repro` or `dvc pull`)")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"model file is empty: {path}")
    try:
        bundle = joblib.load(path)
    except (
        EOFError,
        pickle.UnpicklingError,
        ValueError,
        OSError,
        KeyError,
        IndexError,
        struct.error,  # how some truncated files fail (seen with a logistic_regression model)
    ) as exc:
        raise ModelLoadError(
            f"model file is truncated or corrupt: {path} ({type(exc).__name__}: {exc})"
        ) from exc
    except Exception as exc:
        raise ModelLoadError(
            f"model file could not be loaded: {path} ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise ModelLoadError(
            f"not an MLOperation model: {path} (expected a bundle written by "
            f"src.models.train_model, found {type(bundle).__name__})"
        )
    if bundle.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(
            f"model format version {bundle.get('format_version')} in {path} is not supported "
            f"(this code reads version {FORMAT_VERSION}); retrain with `make repro`"
        )
    missing = [k for k in REQUIRED_KEYS if k not in bundle]
    if missing:
        raise ModelLoadError(f"model file {path} lacks {', '.join(missing)}")
    return bundle


def predict_proba_frame(bundle: dict[str, Any], frame: pd.DataFrame) -> pd.DataFrame:
    """Per-class probabilities for a model frame (see to_model_frame), columns = classes."""
    pipeline = bundle["pipeline"]
    proba = pipeline.predict_proba(frame)
    return pd.DataFrame(proba, columns=[str(c) for c in pipeline.classes_], index=frame.index)


def model_outputs(bundle: dict[str, Any], frame: pd.DataFrame) -> Any:
    """The task's raw outputs for a model frame: per-class probabilities (a DataFrame,
    columns = classes) for classification, predicted numbers (an array) for regression."""
    return schema_task(bundle["schema"]).outputs(bundle["pipeline"], frame)


def predict(bundle: dict[str, Any], df: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame | None]:
    """(predictions, probabilities or None for regression) for raw rows holding at least
    the schema's features."""
    task = schema_task(bundle["schema"])
    outputs = task.outputs(bundle["pipeline"], to_model_frame(df, bundle["schema"]))
    return task.predictions(outputs), outputs if task.is_classifier else None
