"""Stage `train`: fit the estimator chosen by `train.model_type`, write ONE model artifact,
and track the run in MLflow.

    python -m src.models.train_model [--params params.yaml] [--no-mlflow]

Reads the fitted preprocessor and transformed matrix from the features stage and
`data/processed/train.csv` (target, cross-validation); writes `models/model.joblib`.

The artifact is byte-reproducible: the same code, data and params give the same file in
any folder, with any PYTHONHASHSEED. What differs from run to run (the MLflow run id, the
time, the git commit) goes on the MLflow run, never into the file; the run is tagged
`model_sha256` (the file's sha256), which is how later stages find it.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.base import clone
from sklearn.model_selection import cross_validate
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from src import config
from src.features.schema import to_model_frame
from src.models.artifact import make_bundle, model_pipeline, save_model, to_float32
from src.models.factory import make_estimator
from src.tasks import schema_task
from src.utils import PipelineError, git_commit, load_params, run_cli, sha256_file

log = logging.getLogger(__name__)


def cross_validate_model(
    task: Any,
    preprocessor: Any,
    estimator: Any,
    X: pd.DataFrame,
    y: pd.Series,
    folds: int,
    seed: int,
) -> tuple[dict[str, float], dict[str, Any]]:
    """K-fold CV (stratified for classification) of preprocessor + estimator on the
    training set: `cv_<metric>_mean` and `cv_<metric>_std` for the task's CV metrics, and
    the per-fold scores with a fingerprint of the folds (same training rows, same folds:
    the same fingerprint), which the report pairs across revisions (src/noise.py)."""
    pipeline = model_pipeline(clone(preprocessor), clone(estimator))
    try:
        cv = task.cv_splitter(folds, seed, y)
    except ValueError as exc:
        raise PipelineError(str(exc)) from exc
    scoring = task.cv_scoring
    scores = cross_validate(pipeline, X, y, cv=cv, scoring=dict(scoring), n_jobs=1)
    signs = getattr(task, "cv_sign", {})
    out: dict[str, float] = {}
    per_fold: dict[str, list[float]] = {}
    for name in scoring:
        values = signs.get(name, 1.0) * scores[f"test_{name}"]
        out[f"cv_{name}_mean"] = round(float(np.mean(values)), 6)
        out[f"cv_{name}_std"] = round(float(np.std(values)), 6)
        per_fold[name] = [round(float(v), 6) for v in values]
    digest = hashlib.sha256(pd.util.hash_pandas_object(X, index=True).to_numpy().tobytes())
    digest.update(pd.util.hash_pandas_object(y, index=True).to_numpy().tobytes())
    for _, test_rows in cv.split(X, y):
        digest.update(np.asarray(test_rows, dtype=np.int64).tobytes())
    return out, {"fingerprint": digest.hexdigest(), "scores": per_fold}


def train(
    params: dict[str, Any], features: dict[str, Any], matrix: pd.DataFrame, train_df: pd.DataFrame
) -> tuple[Pipeline, dict[str, float], dict[str, Any]]:
    """Fit the estimator on the transformed matrix; return (full pipeline, training metrics,
    per-fold CV scores)."""
    schema, preprocessor = features["schema"], features["preprocessor"]
    task = schema_task(schema)
    seed = int(params["base"]["random_state"])
    estimator = make_estimator(params["train"], seed, task)
    X = to_model_frame(train_df, schema)
    y = task.encode_target(train_df[schema["target"]])
    # One OpenMP thread: hist gradient boosting sums gradients in parallel, so another
    # thread count changes the last bits of its leaves (measured: other model bytes with
    # OMP_NUM_THREADS=2 than with 1). The data sets this pipeline trains on are small.
    with threadpool_limits(limits=1, user_api="openmp"):
        metrics, folds = cross_validate_model(
            task, preprocessor, estimator, X, y, int(params["train"]["cv_folds"]), seed
        )
        estimator.fit(to_float32(matrix.to_numpy()), y.to_numpy())
    pipeline = model_pipeline(preprocessor, estimator)
    metrics.update(task.train_metrics(y, pipeline, X))
    return pipeline, metrics, folds


def build_metadata(
    params: dict[str, Any], schema: dict[str, Any], metrics: dict[str, float]
) -> dict[str, Any]:
    """What the artifact says about itself: only facts fixed by its inputs (no time, run id
    or git commit, which would make every run's file different)."""
    return {
        "model_type": params["train"]["model_type"],
        "task": schema.get("task"),
        "classes": schema.get("classes", []),
        "training_metrics": metrics,
        "train_data_sha256": sha256_file(config.TRAIN_DATA),
        "params": {k: params[k] for k in ("base", "data", "split", "features", "train")},
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
    pipeline, metrics, folds = train(params, features, matrix, train_df)
    metadata = build_metadata(params, features["schema"], metrics)
    metadata["cv_folds"] = folds
    log.info("trained %s: %s", metadata["model_type"], metrics)

    bundle = make_bundle(pipeline, features["schema"], metadata)
    if args.no_mlflow:
        save_model(bundle, config.MODEL_FILE)
    else:
        from src.models.tracking import experiment_tags, log_training_run

        example = to_model_frame(train_df, features["schema"]).dropna().head(5)

        def log_run(written: Path) -> None:  # before the file replaces the old one
            log_training_run(
                params=params,
                metrics=metrics,
                pipeline=pipeline,
                input_example=example,
                tags={
                    "model_sha256": sha256_file(written),
                    "git_commit": git_commit() or "unknown",
                    "model_type": metadata["model_type"],
                    "task": str(metadata["task"]),
                    "train_data_sha256": metadata["train_data_sha256"],
                    **experiment_tags(os.environ),  # inside `dvc exp run`
                },
                artifacts=[config.PARAMS_FILE, config.ROOT / "dvc.lock"],
            )

        save_model(bundle, config.MODEL_FILE, before_replace=log_run)
    log.info("wrote %s", config.MODEL_FILE)


if __name__ == "__main__":
    run_cli(main)
