"""Stage `evaluate`: score the model on the held-out test set; write metrics and plots.

    python -m src.models.evaluate_model [--params params.yaml]

Writes `metrics/scores.json`, plot data under `plots/` (declared in dvc.yaml for
`dvc plots show/diff`) and PNG renderings under `plots/images/` (for the PR comment).
All outputs are deterministic for the same inputs.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)
from sklearn.preprocessing import label_binarize

from src import config
from src.features.schema import to_model_frame
from src.models.artifact import ModelLoadError, load_model, predict_proba_frame
from src.utils import PipelineError, atomic_write, load_params, run_cli, write_json

log = logging.getLogger(__name__)

DECIMALS = 6


def compute_metrics(y_true: np.ndarray, proba: pd.DataFrame) -> dict[str, float]:
    """Test-set metrics from true labels and per-class probabilities."""
    classes = list(proba.columns)
    y_pred = np.asarray(classes)[proba.to_numpy().argmax(axis=1)]
    scores = {
        "accuracy": accuracy_score(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
        "f1_macro": f1_score(y_true, y_pred, average="macro"),
        "roc_auc_ovr": roc_auc_score(y_true, proba.to_numpy(), multi_class="ovr", labels=classes)
        if len(classes) > 2
        else roc_auc_score(y_true == classes[1], proba[classes[1]]),
        "log_loss": log_loss(y_true, proba.to_numpy(), labels=classes),
    }
    return {k: round(float(v), DECIMALS) for k, v in scores.items()}


def curve_frames(y_true: np.ndarray, proba: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One-vs-rest ROC and precision-recall points, one row per point, with a `class` column."""
    classes = list(proba.columns)
    onehot = label_binarize(y_true, classes=classes)
    if len(classes) == 2:
        onehot = np.hstack([1 - onehot, onehot])
    roc_rows, pr_rows = [], []
    for i, cls in enumerate(classes):
        fpr, tpr, _ = roc_curve(onehot[:, i], proba[cls])
        roc_rows.append(pd.DataFrame({"class": cls, "fpr": fpr, "tpr": tpr}))
        precision, recall, _ = precision_recall_curve(onehot[:, i], proba[cls])
        pr_rows.append(pd.DataFrame({"class": cls, "recall": recall, "precision": precision}))
    roc = pd.concat(roc_rows, ignore_index=True).round(DECIMALS)
    pr = pd.concat(pr_rows, ignore_index=True).round(DECIMALS)
    return roc, pr


def feature_importance(
    pipeline: Any, X: pd.DataFrame, y: np.ndarray, repeats: int, seed: int
) -> pd.DataFrame:
    """Permutation importance on the test set, per raw feature (works for every model type)."""
    result = permutation_importance(
        pipeline, X, y, n_repeats=repeats, random_state=seed, scoring="accuracy", n_jobs=1
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


def write_plot_data(
    plots_dir: Path, y_true: np.ndarray, proba: pd.DataFrame, importance: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    """Write the plot data declared under `plots:` in dvc.yaml; return it for rendering.

    Curves go one file per class (plots/roc/<class>.csv), so `dvc plots` draws each class
    without dataset-specific configuration.
    """
    classes = np.asarray(proba.columns)
    confusion = pd.DataFrame(
        {"actual": y_true, "predicted": classes[proba.to_numpy().argmax(axis=1)]}
    )
    roc, pr = curve_frames(y_true, proba)
    frames = {
        "confusion_matrix": confusion,
        "roc": roc,
        "precision_recall": pr,
        "feature_importance": importance,
    }
    for name in ("confusion_matrix", "feature_importance"):
        atomic_write(plots_dir / f"{name}.csv", lambda p, f=frames[name]: f.to_csv(p, index=False))
    for name in ("roc", "precision_recall"):
        folder = plots_dir / name
        if folder.exists():
            shutil.rmtree(folder)
        for cls, group in frames[name].groupby("class", sort=True):
            atomic_write(
                folder / f"{slug(str(cls))}.csv",
                lambda p, g=group: g.drop(columns="class").to_csv(p, index=False),
            )
    return frames


def evaluate(
    bundle: dict[str, Any], test: pd.DataFrame, params: dict[str, Any], plots_dir: Path
) -> dict[str, Any]:
    """Score the model on `test`, write plot data and images; return the metrics."""
    schema = bundle["schema"]
    target = schema["target"]
    if target not in test.columns:
        raise PipelineError(f"test set has no target column {target!r}")
    X = to_model_frame(test, schema)
    y_true = test[target].astype(str).to_numpy()
    proba = predict_proba_frame(bundle, X)
    scores = compute_metrics(y_true, proba)
    scores.update(bundle["metadata"].get("training_metrics", {}))
    scores["n_test"] = len(test)
    importance = feature_importance(
        bundle["pipeline"],
        X,
        y_true,
        int(params["evaluate"]["permutation_repeats"]),
        int(params["base"]["random_state"]),
    )
    frames = write_plot_data(plots_dir, y_true, proba, importance)

    from src.visualization.render import render_all

    render_all(frames, list(proba.columns), plots_dir / "images")
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=config.PARAMS_FILE)
    args = parser.parse_args()
    params = load_params(args.params)
    try:
        bundle = load_model(config.MODEL_FILE)
    except ModelLoadError as exc:
        raise PipelineError(str(exc)) from exc
    test = pd.read_csv(config.TEST_DATA)
    scores = evaluate(bundle, test, params, config.PLOTS_DIR)
    write_json(config.SCORES_FILE, scores)
    log.info("test metrics: %s", {k: v for k, v in scores.items() if not k.startswith("cv_")})


if __name__ == "__main__":
    run_cli(main)
