"""Base-vs-PR figures of the committed plot data (plots/*.csv): both sides on one set of axes.

The PR report (src/report.py) draws one figure per plot: the base dashed/grey, the PR solid/
blue, on shared axes and one colour scale, so a change is visible and no change is not
mistaken for one. `compare_plot` returns no figure when both sides hold the same data, and
the PR's figure alone when the base has none. Figures use matplotlib's object API (no pyplot
state) and are saved without metadata at a fixed size and dpi: same data, same bytes.
Text taken from the data (class and feature names) is drawn without mathtext parsing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from src.utils import atomic_write

PNG_METADATA = {"Software": None}
DPI = 100
BASE_COLOUR, PR_COLOUR = "tab:gray", "tab:blue"
BASE_LINE = {"color": BASE_COLOUR, "linestyle": "--", "linewidth": 1.6, "alpha": 0.9}
PR_LINE = {"color": PR_COLOUR, "linestyle": "-", "linewidth": 1.4}
MAX_PANELS = 30  # curve panels (classes) per figure; beyond, the classes that changed most
PANEL_COLUMNS = 5
MAX_FEATURES = 25  # importance bars per figure; beyond, the most important on either side
ANNOTATE_MAX_CLASSES = 12  # confusion counts written in the cells up to this many classes
LABEL_CHARS = 24

# plot -> (the load_plot_data frame it is drawn from, the columns it needs, numeric ones)
SOURCES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "confusion_matrix": ("confusion_matrix", ("actual", "predicted"), ()),
    "roc": ("roc", ("class", "fpr", "tpr"), ("fpr", "tpr")),
    "precision_recall": (
        "precision_recall",
        ("class", "recall", "precision"),
        ("recall", "precision"),
    ),
    "predicted_vs_actual": ("predictions", ("actual", "predicted"), ("actual", "predicted")),
    "residuals": ("predictions", ("predicted", "residual"), ("predicted", "residual")),
    "feature_importance": ("feature_importance", ("feature", "importance"), ("importance",)),
}
TITLES = {
    "confusion_matrix": "Confusion matrix",
    "roc": "ROC curves",
    "precision_recall": "Precision-recall curves",
    "feature_importance": "Feature importance",
    "predicted_vs_actual": "Predicted vs actual",
    "residuals": "Residuals",
}


@dataclass
class Comparison:
    """One plot of the report: `figure` is None when it is `unchanged`; `note` says why the
    PR's figure is drawn alone (the base has no such data or an unreadable one)."""

    name: str
    figure: Figure | None
    unchanged: bool = False
    note: str | None = None


def plot_names(frames: dict[str, pd.DataFrame]) -> list[str]:
    """The plots the frames (as render.load_plot_data returns them) can draw, in report order."""
    return [name for name, (source, _, _) in SOURCES.items() if source in frames]


def checked(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` if it has what plot `name` needs, else ValueError naming what is wrong."""
    source, columns, numeric = SOURCES[name]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{source} has no column {', '.join(missing)}")
    for column in numeric:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise ValueError(f"{source} column {column} is not numeric")
        if frame[column].isna().any():
            raise ValueError(f"{source} column {column} has empty values")
    if "std" in frame.columns and not pd.api.types.is_numeric_dtype(frame["std"]):
        raise ValueError(f"{source} column std is not numeric")
    return frame


def compare_plot(
    name: str,
    pr: dict[str, pd.DataFrame],
    base: dict[str, pd.DataFrame] | None,
    base_label: str,
    importance_label: str | None = None,
) -> Comparison:
    """Plot `name` of the PR against the base (None: the PR alone, no note)."""
    source = SOURCES[name][0]
    pr_frame = checked(name, pr[source])
    base_frame, note = None, None
    if base is not None:
        if source not in base:
            note = f"`{base_label}` has no {source} plot data"
        else:
            try:
                base_frame = checked(name, base[source])
            except ValueError as exc:  # an older layout of plots/
                note = f"`{base_label}`'s plot data cannot be drawn ({exc})"
        if base_frame is not None and base_frame.reset_index(drop=True).equals(
            pr_frame.reset_index(drop=True)
        ):
            return Comparison(name, None, unchanged=True)
    if name == "confusion_matrix":
        figure = confusion_figure(pr_frame, base_frame, base_label)
    elif name in ("roc", "precision_recall"):
        figure = curves_figure(name, pr_frame, base_frame, base_label)
    elif name == "feature_importance":
        if importance_label is None:
            importance_label = (
                "mean R² drop when shuffled"
                if "predictions" in pr
                else "mean accuracy drop when shuffled"
            )
        figure = importance_figure(pr_frame, base_frame, base_label, importance_label)
    else:
        figure = scatter_figure(name, pr_frame, base_frame, base_label)
    return Comparison(name, figure, note=note)


def save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(
        path, lambda p: figure.savefig(p, format="png", dpi=DPI, metadata=PNG_METADATA)
    )


# --- helpers ---------------------------------------------------------------------------


def _short(text: object) -> str:
    text = str(text)
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _sides(pr: pd.DataFrame, base: pd.DataFrame | None, base_label: str):
    """(label, frame, line style) of each side present, base first (drawn underneath)."""
    sides = [] if base is None else [(f"base {base_label}", base, BASE_LINE)]
    return [*sides, ("PR", pr, PR_LINE)]


def _legend(figure: Figure, base: pd.DataFrame | None, base_label: str, handles=None) -> None:
    """One legend for the whole figure, below the axes (never over the data)."""
    if handles is None:
        handles = [Line2D([], [], label="PR", **PR_LINE)]
        if base is not None:
            handles.insert(0, Line2D([], [], label=f"base {base_label}", **BASE_LINE))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)


# --- the figures -----------------------------------------------------------------------


def confusion_counts(frame: pd.DataFrame, classes: list[str]) -> np.ndarray:
    return (
        pd.crosstab(frame["actual"], frame["predicted"])
        .reindex(index=classes, columns=classes, fill_value=0)
        .to_numpy()
    )


def confusion_figure(pr: pd.DataFrame, base: pd.DataFrame | None, base_label: str) -> Figure:
    """Base, PR (one colour scale) and PR − base (a diverging scale centred on zero)."""
    labels = set(pr["actual"]) | set(pr["predicted"])
    if base is not None:
        labels |= set(base["actual"]) | set(base["predicted"])
    classes = sorted(map(str, labels))
    n = len(classes)
    panels = [("PR", confusion_counts(pr, classes))]
    if base is not None:
        panels.insert(0, (f"base {base_label}", confusion_counts(base, classes)))
    side = max(3.2, 0.28 * n + 1.6)
    count = len(panels) + (base is not None)
    figure = Figure(figsize=(side * count + 0.8, side + 0.5), layout="constrained")
    axes = figure.subplots(1, count, squeeze=False)[0]
    peak = max(int(m.max()) for _, m in panels) or 1
    annotate = n <= ANNOTATE_MAX_CLASSES
    font = 8 if n > 6 else 10

    def draw(ax, matrix, title, **scale):
        image = ax.imshow(matrix, **scale)
        labels = [_short(c) for c in classes]
        ax.set_xticks(
            range(n),
            labels,
            rotation=90 if n > 6 else 30,
            ha="center" if n > 6 else "right",
            fontsize=font,
            parse_math=False,
        )
        ax.set_yticks(range(n), labels, fontsize=font, parse_math=False)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(title, parse_math=False)
        return image

    for ax, (title, matrix) in zip(axes, panels, strict=False):
        image = draw(ax, matrix, title, cmap="Blues", vmin=0, vmax=peak)
        if annotate:
            for (i, j), value in np.ndenumerate(matrix):
                colour = "white" if value > peak / 2 else "black"
                ax.text(j, i, str(value), ha="center", va="center", color=colour, fontsize=font)
    figure.colorbar(image, ax=axes[: len(panels)].tolist(), shrink=0.8, label="test rows")
    if base is not None:
        diff = panels[1][1] - panels[0][1]
        limit = max(int(np.abs(diff).max()), 1)
        image = draw(axes[-1], diff, "PR − base", cmap="RdBu", vmin=-limit, vmax=limit)
        if annotate:
            for (i, j), value in np.ndenumerate(diff):
                if value:
                    colour = "white" if abs(value) > limit / 2 else "black"
                    axes[-1].text(
                        j, i, f"{value:+d}", ha="center", va="center", color=colour, fontsize=font
                    )
        figure.colorbar(image, ax=axes[-1], shrink=0.8, label="change in rows")
    figure.suptitle("Confusion matrix (test set)")
    return figure


def curve_area(name: str, curve: pd.DataFrame) -> float:
    """ROC AUC (trapezoid) or average precision (step sum, as scikit-learn computes it) of
    one class's points in the order evaluate wrote them."""
    if curve.empty:
        return math.nan
    if name == "roc":
        order = curve.sort_values(["fpr", "tpr"], kind="stable")
        return float(np.trapezoid(order["tpr"], order["fpr"]))
    recall, precision = curve["recall"].to_numpy(), curve["precision"].to_numpy()
    return float(abs(np.sum(np.diff(recall) * precision[:-1])))


def curves_figure(
    name: str, pr: pd.DataFrame, base: pd.DataFrame | None, base_label: str
) -> Figure:
    """One panel per class (one-vs-rest), base and PR overlaid on shared 0..1 axes; a binary
    task shows its positive class only (the second in sorted order, as scikit-learn's)."""
    x, y = ("fpr", "tpr") if name == "roc" else ("recall", "precision")
    score = "AUC" if name == "roc" else "AP"
    labels = set(pr["class"].astype(str))
    if base is not None:
        labels |= set(base["class"].astype(str))
    classes = sorted(labels)
    sides = _sides(pr, base, base_label)
    curves = {
        (label, cls): frame[frame["class"].astype(str) == cls]
        for label, frame, _ in sides
        for cls in classes
    }
    areas = {key: curve_area(name, curve) for key, curve in curves.items()}
    shown = classes[1:2] if len(classes) == 2 else classes
    title = TITLES[name] + (", positive class" if len(classes) == 2 else ", one-vs-rest")
    if len(shown) > MAX_PANELS:

        def change(cls: str) -> float:
            values = [areas[(label, cls)] for label, _, _ in sides]
            spread = max(values) - min(values)
            return -1.0 if math.isnan(spread) else spread

        shown = sorted(sorted(shown, key=change, reverse=True)[:MAX_PANELS])
        title += f" ({MAX_PANELS} of {len(classes)} classes: the largest changes in {score})"
    columns = min(len(shown), PANEL_COLUMNS)
    rows = math.ceil(len(shown) / columns)
    size = 3.6 if len(shown) == 1 else 2.2
    figure = Figure(figsize=(max(4.6, size * columns), size * rows + 0.9), layout="constrained")
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, cls in zip(axes, shown, strict=False):
        for label, _, style in sides:
            curve = curves[(label, cls)]
            drawstyle = "default" if name == "roc" else "steps-post"
            ax.plot(curve[x], curve[y], label=label, drawstyle=drawstyle, **style)
        if name == "roc":
            ax.plot([0, 1], [0, 1], color="lightgrey", linestyle=":", linewidth=1)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        values = " → ".join(f"{areas[(label, cls)]:.3f}" for label, _, _ in sides)
        ax.set_title(f"{_short(cls)}\n{score} {values}", fontsize=9, parse_math=False)
        ax.tick_params(labelsize=8)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    for i, ax in enumerate(axes[: len(shown)]):
        if i + columns >= len(shown):  # the lowest panel of its column
            ax.set_xlabel(x)
            ax.xaxis.set_tick_params(labelbottom=True)
        if i % columns == 0:
            ax.set_ylabel(y)
    figure.suptitle(title)
    _legend(figure, base, base_label)
    return figure


def importance_figure(
    pr: pd.DataFrame, base: pd.DataFrame | None, base_label: str, label: str
) -> Figure:
    """Paired horizontal bars on one axis, one feature order (the PR's importance, highest
    first; features only the base has come last)."""

    def values(frame: pd.DataFrame | None, column: str) -> dict[str, float]:
        if frame is None or column not in frame.columns:
            return {}
        return dict(zip(frame["feature"].astype(str), frame[column].astype(float), strict=True))

    pr_value, base_value = values(pr, "importance"), values(base, "importance")
    pr_std, base_std = values(pr, "std"), values(base, "std")
    features = sorted(set(pr_value) | set(base_value))
    title = "Permutation feature importance"
    if len(features) > MAX_FEATURES:
        top = sorted(
            features, key=lambda f: -max(pr_value.get(f, -np.inf), base_value.get(f, -np.inf))
        )
        title += f" (top {MAX_FEATURES} of {len(features)})"
        features = sorted(top[:MAX_FEATURES])
    order = sorted(features, key=lambda f: (f not in pr_value, -pr_value.get(f, 0.0), f))
    n = len(order)
    paired = base is not None
    figure = Figure(figsize=(6.4, (0.42 if paired else 0.3) * n + 1.6), layout="constrained")
    ax = figure.subplots()
    rows = np.arange(n)[::-1]  # the first feature on top
    height = 0.4 if paired else 0.7
    bars = [("PR", pr_value, pr_std, PR_COLOUR, -height / 2 if paired else 0.0)]
    if paired:
        bars.insert(0, (f"base {base_label}", base_value, base_std, BASE_COLOUR, height / 2))
    for side, value, std, colour, offset in bars:
        ax.barh(
            rows + offset,
            [value.get(f, np.nan) for f in order],
            height=height,
            xerr=[std.get(f, 0.0) for f in order],
            color=colour,
            alpha=0.6 if colour == BASE_COLOUR else 1.0,
            error_kw={"elinewidth": 0.8, "ecolor": "black"},
            label=side,
        )
    ax.set_yticks(rows, [_short(f) for f in order], parse_math=False)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel(label)
    figure.suptitle(title)
    handles = [
        Patch(color=colour, alpha=0.6 if colour == BASE_COLOUR else 1.0, label=side)
        for side, _, _, colour, _ in bars
    ]
    _legend(figure, base, base_label, handles)
    return figure


def scatter_figure(
    name: str, pr: pd.DataFrame, base: pd.DataFrame | None, base_label: str
) -> Figure:
    """Predicted vs actual or residuals of both sides as two point clouds on one set of axes."""
    x, y = ("actual", "predicted") if name == "predicted_vs_actual" else ("predicted", "residual")
    figure = Figure(figsize=(5.2, 4.8), layout="constrained")
    ax = figure.subplots()
    sides = _sides(pr, base, base_label)
    handles = []
    for label, frame, _ in sides:
        if label == "PR":
            style = {"color": PR_COLOUR, "alpha": 0.6, "s": 10, "linewidths": 0}
        else:
            style = {"facecolors": "none", "edgecolors": BASE_COLOUR, "s": 16, "linewidths": 0.8}
        handles.append(ax.scatter(frame[x], frame[y], label=label, **style))
    xs = pd.concat([frame[x] for _, frame, _ in sides]).astype(float)
    ys = pd.concat([frame[y] for _, frame, _ in sides]).astype(float)
    if name == "predicted_vs_actual":
        low, high = float(min(xs.min(), ys.min())), float(max(xs.max(), ys.max()))
        pad = (high - low) * 0.03 or 1.0
        ax.plot([low, high], [low, high], color="lightgrey", linestyle=":", linewidth=1)
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
        title = "Predicted vs actual (test set)"
    else:
        pad = (float(xs.max()) - float(xs.min())) * 0.03 or 1.0
        reach = float(ys.abs().max()) * 1.05 or 1.0
        ax.axhline(0, color="lightgrey", linestyle=":", linewidth=1)
        ax.set_xlim(float(xs.min()) - pad, float(xs.max()) + pad)
        ax.set_ylim(-reach, reach)
        y = "residual (actual − predicted)"
        title = "Residuals (test set)"
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    figure.suptitle(title)
    _legend(figure, base, base_label, handles)
    return figure
