"""Base-vs-PR figures (src/visualization/compare.py) from fixture plot data: the figure objects
are checked (axes, limits, colour scales, bar order), not pixels."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.container import BarContainer

from src.visualization.compare import MAX_PANELS, compare_plot, plot_names, save
from src.visualization.render import load_plot_data
from tests.unit.experiment_repo import plot_frames, write_plot_frames

pytestmark = pytest.mark.mechanics  # never reads the configured dataset (pyproject.toml)

CASES = {
    "binary": {"task": "binary"},
    "multiclass": {"task": "multiclass"},
    "multiclass-20": {"task": "multiclass", "n_classes": 20},
    "regression": {"task": "regression"},
}


def sides(tmp_path, case: str, base_flips: int = 2, pr_flips: int = 25, **extra):
    """(base, PR) plot data as the report reads it back from evaluate's files."""
    kwargs = {**CASES[case], **extra}
    base = write_plot_frames(tmp_path / "base", plot_frames(flips=base_flips, **kwargs))
    pr = write_plot_frames(tmp_path / "pr", plot_frames(flips=pr_flips, **kwargs))
    return load_plot_data(base), load_plot_data(pr)


def panels(figure):
    return [ax for ax in figure.axes if ax.get_visible() and ax.get_lines()]


@pytest.mark.parametrize("case", ["binary", "multiclass", "multiclass-20"])
def test_curves_of_both_sides_share_each_panels_axes(tmp_path, case):
    base, pr = sides(tmp_path, case)
    classes = sorted(pr["roc"]["class"].unique())
    for name in ("roc", "precision_recall"):
        figure = compare_plot(name, pr, base, "main").figure
        shown = panels(figure)
        # one panel per class; a binary task shows its positive class only
        expected = classes[1:] if case == "binary" else classes
        assert [ax.get_title().splitlines()[0] for ax in shown] == expected
        for ax in shown:
            assert ax.get_xlim() == ax.get_ylim() == (-0.02, 1.02)
            labels = [line.get_label() for line in ax.get_lines()]
            assert labels[:2] == ["base main", "PR"]
            styles = [line.get_linestyle() for line in ax.get_lines()[:2]]
            assert styles == ["--", "-"]
        # the legend is the figure's, outside every panel
        assert figure.legends and not any(ax.get_legend() for ax in figure.axes)


def test_a_panel_title_gives_both_sides_areas(tmp_path):
    base, pr = sides(tmp_path, "binary", base_flips=0, pr_flips=40)
    (panel,) = panels(compare_plot("roc", pr, base, "main").figure)
    name, scores = panel.get_title().splitlines()
    assert name == "yes" and scores.startswith("AUC ")
    before, after = (float(v) for v in scores.removeprefix("AUC ").split(" → "))
    assert 0.5 < after < before <= 1.0  # 40 wrong answers lower the PR's AUC


def test_beyond_max_panels_the_classes_that_changed_most_are_shown(tmp_path):
    base, pr = sides(tmp_path, "multiclass-20", n_classes=MAX_PANELS + 5, n_rows=400)
    figure = compare_plot("roc", pr, base, "main").figure
    assert len(panels(figure)) == MAX_PANELS
    assert f"({MAX_PANELS} of {MAX_PANELS + 5} classes" in figure.get_suptitle()


@pytest.mark.parametrize("case", ["binary", "multiclass-20"])
def test_confusion_matrices_share_one_colour_scale_and_show_the_difference(tmp_path, case):
    base, pr = sides(tmp_path, case)
    figure = compare_plot("confusion_matrix", pr, base, "main").figure
    by_title = {ax.get_title(): ax for ax in figure.axes if ax.images}
    assert list(by_title) == ["base main", "PR", "PR − base"]
    base_image, pr_image, diff_image = (by_title[t].images[0] for t in by_title)
    peak = max(base_image.get_array().max(), pr_image.get_array().max())
    assert base_image.norm.vmin == pr_image.norm.vmin == 0
    assert base_image.norm.vmax == pr_image.norm.vmax == peak
    diff = pr_image.get_array() - base_image.get_array()
    assert np.array_equal(diff_image.get_array(), diff)
    assert diff_image.norm.vmin == -diff_image.norm.vmax == -max(np.abs(diff).max(), 1)
    n = 2 if case == "binary" else 20
    assert base_image.get_array().shape == (n, n)
    assert base_image.get_array().sum() == pr_image.get_array().sum() == 200


@pytest.mark.parametrize("case", ["binary", "regression"])
def test_feature_importance_pairs_bars_in_one_feature_order(tmp_path, case):
    base, pr = sides(tmp_path, case)
    figure = compare_plot("feature_importance", pr, base, "main").figure
    (ax,) = figure.axes
    base_bars, pr_bars = (c for c in ax.containers if isinstance(c, BarContainer))
    assert [bar.get_label() for bar in (base_bars, pr_bars)] == ["base main", "PR"]
    ticks = sorted(zip(ax.get_yticks(), ax.get_yticklabels(), strict=True), key=lambda t: -t[0])
    order = [label.get_text() for _, label in ticks]  # top to bottom
    expected = pr["feature_importance"].sort_values("importance", ascending=False)
    assert order == expected["feature"].tolist()
    for container, frame in ((base_bars, base), (pr_bars, pr)):
        importance = frame["feature_importance"]
        values = dict(zip(importance["feature"], importance["importance"], strict=True))
        # bar i of each side is feature i of the one order, on the one x axis
        ordered = sorted(container.patches, key=lambda p: -p.get_y())
        assert [p.get_width() for p in ordered] == pytest.approx([values[f] for f in order])
    label = "mean R² drop when shuffled" if case == "regression" else "mean accuracy drop"
    assert ax.get_xlabel().startswith(label)


@pytest.mark.parametrize("name", ["predicted_vs_actual", "residuals"])
def test_regression_plots_overlay_both_sides_within_one_set_of_limits(tmp_path, name):
    base, pr = sides(tmp_path, "regression")
    assert plot_names(pr) == ["predicted_vs_actual", "residuals", "feature_importance"]
    figure = compare_plot(name, pr, base, "main").figure
    (ax,) = figure.axes
    base_points, pr_points = (c.get_offsets() for c in ax.collections[:2])
    assert [c.get_label() for c in ax.collections[:2]] == ["base main", "PR"]
    assert len(base_points) == len(pr_points) == 200
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for points in (base_points, pr_points):
        assert (points[:, 0] >= x0).all() and (points[:, 0] <= x1).all()
        assert (points[:, 1] >= y0).all() and (points[:, 1] <= y1).all()
    if name == "predicted_vs_actual":
        assert (x0, x1) == (y0, y1)  # one scale for actual and predicted
    else:
        assert y0 == -y1  # residuals centred on zero


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_data_on_both_sides_draws_no_figure(tmp_path, case):
    base, pr = sides(tmp_path, case, base_flips=3, pr_flips=3)
    for name in plot_names(pr):
        result = compare_plot(name, pr, base, "main")
        assert result.unchanged and result.figure is None, name


def test_a_base_without_the_data_or_in_an_older_layout_gives_the_pr_alone(tmp_path):
    base, pr = sides(tmp_path, "multiclass")
    del base["roc"]
    base["precision_recall"] = base["precision_recall"].rename(columns={"recall": "x"})
    base["feature_importance"].loc[0, "importance"] = float("nan")
    for name, note in (
        ("roc", "`main` has no roc plot data"),
        ("precision_recall", "`main`'s plot data cannot be drawn (precision_recall has no column"),
        ("feature_importance", "`main`'s plot data cannot be drawn (feature_importance column "),
    ):
        result = compare_plot(name, pr, base, "main")
        assert result.note.startswith(note)
        if name == "feature_importance":
            labels = {c.get_label() for c in result.figure.axes[0].containers}
        else:
            labels = {line.get_label() for ax in panels(result.figure) for line in ax.get_lines()}
        assert "PR" in labels and "base main" not in labels
    alone = compare_plot("confusion_matrix", pr, None, "main")
    assert alone.note is None
    assert [ax.get_title() for ax in alone.figure.axes if ax.images] == ["PR"]


def test_figures_save_to_the_same_bytes_without_metadata(tmp_path):
    base, pr = sides(tmp_path, "multiclass")
    # a class name is text from a CSV: drawn as is, never parsed as mathtext
    for frames in (base, pr):
        frames["confusion_matrix"] = frames["confusion_matrix"].replace("alpha", "$\\frac{x")
    first = save(compare_plot("confusion_matrix", pr, base, "main").figure, tmp_path / "a.png")
    second = save(compare_plot("confusion_matrix", pr, base, "main").figure, tmp_path / "b.png")
    data = first.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data == second.read_bytes()
    assert b"tIME" not in data and b"Software" not in data and b"matplotlib" not in data
