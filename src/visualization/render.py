"""Render the committed plot data (plots/*.csv) as PNG images with matplotlib.

Rendering works from the CSVs alone, so the PR report can draw the plots of any git
revision from its committed data. Images carry no timestamps: same data, same bytes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from src.utils import atomic_write

PNG_METADATA = {"Software": None}
DPI = 100


def _save(fig: plt.Figure, path: Path) -> None:
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=DPI, metadata=PNG_METADATA))
    plt.close(fig)


def confusion_matrix_png(confusion: pd.DataFrame, classes: list[str], path: Path) -> None:
    matrix = pd.crosstab(confusion["actual"], confusion["predicted"]).reindex(
        index=classes, columns=classes, fill_value=0
    )
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    peak = matrix.to_numpy().max() or 1
    for (i, j), value in np.ndenumerate(matrix.to_numpy()):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            color="white" if value > peak / 2 else "black",
        )
    ax.set_title("Confusion matrix (test set)")
    fig.tight_layout()
    _save(fig, path)


def curves_png(frame: pd.DataFrame, x: str, y: str, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for cls, group in frame.groupby("class", sort=True):
        ax.plot(group[x], group[y], label=str(cls), drawstyle="steps-post")
    if x == "fpr":
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right" if x == "fpr" else "lower left")
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)


def importance_png(
    importance: pd.DataFrame, path: Path, label: str = "mean score drop when shuffled"
) -> None:
    data = importance.sort_values("importance")
    fig, ax = plt.subplots(figsize=(5, 0.4 * len(data) + 1.2))
    ax.barh(data["feature"].astype(str), data["importance"], xerr=data["std"], color="tab:blue")
    ax.set_xlabel(label)
    ax.set_title("Permutation feature importance")
    fig.tight_layout()
    _save(fig, path)


def predicted_vs_actual_png(predictions: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    actual, predicted = predictions["actual"], predictions["predicted"]
    ax.scatter(actual, predicted, s=12, alpha=0.7, color="tab:blue")
    low = float(min(actual.min(), predicted.min()))
    high = float(max(actual.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title("Predicted vs actual (test set)")
    fig.tight_layout()
    _save(fig, path)


def residuals_png(predictions: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(predictions["predicted"], predictions["residual"], s=12, alpha=0.7)
    ax.axhline(0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("residual (actual - predicted)")
    ax.set_title("Residuals (test set)")
    fig.tight_layout()
    _save(fig, path)


def load_plot_data(plots_dir: Path) -> dict[str, pd.DataFrame]:
    """Read the plot data the evaluate stage wrote (any revision's committed plots/ folder).

    Returns whichever plots the task wrote: `confusion_matrix`, `roc`, `precision_recall`
    (classification; curves as one long frame with a `class` column, from the per-class
    files), `predictions` (regression), `feature_importance` (both).
    """
    frames: dict[str, pd.DataFrame] = {}
    for name in ("confusion_matrix", "feature_importance", "predictions"):
        path = plots_dir / f"{name}.csv"
        if path.is_file():
            frames[name] = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if "confusion_matrix" in frames:
        frames["confusion_matrix"] = frames["confusion_matrix"].astype(str)
    for name in ("roc", "precision_recall"):
        parts = [
            pd.read_csv(path).assign(**{"class": path.stem})
            for path in sorted((plots_dir / name).glob("*.csv"))
        ]
        if parts:
            frames[name] = pd.concat(parts, ignore_index=True)
    return frames


def render_all(
    frames: dict[str, pd.DataFrame],
    classes: list[str],
    out_dir: Path,
    importance_label: str | None = None,
) -> list[Path]:
    """Render every plot present in `frames` (as load_plot_data returns them); return the
    PNG paths. `classes` orders the confusion matrix (empty for regression)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []

    def target(name: str) -> Path:
        paths.append(out_dir / f"{name}.png")
        return paths[-1]

    if "confusion_matrix" in frames:
        confusion = frames["confusion_matrix"]
        order = classes or sorted(set(confusion["actual"]) | set(confusion["predicted"]))
        confusion_matrix_png(confusion, order, target("confusion_matrix"))
    if "roc" in frames:
        curves_png(frames["roc"], "fpr", "tpr", "ROC, one-vs-rest", target("roc"))
    if "precision_recall" in frames:
        curves_png(
            frames["precision_recall"],
            "recall",
            "precision",
            "Precision-recall",
            target("precision_recall"),
        )
    if "predictions" in frames:
        predicted_vs_actual_png(frames["predictions"], target("predicted_vs_actual"))
        residuals_png(frames["predictions"], target("residuals"))
    if "feature_importance" in frames:
        if importance_label is None:
            importance_label = (
                "mean R² drop when shuffled"
                if "predictions" in frames
                else "mean accuracy drop when shuffled"
            )
        importance_png(frames["feature_importance"], target("feature_importance"), importance_label)
    return paths
