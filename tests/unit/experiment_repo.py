"""A small git repository with a `main` commit and a PR commit, for the report and gate tests.

It holds what the report reads: params.yaml, metrics/scores.json, optionally dvc.lock, the
per-row test predictions and per-fold CV scores (src/noise.py), and the plot data under
plots/ (a copy of the project's, with one change in the PR's), plus a copy of `src` so the
CLIs (`python -m src.report`, `python -m src.gate`) can run inside it. It is a real DVC
project (`dvc init`, a dvc.yaml declaring the metrics), so `dvc metrics diff` and `dvc
params diff` read it as they read the real one. Params and metrics are fixtures written
here (a made-up `label` dataset), not the configured dataset's. No pipeline runs.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from src.ci import dvc_executable
from src.config import ROOT
from src.noise import CV_FOLDS_PATH, PREDICTIONS_PATH

DVC_YAML = "metrics:\n  - metrics/scores.json\n"

BASE_METRICS = {
    "accuracy": 0.988372,
    "balanced_accuracy": 0.985,
    "cv_accuracy_std": 0.02,
    "f1_macro": 0.986,
    "log_loss": 0.05,
    "n_test": 86,
}
PR_METRICS = {
    "accuracy": 0.953488,
    "balanced_accuracy": 0.94,  # -0.045: more than the gate's max_drop 0.03
    "cv_accuracy_std": 0.015,  # lower is better: improved
    "f1_macro": 0.95,
    "log_loss": 0.12,  # higher: worse
    "n_test": 86,
}
GATE = {  # the flat form: applies to any task
    "min": {"balanced_accuracy": 0.9},
    "max": {"log_loss": 0.35},
    "max_drop": {"balanced_accuracy": 0.03},
}
FAMILY_GATE = {
    "classification": GATE,
    "regression": {"min": {"r2": 0.3}, "max_drop": {"r2": 0.05}},
}
CLASSIFICATION_DATA = {
    "source": "data/external/labels.csv",
    "sha256": None,
    "target": "label",
    "schema": {"label": "category", "colour": "category", "size": "float", "count": "int"},
}
REGRESSION_DATA = {
    "source": "data/external/prices.csv",
    "sha256": None,
    "target": "price",
    "schema": {"price": "float", "area": "float", "district": "category"},
}


def params(data: dict[str, Any] = CLASSIFICATION_DATA, gate: Any = GATE, **data_changes: Any):
    """A fixture params.yaml as a dict: `data` (with `data_changes` applied), train, gate."""
    return {
        "base": {"random_state": 7},
        "data": {**copy.deepcopy(data), **data_changes},
        "train": {"model_type": "random_forest", "n_estimators": 200, "max_depth": 12},
        "gate": copy.deepcopy(gate),
    }


def dvc_lock(data_md5: str, code_md5: str = "c0de" * 8) -> dict[str, Any]:
    """A dvc.lock whose prepare stage reads the data folder (`data_md5`) and one code file."""
    deps = [
        {"path": "data/external", "hash": "md5", "md5": f"{data_md5}.dir", "nfiles": 1},
        {"path": "src/data/make_dataset.py", "hash": "md5", "md5": code_md5},
    ]
    return {"schema": "2.0", "stages": {"prepare": {"cmd": "prepare", "deps": deps}}}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def env_for(repo: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(repo)
    env["GIT_PAGER"] = "cat"
    env.update(extra)
    return env


def write_results(
    repo: Path,
    metrics: dict[str, Any] | None,
    params: dict[str, Any],
    lock: dict[str, Any] | None = None,
    predictions: str | None = None,
    folds: dict[str, Any] | None = None,
) -> None:
    """Write one side's results; `predictions` (CSV text) and `folds` replace or, when
    None, remove that side's predictions and CV folds files."""
    if metrics is not None:
        (repo / "metrics").mkdir(exist_ok=True)
        (repo / "metrics" / "scores.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    for path, text in (
        (PREDICTIONS_PATH, predictions),
        (CV_FOLDS_PATH, None if folds is None else json.dumps(folds)),
    ):
        if text is None:
            (repo / path).unlink(missing_ok=True)
        else:
            (repo / path).parent.mkdir(exist_ok=True)
            (repo / path).write_text(text)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if lock is not None:
        (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))


def write_plot_data(plots: Path) -> None:
    """Classification plot data as the evaluate stage writes it, for classes a and b
    (made here, so the report tests do not depend on the configured dataset)."""
    actual = ["a", "a", "a", "b", "b", "b"]
    predicted = ["a", "a", "b", "b", "b", "a"]
    plots.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{x},{y}\n" for x, y in zip(actual, predicted, strict=True))
    (plots / "confusion_matrix.csv").write_text("actual,predicted\n" + rows)
    (plots / "feature_importance.csv").write_text(
        "feature,importance,std\nsize,0.3,0.05\ncolour,0.1,0.02\n"
    )
    for name, header, points in (
        ("roc", "fpr,tpr", ["0.0,0.0", "0.33,0.67", "1.0,1.0"]),
        ("precision_recall", "recall,precision", ["1.0,0.5", "0.67,0.67", "0.0,1.0"]),
    ):
        for cls in ("a", "b"):
            (plots / name).mkdir(exist_ok=True)
            (plots / name / f"{cls}.csv").write_text("\n".join([header, *points]) + "\n")


def make_repo(
    path: Path,
    base_has_metrics: bool = True,
    *,
    base_params: dict[str, Any] | None = None,
    pr_params: dict[str, Any] | None = None,
    base_metrics: dict[str, Any] = BASE_METRICS,
    pr_metrics: dict[str, Any] = PR_METRICS,
    base_lock: dict[str, Any] | None = None,
    pr_lock: dict[str, Any] | None = None,
    base_predictions: str | None = None,
    pr_predictions: str | None = None,
    base_folds: dict[str, Any] | None = None,
    pr_folds: dict[str, Any] | None = None,
    base_plots: dict[str, pd.DataFrame] | None = None,
    pr_plots: dict[str, pd.DataFrame] | None = None,
) -> Path:
    """main: fixture params and plot data (+ metrics); branch `pr`: a worse model.

    By default the PR changes only `train.*` (same data); pass `pr_params` to change more.
    Without `*_predictions` / `*_folds` a side has no predictions or CV folds file.
    `*_plots` (frames from `plot_frames`) replace a side's plot data; by default both sides
    hold the same small classification data but for one more mistake in the PR's confusion
    matrix.
    """
    path.mkdir(parents=True)
    shutil.copytree(ROOT / "src", path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    if base_plots is None:
        write_plot_data(path / "plots")
    else:
        write_plot_frames(path / "plots", base_plots)
    base_params = params() if base_params is None else base_params
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "user.name", "test")
    subprocess.run([dvc_executable(), "init", "-q"], cwd=path, check=True, env=env_for(path))
    subprocess.run([dvc_executable(), "config", "core.analytics", "false"], cwd=path, check=True)
    (path / "dvc.yaml").write_text(DVC_YAML)
    if base_has_metrics:
        write_results(path, base_metrics, base_params, base_lock, base_predictions, base_folds)
    else:
        write_results(path, None, base_params, base_lock)
        shutil.rmtree(path / "plots")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "main")

    git(path, "checkout", "-q", "-b", "pr")
    if not (path / "plots").exists():
        write_plot_data(path / "plots")
    if pr_params is None:
        pr_params = copy.deepcopy(base_params)
        pr_params["train"]["n_estimators"] = 50
        pr_params["train"]["model_type"] = "gradient_boosting"
    write_results(path, pr_metrics, pr_params, pr_lock, pr_predictions, pr_folds)
    if pr_plots is not None:
        write_plot_frames(path / "plots", pr_plots)
    else:
        confusion = path / "plots" / "confusion_matrix.csv"
        lines = confusion.read_text().splitlines()
        actual, predicted = lines[1].split(",")
        other = next(p.split(",")[1] for p in lines[1:] if p.split(",")[1] != predicted)
        lines[1] = f"{actual},{other}"  # one more mistake in the PR's confusion matrix
        confusion.write_text("\n".join(lines) + "\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "pr: gradient boosting")
    return path


def predicted_side(task: str, flips: int = 0, n_rows: int = 86, seed: int = 0):
    """One side's per-row test predictions (CSV text, as evaluate writes them) and the test
    metrics the task computes on them, for the target of tests/fixture_data.py's `task`
    table. `flips` rows are answered wrong (classification: another class, confidently;
    regression: far off), so two sides differing in `flips` differ on those rows only."""
    from src.noise import predictions_frame
    from src.tasks import get_task
    from tests.fixture_data import CLASSES, TARGETS, make_table

    target = make_table(task, n_rows=n_rows, seed=seed)[TARGETS[task]].to_numpy()
    rows = np.arange(n_rows)
    spread = np.random.default_rng([seed, 1]).uniform(0.0, 0.2, n_rows)
    if task == "regression":
        predicted = target + np.random.default_rng([seed, 2]).normal(0.0, 0.5, n_rows)
        predicted[:flips] += 8.0
        outputs: Any = predicted
        frame = predictions_frame(rows, target, predicted, is_classifier=False)
    else:
        classes = CLASSES[task]
        index = np.searchsorted(classes, target)
        answer = index.copy()
        answer[:flips] = (index[:flips] + 1) % len(classes)
        proba = np.full((n_rows, len(classes)), 0.0)
        proba[rows, answer] = 0.7 + spread
        proba += ((1.0 - proba.sum(axis=1)) / (len(classes) - 1))[:, None] * (proba == 0)
        outputs = pd.DataFrame(proba, columns=classes)
        frame = predictions_frame(rows, target.astype(str), outputs, is_classifier=True)
    task_obj = get_task(task)
    scores: dict[str, Any] = task_obj.test_metrics(frame["target"].to_numpy(), outputs)
    scores["n_test"] = n_rows
    text = frame.to_csv(index=False, float_format="%.10g")
    return text, scores


def plot_frames(task: str, flips: int = 0, n_classes: int | None = None, n_rows: int = 200):
    """One side's plot data as evaluate makes it (the task's `plot_frames` and an importance
    frame), from the target of tests/fixture_data.py's `task` table; `n_classes` bins the
    regression table's target into that many classes (c01, c02, ...) for a many-class task.
    `flips` rows are answered wrong (and importance shifts with them), so sides differ."""
    from src.tasks import get_task
    from tests.fixture_data import TARGETS, make_table

    rng = np.random.default_rng([n_rows, 3])
    if n_classes is None:
        target = make_table(task, n_rows=n_rows)[TARGETS[task]].to_numpy()
    else:
        value = make_table("regression", n_rows=n_rows)["value"]
        bins = pd.qcut(value, n_classes, labels=False)
        target = np.array([f"c{b + 1:02d}" for b in bins])
        task = "multiclass"
    importance = pd.DataFrame(
        {
            "feature": ["size", "leaf area", "colour", "site", "count"],
            "importance": (
                np.array([0.3, 0.2, 0.1, 0.05, 0.0]) + rng.normal(0, 0.002 * flips, 5)
            ).round(6),
            "std": [0.02, 0.015, 0.01, 0.01, 0.005],
        }
    )
    if task == "regression":
        predicted = target + rng.normal(0.0, 0.5, n_rows)
        predicted[:flips] += 4.0
        frames = get_task(task).plot_frames(target, predicted)
    else:
        classes = sorted(set(target.astype(str)))
        index = np.searchsorted(classes, target)
        answer = index.copy()
        answer[:flips] = (index[:flips] + 1) % len(classes)
        proba = rng.uniform(0.0, 0.3, (n_rows, len(classes)))
        proba[np.arange(n_rows), answer] += 0.6
        outputs = pd.DataFrame(proba / proba.sum(axis=1, keepdims=True), columns=classes)
        frames = get_task(task).plot_frames(target.astype(str), outputs)
    return {**frames, "feature_importance": importance}


def write_plot_frames(plots: Path, frames: dict[str, pd.DataFrame]) -> Path:
    """Write plot frames to `plots` with the evaluate stage's own writer (one file per class)."""
    from src.models.evaluate_model import write_plot_data as write_frames

    write_frames(plots, frames)
    return plots
