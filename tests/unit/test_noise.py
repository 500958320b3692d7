"""Noise-aware comparison (src/noise.py): the paired bootstrap over the same test rows, the
CV-fold intervals, and the resampled metrics against the tasks' scikit-learn metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from src.noise import (
    BETTER,
    NOISE,
    WORSE,
    Interval,
    cv_comparison,
    holdout_comparison,
    marker,
    paired_fold_interval,
    read_folds,
    read_predictions,
    resample_weights,
    resampled_metrics,
    unpaired_fold_interval,
)
from src.tasks import get_task
from src.utils import PipelineError
from tests.fixture_data import CLASSES, TARGETS, TASKS, make_table
from tests.unit.experiment_repo import predicted_side

pytestmark = pytest.mark.mechanics  # never reads the configured dataset (pyproject.toml)

# The headline metric of each task and its direction (+1 higher is better).
HEADLINE = {"binary": "accuracy", "multiclass": "accuracy", "regression": "rmse"}


def compare_sides(task, base_flips, pr_flips, n_rows=86, **kwargs):
    base_text, base_scores = predicted_side(task, base_flips, n_rows)
    pr_text, pr_scores = predicted_side(task, pr_flips, n_rows)
    return holdout_comparison(base_text, pr_text, base_scores, pr_scores, "`main`", **kwargs)


@pytest.mark.parametrize("task", TASKS)
def test_a_pr_identical_to_the_base_is_within_noise(task):
    result = compare_sides(task, 3, 3)
    metrics = set(predicted_side(task)[1]) - {"n_test"}
    assert set(result.intervals) == metrics
    for name, interval in result.intervals.items():
        assert interval.low <= 0 <= interval.high, name
        assert marker(name, interval) == NOISE
    assert result.notes[0].startswith("Test-set intervals: paired bootstrap of the difference")
    assert "1000 resamples of the same 86 test rows, seed 0, 95%" in result.notes[0]


@pytest.mark.parametrize("task", TASKS)
def test_a_pr_that_gets_many_rows_wrong_is_worse(task):
    result = compare_sides(task, 2, 30)
    name = HEADLINE[task]
    interval = result.intervals[name]
    assert not interval.low <= 0 <= interval.high
    assert marker(name, interval) == WORSE
    # and the other way round it is better
    better = compare_sides(task, 30, 2).intervals[name]
    assert marker(name, better) == BETTER


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_one_row_of_86_is_within_noise(task):
    """The demo's case: one penguin (-0.0116 accuracy) is not a worse model."""
    _, base = predicted_side(task, 2)
    _, pr = predicted_side(task, 3)
    assert pr["accuracy"] - base["accuracy"] == pytest.approx(-1 / 86, abs=1e-6)
    result = compare_sides(task, 2, 3)
    interval = result.intervals["accuracy"]
    assert interval.low < -1 / 86 and interval.high >= 0
    assert marker("accuracy", interval) == NOISE


def test_same_seed_same_intervals_and_the_seed_matters():
    first = compare_sides("multiclass", 2, 9).intervals
    assert first == compare_sides("multiclass", 2, 9).intervals
    assert first != compare_sides("multiclass", 2, 9, seed=1).intervals


def test_different_rows_or_a_stale_file_fall_back_to_plain_deltas():
    base_text, base_scores = predicted_side("binary", 2)
    pr_text, pr_scores = predicted_side("binary", 5, n_rows=90)
    result = holdout_comparison(base_text, pr_text, base_scores, pr_scores, "`main`")
    assert result.intervals == {}
    assert result.notes == [
        "No paired comparison: the two sides scored different test rows (another split?); "
        "test-set changes are plain deltas, without a verdict."
    ]
    pr_text, pr_scores = predicted_side("binary", 5)
    stale = {**pr_scores, "accuracy": pr_scores["accuracy"] + 0.01}
    result = holdout_comparison(base_text, pr_text, base_scores, stale, "`main`")
    assert result.intervals == {}
    assert (
        "this PR's `metrics/test_predictions.csv` does not match its scores: its accuracy"
        in (result.notes[0])
    )


def test_a_base_without_predictions_says_so_in_one_line():
    pr_text, pr_scores = predicted_side("binary", 2)
    result = holdout_comparison(None, pr_text, pr_scores, pr_scores, "`main`")
    assert result.intervals == {}
    assert result.notes == [
        "`main` has no `metrics/test_predictions.csv` (older pipeline): test-set changes are "
        "plain deltas, without a verdict."
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is not a CSV table"),
        ("a,b\n1,2\n", "does not start with columns row,target"),
        ("row,target,proba_a,proba_b\n0,a,x,0.5\n", "not a number"),
        ("row,target,proba_a,proba_b\n0,a,0.5,0.5\n0,b,0.5,0.5\n", "lists a test row twice"),
        ("row,target,proba_a,proba_b\n0,c,0.5,0.5\n", "a target label is not one of"),
        ("row,target,proba_a,proba_b\n0,a,1.5,-0.5\n", "outside [0, 1]"),
        ("row,target,proba_a,proba_b\n0,a,inf,0.5\n", "non-finite"),
        ("row,target,score\n0,a,0.5\n", "outputs must be `predicted`"),
    ],
)
def test_a_malformed_predictions_file_is_named_not_trusted(text, problem):
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        read_predictions(text, "this PR's file")
    _, scores = predicted_side("binary")
    base_text, _ = predicted_side("binary")
    result = holdout_comparison(base_text, text, scores, scores, "`main`")
    assert result.intervals == {} and "plain deltas, without a verdict" in result.notes[0]


def weights_for(draws: np.ndarray) -> np.ndarray:
    n_rows = draws.shape[1]
    return np.stack([np.bincount(d, minlength=n_rows) for d in draws]).astype(np.float64)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("n_rows", [12, 86])
def test_resampled_metrics_are_the_tasks_metrics_on_each_resample(task, n_rows):
    """Vectorised metrics == the task's scikit-learn metrics on the drawn rows (12 rows:
    resamples that miss a class, where scikit-learn raises, give NaN)."""
    text, _ = predicted_side(task, 3, n_rows)
    pred = read_predictions(text, "fixture")
    draws = np.random.default_rng(5).integers(0, n_rows, size=(60, n_rows))
    vectorised = resampled_metrics(pred, weights_for(draws))
    checked = 0
    for b, rows in enumerate(draws):
        outputs = (
            pred.outputs.iloc[rows].reset_index(drop=True)
            if pred.task.is_classifier
            else pred.outputs[rows]
        )
        try:
            expected = pred.task.test_metrics(pred.target[rows], outputs)
        except ValueError:  # ROC AUC with a class not drawn
            expected = None
        for name, values in vectorised.items():
            if expected is None and name.startswith(("roc_auc", "average_precision")):
                assert np.isnan(values[b]), name
            elif expected is not None:
                assert values[b] == pytest.approx(expected[name], abs=6e-7, nan_ok=True), name
                checked += 1
    assert checked > 100


def test_resampled_ranking_metrics_with_tied_scores():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from src.tasks import resampled

    rng = np.random.default_rng(3)
    score = rng.choice([0.1, 0.4, 0.4, 0.7, 0.9], size=40)
    positive = rng.random(40) < score
    draws = rng.integers(0, 40, size=(30, 40))
    weights = weights_for(draws)
    auc = resampled.roc_auc(score, positive, weights)
    ap = resampled.average_precision(score, positive, weights)
    for b, rows in enumerate(draws):
        assert auc[b] == pytest.approx(roc_auc_score(positive[rows], score[rows]), abs=1e-12)
        assert ap[b] == pytest.approx(
            average_precision_score(positive[rows], score[rows]), abs=1e-12
        )


def test_resample_weights_draw_every_row_count_once_per_row():
    weights = resample_weights(86, 500, np.random.default_rng(0))
    assert weights.shape == (500, 86) and (weights.sum(axis=1) == 86).all()
    assert abs(weights.mean() - 1.0) < 1e-12 and 0.3 < (weights == 0).mean() < 0.43


# --- cross-validation ------------------------------------------------------------------


def folds(fingerprint, **scores):
    return {"fingerprint": fingerprint, "scores": scores}


def cv_scores(values):
    return {"cv_accuracy_mean": float(np.mean(values)), "cv_accuracy_std": float(np.std(values))}


def test_same_folds_are_paired_and_a_consistent_drop_is_worse():
    base = [0.96, 0.98, 1.0, 0.97, 0.99]
    pr = [v - 0.02 + d for v, d in zip(base, [0.0, 0.002, -0.002, 0.001, -0.001], strict=True)]
    result = cv_comparison(
        folds("f1", accuracy=base),
        folds("f1", accuracy=pr),
        cv_scores(base),
        cv_scores(pr),
        None,
        None,
    )
    interval = result.intervals["cv_accuracy_mean"]
    assert interval.method == "paired CV folds" and interval.high < 0
    assert marker("cv_accuracy_mean", interval) == WORSE
    assert "paired over the same folds of the same training rows" in result.notes[0]
    # the same drop across different folds is within the folds' spread
    unpaired = cv_comparison(
        folds("f1", accuracy=base),
        folds("f2", accuracy=pr),
        cv_scores(base),
        cv_scores(pr),
        None,
        None,
    )
    interval = unpaired.intervals["cv_accuracy_mean"]
    assert interval.method == "unpaired CV folds" and interval.low < 0 < interval.high
    assert marker("cv_accuracy_mean", interval) == NOISE


def test_without_fold_files_the_interval_comes_from_the_fold_std_and_params():
    """The demo's CV std (0.015) makes a 0.005 change noise."""
    base = {"cv_accuracy_mean": 0.988, "cv_accuracy_std": 0.015, "cv_accuracy_std_x": 1}
    pr = {"cv_accuracy_mean": 0.983, "cv_accuracy_std": 0.017}
    params = {"train": {"cv_folds": 5}}
    result = cv_comparison(None, None, base, pr, params, params)
    interval = result.intervals["cv_accuracy_mean"]
    assert interval == unpaired_fold_interval(0.988, 0.015, 5, 0.983, 0.017, 5)
    assert marker("cv_accuracy_mean", interval) == NOISE
    assert "cv_accuracy_std" not in result.intervals  # a spread gets no interval
    assert cv_comparison(None, None, base, pr, None, None).intervals == {}  # k unknown


def test_identical_folds_give_a_zero_interval():
    values = [0.9, 0.95, 1.0]
    assert paired_fold_interval(values, values) == Interval(0.0, 0.0, "paired CV folds")


def test_a_malformed_folds_file_is_not_used():
    assert read_folds(None) is None and read_folds("not json") is None
    assert read_folds(json.dumps([1, 2])) is None
    data = read_folds(json.dumps({"fingerprint": "x", "scores": {"a": [1, "x"], "b": [0.5]}}))
    assert data == {"fingerprint": "x", "scores": {"b": [0.5]}}


def test_markers_need_a_direction_and_an_interval():
    worse = Interval(-0.2, -0.1, "paired bootstrap")
    assert marker("accuracy", worse) == WORSE
    assert marker("log_loss", worse) == BETTER  # lower is better
    assert marker("train_accuracy", worse) == ""  # no direction: a lower train score is fine
    assert marker("n_test", worse) == "" and marker("accuracy", None) == ""


# --- what evaluate writes --------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_evaluate_writes_predictions_that_reproduce_its_scores(task, tmp_path):
    from src.data.make_dataset import clean_and_split
    from src.models.evaluate_model import evaluate
    from src.noise import agreement
    from tests.conftest import train_bundle
    from tests.fixture_data import make_params

    params = make_params(task)
    params["train"]["n_estimators"] = 20
    _, train_df, test_df = clean_and_split(make_table(task), params)
    bundle = train_bundle(params, train_df)
    out = tmp_path / "test_predictions.csv"
    scores = evaluate(bundle, test_df, params, tmp_path / "plots", predictions_file=out)
    pred = read_predictions(out.read_text(), "evaluate's file")
    assert len(pred.rows) == scores["n_test"] == len(test_df)
    assert agreement(pred, scores) is None
    if task != "regression":
        assert pred.classes == CLASSES[task]
    assert list(pd.read_csv(out).columns[:2]) == ["row", "target"]
    assert set(bundle["metadata"]["cv_folds"]["scores"]) == set(get_task(task).cv_scoring)
    # a bound on the rows: a seeded sample, the same one every time
    params["evaluate"]["predictions_max_rows"] = 10
    evaluate(bundle, test_df, params, tmp_path / "plots", predictions_file=out)
    first = read_predictions(out.read_text(), "sampled")
    evaluate(bundle, test_df, params, tmp_path / "plots", predictions_file=out)
    assert len(first.rows) == 10 and np.array_equal(
        first.rows, read_predictions(out.read_text(), "sampled").rows
    )
    assert TARGETS[task] in test_df.columns
    params["evaluate"]["predictions_max_rows"] = 0
    with pytest.raises(PipelineError, match="evaluate.predictions_max_rows must be a whole"):
        evaluate(bundle, test_df, params, tmp_path / "plots", predictions_file=out)
