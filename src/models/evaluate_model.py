"""Stage `evaluate`: score the model on the held-out test set; write metrics and plots.

    python -m src.models.evaluate_model [--params params.yaml] [--no-mlflow]

Writes `metrics/scores.json` (the task's metrics, src/tasks/), plot data under `plots/`
(declared in dvc.yaml for `dvc plots show/diff`: confusion matrix and per-class curves for
classification, predicted vs actual for regression, feature importance for both) and PNG
renderings under `plots/images/` (for the PR comment), and, for the PR comment's paired
comparison with the base branch (src/noise.py), the test set's per-row predictions
(`metrics/test_predictions.csv`: at most `evaluate.predictions_max_rows` rows, a seeded
sample beyond that) and the per-fold CV scores (`metrics/cv_folds.json`).
All outputs are deterministic for the same inputs. The test metrics and a per-class
(classification) or residual (regression) summary are also logged to MLflow, on the
training run of this model (src/models/tracking.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from src import config
from src.features.schema import to_model_frame, unknown_category_rows
from src.models.artifact import ModelLoadError, load_model
from src.noise import (
    CV_FOLDS_PATH,
    PREDICTIONS_PATH,
    predictions_frame,
    sample_rows,
    write_predictions,
)
from src.tasks import schema_task
from src.utils import PipelineError, atomic_write, load_params, run_cli, write_json

log = logging.getLogger(__name__)

DECIMALS = 6


def feature_importance(
    pipeline: Any, X: pd.DataFrame, y: np.ndarray, repeats: int, seed: int, scoring: str
) -> pd.DataFrame:
    """Permutation importance on the test set, per raw feature (works for every model type).

    `scoring` is the task's (accuracy for classification, R² for regression).
    """
    result = permutation_importance(
        pipeline, X, y, n_repeats=repeats, random_state=seed, scoring=scoring, n_jobs=1
    )
    frame = pd.DataFrame(
        {
            "feature": X.columns,
            "importance": result.importances_mean,
            "std": result.importances_std,
        }
    )
    return frame.sort_values(["importance", "feature"], ascending=[False, True]).round(DECIMALS)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_plot_data(plots_dir: Path, frames: dict[str, pd.DataFrame]) -> None:
    """Write the plot data declared under `plots:` in dvc.yaml.

    The stage owns the whole `plots/` folder, so it starts empty: a switch from
    classification to regression leaves no stale confusion matrix behind. Curves go one
    file per class (plots/roc/<class>.csv), so `dvc plots` draws each class without
    dataset-specific configuration.
    """
    if plots_dir.exists():
        shutil.rmtree(plots_dir)
    plots_dir.mkdir(parents=True)
    for name, frame in frames.items():
        if "class" in frame.columns:  # per-class curves
            for cls, group in frame.groupby("class", sort=True):
                atomic_write(
                    plots_dir / name / f"{slug(str(cls))}.csv",
                    lambda p, g=group: g.drop(columns="class").to_csv(p, index=False),
                )
        else:
            atomic_write(plots_dir / f"{name}.csv", lambda p, f=frame: f.to_csv(p, index=False))


def max_prediction_rows(params: dict[str, Any]) -> int:
    value = (params.get("evaluate") or {}).get("predictions_max_rows")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PipelineError(
            f"evaluate.predictions_max_rows must be a whole number >= 1, got {value!r}"
        )
    return value


def evaluate(
    bundle: dict[str, Any],
    test: pd.DataFrame,
    params: dict[str, Any],
    plots_dir: Path,
    predictions_file: Path | None = None,
    summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score the model on `test`, write plot data and images; return the metrics.

    With `predictions_file`, also write the scored rows' predictions there (row = position
    in `test`, the same rows for any model scored on the same test set). `summary`, when
    given, is filled with the task's per-class or residual summary.

    Rows with a category unseen in training are scored as the server scores them
    (`features.unknown_categories: ignore`: encoded as no known category) or left out and
    counted (`reject`: the server answers them 422), so the metrics describe what clients get.
    """
    max_rows = None if predictions_file is None else max_prediction_rows(params)
    schema = bundle["schema"]
    task = schema_task(schema)
    target = schema["target"]
    if target not in test.columns:
        raise PipelineError(f"test set has no target column {target!r}")
    unknown = unknown_category_rows(test, schema)
    policy = schema.get("unknown_categories", "reject")
    rows = np.arange(len(test))
    if policy == "reject" and unknown.any():
        log.warning("%d test row(s) hold unseen categories: left out (reject)", unknown.sum())
        rows = rows[~unknown.to_numpy()]
        test = test[~unknown].reset_index(drop=True)
        if test.empty:
            raise PipelineError(
                "every test row holds a category unseen in training, and "
                "features.unknown_categories is reject: nothing left to score"
            )
    X = to_model_frame(test, schema)
    y_true = task.encode_target(test[target]).to_numpy()
    outputs = task.outputs(bundle["pipeline"], X)
    scores: dict[str, Any] = task.test_metrics(y_true, outputs)
    if summary is not None:
        summary.update(task.test_summary(y_true, outputs))
    scores.update(bundle["metadata"].get("training_metrics", {}))
    scores["n_test"] = len(test)
    scores["n_unknown_category_rows"] = int(unknown.sum())
    if predictions_file is not None:
        frame = predictions_frame(rows, y_true, outputs, task.is_classifier)
        keep = sample_rows(len(frame), max_rows, int(params["base"]["random_state"]))
        write_predictions(predictions_file, frame.iloc[keep])
    importance = feature_importance(
        bundle["pipeline"],
        X,
        y_true,
        int(params["evaluate"]["permutation_repeats"]),
        int(params["base"]["random_state"]),
        task.importance_scoring,
    )
    frames = {**task.plot_frames(y_true, outputs), "feature_importance": importance}
    write_plot_data(plots_dir, frames)

    from src.visualization.render import render_all

    render_all(
        frames,
        list(outputs.columns) if task.is_classifier else [],
        plots_dir / "images",
        importance_label=task.importance_label,
    )
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=config.PARAMS_FILE)
    parser.add_argument("--no-mlflow", action="store_true", help="skip MLflow tracking")
    args = parser.parse_args()
    params = load_params(args.params)
    try:
        bundle = load_model(config.MODEL_FILE)
    except ModelLoadError as exc:
        raise PipelineError(str(exc)) from exc
    run_id = None
    if not args.no_mlflow:  # find the training run before the work, not after
        from src.models.tracking import log_evaluation, run_of_this_experiment, training_run_id

        run_id = training_run_id(config.MODEL_FILE)
        if run_id is not None and not run_of_this_experiment(run_id, os.environ):
            log.info(
                "MLflow: this experiment did not retrain (its set changes no input of train), "
                "so its test metrics are not logged over run %s of another configuration",
                run_id,
            )
            run_id = None
    test = pd.read_csv(config.TEST_DATA)
    summary: dict[str, Any] = {}
    scores = evaluate(
        bundle,
        test,
        params,
        config.PLOTS_DIR,
        predictions_file=config.ROOT / PREDICTIONS_PATH,
        summary=summary,
    )
    write_json(config.SCORES_FILE, scores)
    folds = bundle["metadata"].get("cv_folds")
    if folds is None:
        raise PipelineError(
            f"{config.MODEL_FILE} holds no per-fold CV scores: rerun `dvc repro train`"
        )
    write_json(config.ROOT / CV_FOLDS_PATH, folds)
    if run_id is not None:
        trained = bundle["metadata"].get("training_metrics", {})
        log_evaluation(run_id, {k: v for k, v in scores.items() if k not in trained}, summary)
    log.info("test metrics: %s", {k: v for k, v in scores.items() if not k.startswith("cv_")})


if __name__ == "__main__":
    run_cli(main)
