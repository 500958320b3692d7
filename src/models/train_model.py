"""Stage `train`: fit the estimator chosen by `train.model_type`, write ONE model artifact,
and track the run in MLflow.

    python -m src.models.train_model [--params params.yaml] [--no-mlflow]

Reads the fitted preprocessor and transformed matrix from the features stage and
`data/processed/train.csv` (target, cross-validation); writes `models/model.joblib`.
"""

from __future__ import annotations

import argparse
import logging
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.base import clone
from sklearn.metrics import accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline

from src import config
from src.features.schema import to_model_frame
from src.models.artifact import make_bundle, save_model
from src.models.factory import make_estimator
from src.utils import PipelineError, git_commit, load_params, run_cli, sha256_file

log = logging.getLogger(__name__)

CV_SCORING = ("accuracy", "balanced_accuracy", "f1_macro")


def cross_validate_model(
    preprocessor: Any, estimator: Any, X: pd.DataFrame, y: pd.Series, folds: int, seed: int
) -> dict[str, float]:
    """Stratified K-fold CV of (unfitted preprocessor + estimator) on the training set."""
    pipeline = Pipeline([("preprocess", clone(preprocessor)), ("model", clone(estimator))])
    min_class = int(y.value_counts().min())
    if folds < 2 or folds > min_class:
        raise PipelineError(
            f"train.cv_folds={folds} must be between 2 and the smallest class size ({min_class})"
        )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_validate(pipeline, X, y, cv=cv, scoring=list(CV_SCORING), n_jobs=1)
    out: dict[str, float] = {}
    for name in CV_SCORING:
        values = scores[f"test_{name}"]
        out[f"cv_{name}_mean"] = round(float(np.mean(values)), 6)
        out[f"cv_{name}_std"] = round(float(np.std(values)), 6)
    return out


def train(
    params: dict[str, Any], features: dict[str, Any], matrix: pd.DataFrame, train_df: pd.DataFrame
) -> tuple[Pipeline, dict[str, float]]:
    """Fit the estimator on the transformed matrix; return (full pipeline, training metrics)."""
    schema, preprocessor = features["schema"], features["preprocessor"]
    seed = int(params["base"]["random_state"])
    estimator = make_estimator(params["train"], seed)
    X = to_model_frame(train_df, schema)
    y = train_df[schema["target"]].astype(str)
    metrics = cross_validate_model(
        preprocessor, estimator, X, y, int(params["train"]["cv_folds"]), seed
    )
    estimator.fit(matrix.to_numpy(), y.to_numpy())
    pipeline = Pipeline([("preprocess", preprocessor), ("model", estimator)])
    metrics["train_accuracy"] = round(float(accuracy_score(y, pipeline.predict(X))), 6)
    return pipeline, metrics


def build_metadata(
    params: dict[str, Any], schema: dict[str, Any], metrics: dict[str, float]
) -> dict[str, Any]:
    return {
        "model_type": params["train"]["model_type"],
        "classes": schema["classes"],
        "training_metrics": metrics,
        "train_data_sha256": sha256_file(config.TRAIN_DATA),
        "params": {k: params[k] for k in ("base", "data", "split", "features", "train")},
        "git_commit": git_commit(),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=config.PARAMS_FILE)
    parser.add_argument(
        "--no-mlflow", action="store_true", help="skip MLflow tracking (e.g. for benchmarks)"
    )
    args = parser.parse_args()
    params = load_params(args.params)
    for path in (config.FEATURES_ARTIFACT, config.TRAIN_FEATURES, config.TRAIN_DATA):
        if not path.is_file():
            raise PipelineError(f"{path} not found: run the earlier stages first (dvc repro)")
    if not args.no_mlflow:  # fail before training, not after, when the server is down
        from src.models.tracking import check_tracking_server, tracking_uri

        check_tracking_server(tracking_uri())

    features = joblib.load(config.FEATURES_ARTIFACT)
    matrix = pd.read_csv(config.TRAIN_FEATURES)
    train_df = pd.read_csv(config.TRAIN_DATA)
    pipeline, metrics = train(params, features, matrix, train_df)
    metadata = build_metadata(params, features["schema"], metrics)
    log.info("trained %s: %s", metadata["model_type"], metrics)

    if not args.no_mlflow:
        from src.models.tracking import log_training_run

        example = to_model_frame(train_df, features["schema"]).dropna().head(5)
        metadata["mlflow_run_id"] = log_training_run(
            params=params,
            metrics=metrics,
            pipeline=pipeline,
            input_example=example,
            tags={
                "git_commit": metadata["git_commit"] or "unknown",
                "model_type": metadata["model_type"],
                "train_data_sha256": metadata["train_data_sha256"],
            },
            artifacts=[config.PARAMS_FILE, config.ROOT / "dvc.lock"],
        )
    save_model(make_bundle(pipeline, features["schema"], metadata), config.MODEL_FILE)
    log.info("wrote %s", config.MODEL_FILE)


if __name__ == "__main__":
    run_cli(main)
