"""Is a metric's change real or noise? A 95 % interval of the PR − base difference per metric.

- Test-set metrics: a seeded paired bootstrap over the same test rows. The evaluate stage
  writes each side's per-row predictions (`PREDICTIONS_PATH`, committed with the metrics);
  every resample draws the same rows for both sides and scores them with the task's metrics
  (src/tasks/resampled.py, checked against the task's scikit-learn metrics here and in
  the tests).
- Cross-validation means (`cv_<m>_mean`): paired over the folds when both sides split the
  same training rows into the same folds (`CV_FOLDS_PATH`, same fingerprint), else
  unpaired from each side's fold std. Both use the corrected resampled t interval
  (Nadeau & Bengio 2003), since the folds' training sets overlap.

A change is better or worse only when its interval excludes zero in that direction.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.tasks import get_task, metric_direction, resampled

PREDICTIONS_PATH = "metrics/test_predictions.csv"  # written by evaluate, cache: false
CV_FOLDS_PATH = "metrics/cv_folds.json"  # per-fold CV scores, written by evaluate
PROBA_PREFIX = "proba_"  # one column per class; a regression file has `predicted`
FLOAT_FORMAT = "%.10g"  # relative precision: small probabilities keep their log loss
RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
AGREEMENT = 2e-6  # file vs scores.json (rounded to 6 decimals) must agree this closely
MIN_DEFINED = 0.9  # share of resamples on which a metric must be defined for an interval
CELLS_PER_CHUNK = 2_000_000  # resamples x rows held in memory at once (~16 MB per array)

BETTER, WORSE, NOISE = "✅ better", "❌ worse", "≈ within noise"


@dataclass(frozen=True)
class Interval:
    """A `LEVEL` interval of PR − base for one metric, and how it was computed."""

    low: float
    high: float
    method: str  # "paired bootstrap" | "paired CV folds" | "unpaired CV folds"

    def verdict(self, metric: str) -> int:
        """+1 better, -1 worse, 0 within noise (the interval holds zero) or no direction."""
        side = 1 if self.low > 0 else (-1 if self.high < 0 else 0)
        return side * metric_direction(metric)


def marker(metric: str, interval: Interval | None) -> str:
    """✅ better / ❌ worse / ≈ within noise; "" without a direction or an interval."""
    if interval is None or not metric_direction(metric):
        return ""
    return {1: BETTER, -1: WORSE, 0: NOISE}[interval.verdict(metric)]


@dataclass
class Comparison:
    intervals: dict[str, Interval]
    notes: list[str]  # one line each: what the intervals are, or why some are missing


# --- the per-row predictions file --------------------------------------------------------


def predictions_frame(
    rows: np.ndarray, y_true: np.ndarray, outputs: Any, is_classifier: bool
) -> pd.DataFrame:
    """The file's table: test row, target, then class probabilities or the predicted value."""
    frame = pd.DataFrame({"row": np.asarray(rows, dtype=np.int64), "target": y_true})
    if is_classifier:
        proba = pd.DataFrame(outputs).reset_index(drop=True)
        for cls in proba.columns:
            frame[f"{PROBA_PREFIX}{cls}"] = proba[cls].to_numpy(dtype=np.float64)
    else:
        frame["predicted"] = np.asarray(outputs, dtype=np.float64)
    return frame


def sample_rows(n_rows: int, max_rows: int, seed: int) -> np.ndarray:
    """Positions of the rows to keep: all of them, or a seeded sample of `max_rows`
    (the same rows for both sides when their test sets have the same size and seed)."""
    if n_rows <= max_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, max_rows, replace=False))


def write_predictions(path: Path, frame: pd.DataFrame) -> None:
    from src.utils import atomic_write

    atomic_write(path, lambda p: frame.to_csv(p, index=False, float_format=FLOAT_FORMAT))


@dataclass(frozen=True)
class Predictions:
    rows: np.ndarray
    target: np.ndarray  # class labels (str) or values (float)
    outputs: Any  # DataFrame of probabilities (classes as columns) or ndarray of values
    task: Any  # src.tasks task object

    @property
    def classes(self) -> list[str]:
        return list(self.outputs.columns) if self.task.is_classifier else []


def read_predictions(text: str, where: str) -> Predictions:
    """Parse a predictions file; ValueError naming `where` and the problem if it is not one
    (the PR's file comes from the PR's code: nothing in it is trusted)."""
    try:
        raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{where} is not a CSV table ({exc})") from None
    columns = list(raw.columns)
    if columns[:2] != ["row", "target"] or len(columns) < 3 or raw.empty:
        raise ValueError(f"{where} does not start with columns row,target plus outputs")
    rest = columns[2:]
    try:
        rows = raw["row"].astype(np.int64).to_numpy()
        values = raw[rest].astype(np.float64).to_numpy()
    except (ValueError, OverflowError):
        raise ValueError(f"{where} holds a row index or output that is not a number") from None
    if not np.isfinite(values).all():
        raise ValueError(f"{where} holds a non-finite output")
    if len(np.unique(rows)) != len(rows):
        raise ValueError(f"{where} lists a test row twice")
    if rest == ["predicted"]:
        try:
            target = raw["target"].astype(np.float64).to_numpy()
        except ValueError:
            raise ValueError(f"{where}: a regression target that is not a number") from None
        return Predictions(rows, target, values[:, 0], get_task("regression"))
    if not all(c.startswith(PROBA_PREFIX) for c in rest) or len(rest) < 2:
        raise ValueError(f"{where}: outputs must be `predicted` or {PROBA_PREFIX}<class> columns")
    classes = [c[len(PROBA_PREFIX) :] for c in rest]
    target = raw["target"].to_numpy(dtype=str)
    if not set(target) <= set(classes):
        raise ValueError(f"{where}: a target label is not one of its classes")
    if (values < 0).any() or (values > 1).any():
        raise ValueError(f"{where}: a class probability outside [0, 1]")
    outputs = pd.DataFrame(values, columns=classes)
    return Predictions(
        rows, target, outputs, get_task("binary" if len(classes) == 2 else "multiclass")
    )


# --- the paired bootstrap ----------------------------------------------------------------


def resample_weights(n_rows: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each row is drawn in each of `n_resamples` bootstrap resamples."""
    draws = rng.integers(0, n_rows, size=(n_resamples, n_rows))
    flat = (np.arange(n_resamples)[:, None] * n_rows + draws).ravel()
    counts = np.bincount(flat, minlength=n_resamples * n_rows)
    return counts.reshape(n_resamples, n_rows).astype(np.float64)


def resampled_metrics(pred: Predictions, weights: np.ndarray) -> dict[str, np.ndarray]:
    """The task's test metrics of `pred` on each resample (row of `weights`)."""
    if not pred.task.is_classifier:
        return resampled.regression(pred.target, pred.outputs, weights)
    index = {c: i for i, c in enumerate(pred.classes)}
    y = np.array([index[t] for t in pred.target], dtype=np.int64)
    return resampled.classification(y, pred.outputs.to_numpy(), weights, pred.task.binary)


def paired_differences(
    base: Predictions, pr: Predictions, n_resamples: int = RESAMPLES, seed: int = SEED
) -> dict[str, np.ndarray]:
    """PR − base of every test metric on `n_resamples` paired resamples of the same rows."""
    n_rows = len(pr.rows)
    chunk = max(1, CELLS_PER_CHUNK // n_rows)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_resamples, chunk):
        weights = resample_weights(n_rows, min(chunk, n_resamples - start), rng)
        before, after = resampled_metrics(base, weights), resampled_metrics(pr, weights)
        for name in after.keys() & before.keys():
            parts.setdefault(name, []).append(after[name] - before[name])
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def same_rows(base: Predictions, pr: Predictions) -> str | None:
    """Why the two files are not predictions for the same test rows, or None if they are."""
    if base.task.name != pr.task.name or base.classes != pr.classes:
        return "the two sides predict different tasks or classes"
    if len(base.rows) != len(pr.rows) or not np.array_equal(base.rows, pr.rows):
        return "the two sides scored different test rows (another split?)"
    if not np.array_equal(base.target, pr.target):
        return "the test rows' targets differ (other data?)"
    return None


def agreement(pred: Predictions, scores: Mapping[str, Any]) -> str | None:
    """Why the file does not reproduce its side's scores.json, or None if it does.

    Checks both the task's scikit-learn metrics on the file and the resampled metrics at
    weight one per row against the committed scores (skipped for a sampled file)."""
    if scores.get("n_test") != len(pred.rows):
        return None  # a seeded sample of a bigger test set: its metrics are the sample's
    with warnings.catch_warnings():
        # float32 models (e.g. logistic regression on float32 inputs) write probabilities
        # that sum to 1 within float32 precision, which scikit-learn warns about in float64
        warnings.filterwarnings("ignore", "The y_prob values do not sum to one")
        reference = pred.task.test_metrics(pred.target, pred.outputs)
    vectorised = resampled_metrics(pred, np.ones((1, len(pred.rows))))
    for name, value in reference.items():
        committed = scores.get(name)
        if not isinstance(committed, int | float) or name not in vectorised:
            continue  # a metric without a resampled form gets no interval
        if abs(value - committed) > AGREEMENT or abs(vectorised[name][0] - value) > AGREEMENT:
            return f"its {name} ({value:.6f}) is not the committed {committed:.6f}"
    return None


def bootstrap_intervals(
    differences: Mapping[str, np.ndarray], level: float = LEVEL
) -> tuple[dict[str, Interval], list[str]]:
    """Percentile intervals of the paired differences; names of metrics too often undefined."""
    intervals, undefined = {}, []
    tail = (1 - level) / 2
    for name, diff in sorted(differences.items()):
        defined = diff[~np.isnan(diff)]
        if len(defined) < MIN_DEFINED * len(diff):
            undefined.append(name)
            continue
        low, high = np.quantile(defined, [tail, 1 - tail])
        intervals[name] = Interval(float(low), float(high), "paired bootstrap")
    return intervals, undefined


def holdout_comparison(
    base_text: str | None,
    pr_text: str | None,
    base_scores: Mapping[str, Any],
    pr_scores: Mapping[str, Any],
    base_label: str,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Comparison:
    """Intervals of the test-set metrics from the two predictions files (None: absent)."""
    no_verdict = "test-set changes are plain deltas, without a verdict"
    if base_text is None:
        return Comparison(
            {}, [f"{base_label} has no `{PREDICTIONS_PATH}` (older pipeline): {no_verdict}."]
        )
    if pr_text is None:
        return Comparison({}, [f"This PR has no `{PREDICTIONS_PATH}`: {no_verdict}."])
    try:
        base = read_predictions(base_text, f"{base_label}'s `{PREDICTIONS_PATH}`")
        pr = read_predictions(pr_text, f"this PR's `{PREDICTIONS_PATH}`")
    except ValueError as exc:
        return Comparison({}, [f"{exc}: {no_verdict}."])
    reason = same_rows(base, pr)
    for side, pred, scores in (("this PR", pr, pr_scores), (base_label, base, base_scores)):
        if reason is None and (why := agreement(pred, scores)):
            reason = f"{side}'s `{PREDICTIONS_PATH}` does not match its scores: {why}"
    if reason:
        return Comparison({}, [f"No paired comparison: {reason}; {no_verdict}."])
    intervals, undefined = bootstrap_intervals(paired_differences(base, pr, n_resamples, seed))
    sampled = pr_scores.get("n_test")
    rows = len(pr.rows)
    of = f" (a seeded sample of the {sampled} test rows)" if sampled != rows else ""
    notes = [
        f"Test-set intervals: paired bootstrap of the difference, {n_resamples} resamples "
        f"of the same {rows} test rows{of}, seed {seed}, {LEVEL:.0%}."
    ]
    if undefined:
        notes.append(
            f"No interval for {', '.join(undefined)}: undefined on over "
            f"{1 - MIN_DEFINED:.0%} of the resamples (too few rows of a class)."
        )
    return Comparison(intervals, notes)


# --- cross-validation folds ----------------------------------------------------------------


def read_folds(text: str | None) -> dict[str, Any] | None:
    """The per-fold CV scores file as {"fingerprint": str, "scores": {metric: [float]}}."""
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("scores"), dict):
        return None
    scores = {}
    for name, values in data["scores"].items():
        if isinstance(values, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        ):
            scores[str(name)] = [float(v) for v in values]
    return {"fingerprint": str(data.get("fingerprint")), "scores": scores}


def _t(df: float, level: float = LEVEL) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def paired_fold_interval(base: list[float], pr: list[float], level: float = LEVEL) -> Interval:
    """Mean fold difference ± t * corrected std error (test/train share 1/(k-1) in k-fold)."""
    diff = np.asarray(pr) - np.asarray(base)
    k = len(diff)
    se = math.sqrt((1 / k + 1 / (k - 1)) * float(np.var(diff, ddof=1)))
    half = _t(k - 1, level) * se
    return Interval(float(diff.mean()) - half, float(diff.mean()) + half, "paired CV folds")


def unpaired_fold_interval(
    base_mean: float,
    base_std: float,
    base_k: int,
    pr_mean: float,
    pr_std: float,
    pr_k: int,
    level: float = LEVEL,
) -> Interval:
    """From each side's mean and fold std (np.std, ddof 0): corrected variances, Welch's df."""
    var_b = (1 / base_k + 1 / (base_k - 1)) * base_std**2 * base_k / (base_k - 1)
    var_p = (1 / pr_k + 1 / (pr_k - 1)) * pr_std**2 * pr_k / (pr_k - 1)
    diff, se = pr_mean - base_mean, math.sqrt(var_b + var_p)
    if se == 0:
        return Interval(diff, diff, "unpaired CV folds")
    df = (var_b + var_p) ** 2 / (var_b**2 / (base_k - 1) + var_p**2 / (pr_k - 1))
    half = _t(df, level) * se
    return Interval(diff - half, diff + half, "unpaired CV folds")


def _folds_k(params: Mapping[str, Any] | None) -> int | None:
    k = ((params or {}).get("train") or {}).get("cv_folds")
    return k if isinstance(k, int) and not isinstance(k, bool) and k >= 2 else None


def cv_comparison(
    base_folds: dict[str, Any] | None,
    pr_folds: dict[str, Any] | None,
    base_scores: Mapping[str, Any],
    pr_scores: Mapping[str, Any],
    base_params: Mapping[str, Any] | None,
    pr_params: Mapping[str, Any] | None,
) -> Comparison:
    """Intervals of the `cv_<m>_mean` metrics: paired over the same folds when possible."""
    paired = (
        base_folds is not None
        and pr_folds is not None
        and base_folds["fingerprint"] == pr_folds["fingerprint"]
        and base_folds["fingerprint"] not in ("", "None")
    )
    intervals: dict[str, Interval] = {}
    for name in sorted(pr_scores):
        if not (name.startswith("cv_") and name.endswith("_mean")) or name not in base_scores:
            continue
        metric = name[len("cv_") : -len("_mean")]
        if paired:
            before, after = base_folds["scores"].get(metric), pr_folds["scores"].get(metric)
            if before and after and len(before) == len(after) >= 3:
                intervals[name] = paired_fold_interval(before, after)
                continue
        std_name = f"cv_{metric}_std"
        values = [base_scores.get(name), base_scores.get(std_name)]
        values += [pr_scores.get(name), pr_scores.get(std_name)]
        k_base = len(base_folds["scores"].get(metric, [])) if base_folds else _folds_k(base_params)
        k_pr = len(pr_folds["scores"].get(metric, [])) if pr_folds else _folds_k(pr_params)
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if numbers and k_base and k_pr and k_base >= 2 and k_pr >= 2:
            bm, bs, pm, ps = (float(v) for v in values)
            intervals[name] = unpaired_fold_interval(bm, bs, k_base, pm, ps, k_pr)
    if not intervals:
        return Comparison({}, [])
    how = (
        "paired over the same folds of the same training rows"
        if paired
        else "unpaired, from each side's fold std (the folds differ, or a side has no "
        f"`{CV_FOLDS_PATH}`)"
    )
    return Comparison(
        intervals,
        [f"CV intervals: {how}; corrected resampled t interval (Nadeau & Bengio), {LEVEL:.0%}."],
    )


def compare(
    read: Any,
    base_sha: str,
    base_scores: Mapping[str, Any],
    pr_scores: Mapping[str, Any],
    base_params: Mapping[str, Any] | None,
    pr_params: Mapping[str, Any] | None,
    base_label: str,
) -> Comparison:
    """Both comparisons; `read(rev, path)` gives a committed file's text (rev None: the
    working tree) or None."""
    test = holdout_comparison(
        read(base_sha, PREDICTIONS_PATH),
        read(None, PREDICTIONS_PATH),
        base_scores,
        pr_scores,
        base_label,
    )
    cv = cv_comparison(
        read_folds(read(base_sha, CV_FOLDS_PATH)),
        read_folds(read(None, CV_FOLDS_PATH)),
        base_scores,
        pr_scores,
        base_params,
        pr_params,
    )
    return Comparison({**test.intervals, **cv.intervals}, test.notes + cv.notes)
