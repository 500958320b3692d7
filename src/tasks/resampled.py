"""The tasks' test-set metrics on many bootstrap resamples of the same rows at once.

A resample is a row of `weights` (shape resamples x rows): how many times each test row was
drawn. Each function returns one value per resample, equal to what the task's scikit-learn
metric (src/tasks/classification.py, regression.py) gives on the resampled rows, or NaN
where that metric is undefined on the resample (e.g. ROC AUC with one class drawn).
tests/unit/test_resampled.py checks them against scikit-learn resample by resample.

Hand-written because scikit-learn scores one sample per call: 1000 paired resamples of 86
rows take 15-20 s through the tasks' scikit-learn metrics, 0.02 s here; of 10,000 rows,
250-540 s against 2-7 s (`make bench-report`, 2 shared cores).
"""

from __future__ import annotations

import numpy as np


def _ranked_cumsums(
    score: np.ndarray, positive: np.ndarray, weights: np.ndarray, descending: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative positive and negative weight at the end of each group of tied scores."""
    order = np.argsort(-score if descending else score, kind="mergesort")
    ranked = score[order]
    ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    drawn = weights[:, order]
    pos = positive[order]
    return np.cumsum(drawn * pos, axis=1)[:, ends], np.cumsum(drawn * ~pos, axis=1)[:, ends]


def roc_auc(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Binary ROC AUC (ties count one half, as the trapezoidal ROC curve does)."""
    cum_pos, cum_neg = _ranked_cumsums(score, positive, weights, descending=False)
    group_pos = np.diff(cum_pos, axis=1, prepend=0.0)
    group_neg = np.diff(cum_neg, axis=1, prepend=0.0)
    below = cum_neg - group_neg
    n_pos, n_neg = cum_pos[:, -1], cum_neg[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (group_pos * (below + 0.5 * group_neg)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def average_precision(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision: precision at each threshold weighted by the recall it adds."""
    tps, fps = _ranked_cumsums(score, positive, weights, descending=True)
    n_pos = tps[:, -1]
    drawn = tps + fps
    precision = np.divide(tps, drawn, out=np.zeros_like(tps), where=drawn > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tps / n_pos[:, None]
    ap = (np.diff(recall, axis=1, prepend=0.0) * precision).sum(axis=1)
    return np.where(n_pos > 0, ap, np.nan)


def classification(
    y: np.ndarray, proba: np.ndarray, weights: np.ndarray, binary: bool
) -> dict[str, np.ndarray]:
    """ClassificationTask.test_metrics per resample. `y`: class index per row (columns of
    `proba`, in the model's class order); the positive class of a binary task is column 1."""
    n_rows, n_classes = proba.shape
    predicted = proba.argmax(axis=1)
    is_true = np.eye(n_classes, dtype=bool)[y]
    is_pred = np.eye(n_classes, dtype=bool)[predicted]
    drawn = weights.sum(axis=1)
    true_w, pred_w = weights @ is_true, weights @ is_pred
    hits = weights @ (is_true & is_pred)
    scores: dict[str, np.ndarray] = {"accuracy": hits.sum(axis=1) / drawn}
    # scikit-learn scores the labels present among the drawn rows' true or predicted labels
    present = (true_w + pred_w) > 0
    recall = np.divide(hits, true_w, out=np.full_like(hits, np.nan), where=true_w > 0)
    with np.errstate(invalid="ignore"):
        scores["balanced_accuracy"] = np.nanmean(recall, axis=1)
    f1 = np.divide(2 * hits, true_w + pred_w, out=np.zeros_like(hits), where=present)
    scores["f1_macro"] = f1.sum(axis=1) / present.sum(axis=1)
    eps = np.finfo(proba.dtype).eps
    true_proba = np.clip(proba[np.arange(n_rows), y], eps, 1 - eps)  # as scikit-learn 1.9 clips
    scores["log_loss"] = weights @ -np.log(true_proba) / drawn
    if binary:
        scores["roc_auc"] = roc_auc(proba[:, 1], y == 1, weights)
        scores["average_precision"] = average_precision(proba[:, 1], y == 1, weights)
    else:  # one-vs-rest, macro: undefined when a class is not drawn
        per_class = [roc_auc(proba[:, c], y == c, weights) for c in range(n_classes)]
        scores["roc_auc_ovr"] = np.mean(per_class, axis=0)
    return scores


def regression(y: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """RegressionTask.test_metrics per resample."""
    drawn = weights.sum(axis=1)
    residual = y - predicted
    ss_res = weights @ residual**2
    centred = y - y.mean()  # keeps the sums of squares well conditioned
    mean = weights @ centred / drawn
    ss_tot = np.maximum(weights @ centred**2 - drawn * mean**2, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    return {
        "rmse": np.sqrt(ss_res / drawn),
        "mae": weights @ np.abs(residual) / drawn,
        "r2": r2,
    }
