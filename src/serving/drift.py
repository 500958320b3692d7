"""Drift of inputs against the training data: the reference stored with the serving model,
and the one statistic code used by the predictor (GET /drift, /metrics) and `make drift`.

numpy + the standard library only (the serving image has no pandas or scipy).

The reference (`models/serving/drift_reference.json`, written by the export stage from the
training set, its sha256 in the manifest) holds, per feature, the training counts of
every bin and of nulls:

- numeric: `edges`, quantile cut points of the training values (`drift.bins` quantiles,
  duplicates dropped); bin i holds values v with edges[i-1] < v <= edges[i], the first and
  last bins are open-ended, so a value outside the training range lands in an end bin;
- categorical: one bin per training category, plus one `unseen` bin (0 in training);
- nulls (None, NaN, and "" for a categorical, as in the model) are counted apart.

The statistic is the **population stability index** of the non-null values:

    PSI = sum_i (p_i - q_i) * ln(p_i / q_i)

with p the observed and q the training proportions per bin, each smoothed additively:
p_i = (count_i + 0.5) / (n + 0.5 * bins) (likewise q), so an empty bin gives a finite
value instead of infinity. 0 means the same distribution; the usual reading is < 0.1
stable, 0.1-0.25 moderate, > 0.25 large. Beside it: the null rate (nulls / records) against
training's, and for categorical features the unseen rate (unseen / non-null values).

A feature is judged only with at least `min_records` records (and PSI only with as many
non-null values); below that it reads "insufficient data", never a noisy number. It
drifts when PSI > thresholds.psi, |null rate - training null rate| > thresholds.null_rate,
or unseen rate > thresholds.unseen_rate.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FORMAT = "mloperation.drift_reference"
FORMAT_VERSION = 1
REFERENCE_FILE = "drift_reference.json"
SMOOTHING = 0.5  # added to every bin count of both sides before taking proportions
STATISTIC = "psi"
STATISTIC_DEFINITION = (
    "population stability index: sum over bins of (p - q) * ln(p / q), p observed and q "
    f"training proportions of the non-null values, each bin count + {SMOOTHING} (additive "
    "smoothing) before dividing"
)
NUMERIC, CATEGORICAL = "numeric", "categorical"
NULL, UNSEEN = "null", "unseen"
OK, DRIFT, INSUFFICIENT = "ok", "drift", "insufficient data"
THRESHOLD_KEYS = ("psi", "null_rate", "unseen_rate")
# params.yaml `drift:` (typed in src/params.py DriftParams), when a key is absent
DEFAULT_SETTINGS = {
    "bins": 10,
    "min_records": 200,
    "max_psi": 0.2,
    "max_null_rate_change": 0.1,
    "max_unseen_rate": 0.05,
}
DECIMALS = 6


def settings(params_drift: Mapping[str, Any] | None) -> dict[str, Any]:
    """params.yaml's `drift:` block (checked by src.params) completed with the defaults."""
    return {**DEFAULT_SETTINGS, **(params_drift or {})}


def thresholds_of(settings: Mapping[str, Any]) -> dict[str, float]:
    """The summary's thresholds from `drift:` settings."""
    return {
        "psi": float(settings["max_psi"]),
        "null_rate": float(settings["max_null_rate_change"]),
        "unseen_rate": float(settings["max_unseen_rate"]),
    }


class ReferenceError(ValueError):
    """The drift reference is missing a key, or a key has the wrong type."""


def _is_null(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and value != value)


class FeatureReference:
    """One feature's bins and training counts. Count vectors have one entry per bin and a
    last one for nulls (`size` entries)."""

    def __init__(self, entry: Mapping[str, Any]):
        self.name: str = entry["name"]
        self.type: str = entry["type"]
        self.train_counts = np.asarray(entry["counts"], dtype=np.int64)
        self.train_nulls = int(entry["nulls"])
        if self.type == NUMERIC:
            self.edges = np.asarray(entry["edges"], dtype=np.float64)
            self._edge_list = self.edges.tolist()
            self.bins = len(self._edge_list) + 1
            self.categories: list[str] = []
        else:
            self.categories = list(entry["categories"])
            self._lookup = {c: i for i, c in enumerate(self.categories)}
            self.bins = len(self.categories) + 1  # the last bin: unseen
            # None and "" are nulls (as in index()); the null index is `bins`
            self._lookup_nulls = {**self._lookup, None: self.bins, "": self.bins}
            self.train_counts = np.append(self.train_counts, 0)
        if len(self.train_counts) != self.bins:
            raise ReferenceError(f"feature {self.name!r}: counts do not match its bins")
        self.size = self.bins + 1  # + nulls
        self.null_index = self.bins

    def labels(self) -> list[str]:
        """Each bin's label for people: `(a, b]` ranges, or the category."""
        if self.type == CATEGORICAL:
            return [*self.categories, f"({UNSEEN})"]
        cuts = [f"{e:.6g}" for e in self._edge_list]
        lows, highs = ["-inf", *cuts], [*cuts, "inf"]
        return [
            f"({lo}, {hi}]" if hi != "inf" else f"({lo}, {hi})"
            for lo, hi in zip(lows, highs, strict=True)
        ]

    def metric_labels(self) -> list[str]:
        """Each count's `bin` label in Prometheus: "0".."k-1" (bins or categories in
        reference order), then "unseen" (categorical) and "null"."""
        if self.type == CATEGORICAL:
            return [*(str(i) for i in range(len(self.categories))), UNSEEN, NULL]
        return [*(str(i) for i in range(self.bins)), NULL]

    def index(self, value: Any) -> int:
        """The count index of one value (the one-record path: no numpy call)."""
        if _is_null(value):
            return self.null_index
        if self.type == NUMERIC:
            return bisect.bisect_left(self._edge_list, value)  # = np.searchsorted(.., "left")
        return self._lookup.get(value, self.bins - 1)

    def counts(self, values: Sequence[Any] | np.ndarray) -> np.ndarray:
        """The count vector of many values (vectorised; the same bins as `index`)."""
        out = np.zeros(self.size, dtype=np.int64)
        if self.type == NUMERIC:
            column = np.asarray(values, dtype=np.float64)  # None -> NaN
            null = np.isnan(column)
            out[: self.bins] = np.bincount(
                np.searchsorted(self.edges, column[~null], side="left"), minlength=self.bins
            )
            out[self.null_index] = int(null.sum())
            return out
        unseen = self.bins - 1
        # one C-level pass (dict.get by map); a NaN (files only) lands in unseen: moved back
        idx = np.fromiter(
            map(self._lookup_nulls.get, values, itertools.repeat(unseen)),
            dtype=np.int64,
            count=len(values),
        )
        for i in np.flatnonzero(idx == unseen).tolist():
            if _is_null(values[i]):
                idx[i] = self.null_index
        return np.bincount(idx, minlength=self.size)


class Reference:
    """The parsed drift reference: features in schema order, thresholds, min_records."""

    def __init__(self, data: Mapping[str, Any]):
        check_reference(data)
        self.data = data
        self.rows = int(data["rows"])
        self.min_records = int(data["min_records"])
        self.thresholds = {k: float(data["thresholds"][k]) for k in THRESHOLD_KEYS}
        self.features = [FeatureReference(f) for f in data["features"]]
        self.by_name = {f.name: f for f in self.features}

    @classmethod
    def from_bytes(cls, raw: bytes) -> Reference:
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ReferenceError(f"not JSON ({exc})") from None
        return cls(data)

    def count_columns(self, columns: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
        return {f.name: f.counts(columns[f.name]) for f in self.features}

    def summarize(
        self,
        counts: Mapping[str, np.ndarray],
        thresholds: Mapping[str, float] | None = None,
        min_records: int | None = None,
    ) -> dict[str, Any]:
        """The drift of observed count vectors (by feature name), as /drift and the report
        show it; thresholds and min_records default to the reference's (export-time
        params)."""
        limits = {**self.thresholds, **(thresholds or {})}
        minimum = self.min_records if min_records is None else int(min_records)
        features = [
            feature_drift(f, np.asarray(counts[f.name], dtype=np.int64), limits, minimum)
            for f in self.features
        ]
        records = max((f["records"] for f in features), default=0)
        statuses = {f["status"] for f in features}
        status = DRIFT if DRIFT in statuses else INSUFFICIENT if INSUFFICIENT in statuses else OK
        return {
            "status": status,
            "drifted": [f["name"] for f in features if f["status"] == DRIFT],
            "records": records,
            "statistic": {"name": STATISTIC, "definition": STATISTIC_DEFINITION},
            "thresholds": limits,
            "min_records": minimum,
            "features": features,
        }


def _proportions(counts: np.ndarray) -> np.ndarray:
    smoothed = counts.astype(np.float64) + SMOOTHING
    return smoothed / smoothed.sum()


def psi(observed: np.ndarray, expected: np.ndarray) -> float:
    """PSI of two count vectors over the same bins (see the module docstring)."""
    p, q = _proportions(np.asarray(observed)), _proportions(np.asarray(expected))
    return float(np.sum((p - q) * np.log(p / q)))


def _round(x: float) -> float:
    return float(round(x, DECIMALS))


def feature_drift(
    ref: FeatureReference, counts: np.ndarray, limits: Mapping[str, float], min_records: int
) -> dict[str, Any]:
    """One feature's entry of `Reference.summarize`."""
    if counts.shape != (ref.size,):
        raise ReferenceError(f"feature {ref.name!r}: {counts.shape} counts for {ref.size}")
    records = int(counts.sum())
    nulls = int(counts[ref.null_index])
    values = records - nulls
    bins = counts[: ref.bins]
    train_rows = int(ref.train_counts.sum()) + ref.train_nulls
    entry: dict[str, Any] = {
        "name": ref.name,
        "type": ref.type,
        "status": OK,
        "records": records,
        "psi": None,
        "null_rate": _round(nulls / records) if records else None,
        "reference_null_rate": _round(ref.train_nulls / train_rows) if train_rows else 0.0,
        "reasons": [],
    }
    if ref.type == CATEGORICAL:
        entry["unseen_rate"] = _round(int(bins[-1]) / values) if values else None
    entry["bins"] = ref.labels()
    entry["observed"] = [_round(x) for x in (bins / values if values else bins * 0.0).tolist()]
    total = int(ref.train_counts.sum())
    entry["reference"] = [_round(x) for x in (ref.train_counts / max(total, 1)).tolist()]
    if records < min_records:
        entry["status"] = INSUFFICIENT
        entry["reasons"].append(f"{records} of the {min_records} records needed")
        return entry
    reasons = entry["reasons"]
    null_gap = abs(nulls / records - entry["reference_null_rate"])
    if null_gap > limits["null_rate"]:
        reasons.append(
            f"null rate {nulls / records:.3f} vs {entry['reference_null_rate']:.3f} in "
            f"training (> {limits['null_rate']:g} apart)"
        )
    if values >= min_records:
        value = psi(bins, ref.train_counts)
        entry["psi"] = _round(value)
        if value > limits["psi"]:
            reasons.append(f"PSI {value:.3f} > {limits['psi']:g}")
        if ref.type == CATEGORICAL and entry["unseen_rate"] > limits["unseen_rate"]:
            reasons.append(f"unseen rate {entry['unseen_rate']:.3f} > {limits['unseen_rate']:g}")
    else:
        reasons.append(f"PSI: {values} non-null values of the {min_records} needed")
    if any(not r.startswith("PSI:") for r in reasons):
        entry["status"] = DRIFT
    return entry


# -- building and checking the reference (the export stage) ------------------------------


def quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    """Interior cut points at the 1/bins .. (bins-1)/bins quantiles of the non-null values
    (values that occur in the data: inverted CDF), each once."""
    finite = values[~np.isnan(values)]
    if finite.size == 0 or bins < 2:
        return []
    cuts = np.quantile(finite, np.arange(1, bins) / bins, method="inverted_cdf")
    return [float(c) for c in np.unique(cuts)]


def build_reference(
    schema: Mapping[str, Any],
    columns: Mapping[str, Sequence[Any]],
    bins: int,
    thresholds: Mapping[str, float],
    min_records: int,
) -> dict[str, Any]:
    """The reference of training `columns` (feature name -> values: numbers with NaN/None
    for null; strings with None/"" for null), as JSON-ready data. (The schema's categories
    are learned from the same rows, so no training value is unseen.)"""
    features: list[dict[str, Any]] = []
    for f in schema["features"]:
        values = columns[f["name"]]
        if f["type"] == NUMERIC:
            entry: dict[str, Any] = {
                "name": f["name"],
                "type": NUMERIC,
                "edges": quantile_edges(np.asarray(values, dtype=np.float64), bins),
                "counts": [],
                "nulls": 0,
            }
        else:
            entry = {
                "name": f["name"],
                "type": CATEGORICAL,
                "categories": list(f["categories"]),
                "counts": [0] * len(f["categories"]),
                "nulls": 0,
            }
        n_bins = _count_bins(entry)
        ref = FeatureReference({**entry, "counts": [0] * n_bins})
        counts = ref.counts(values)
        entry["counts"] = [int(c) for c in counts[:n_bins]]
        entry["nulls"] = int(counts[ref.null_index])
        features.append(entry)
    rows = len(next(iter(columns.values()))) if columns else 0
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "statistic": STATISTIC,
        "smoothing": SMOOTHING,
        "rows": rows,
        "bins": bins,
        "min_records": int(min_records),
        "thresholds": {k: float(thresholds[k]) for k in THRESHOLD_KEYS},
        "features": features,
    }
    check_reference(data)
    return data


def _count_bins(entry: Mapping[str, Any]) -> int:
    return len(entry["edges"]) + 1 if entry["type"] == NUMERIC else len(entry["categories"])


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_reference(data: Any) -> None:
    """Raise ReferenceError naming the first key of `data` that is missing or mistyped."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ReferenceError(f'not a drift reference (expected "format": "{FORMAT}")')
    if data.get("format_version") != FORMAT_VERSION:
        raise ReferenceError(f"format_version {data.get('format_version')!r} is not supported")
    if data.get("smoothing") != SMOOTHING or data.get("statistic") != STATISTIC:
        raise ReferenceError(f"statistic/smoothing must be {STATISTIC!r}/{SMOOTHING}")
    for key in ("rows", "min_records"):
        if not isinstance(data.get(key), int) or isinstance(data[key], bool) or data[key] < 0:
            raise ReferenceError(f"{key} must be an integer >= 0")
    limits = data.get("thresholds")
    if not isinstance(limits, dict) or not all(_number(limits.get(k)) for k in THRESHOLD_KEYS):
        raise ReferenceError(f"thresholds must hold numbers {', '.join(THRESHOLD_KEYS)}")
    features = data.get("features")
    if not isinstance(features, list) or not features:
        raise ReferenceError("features must be a non-empty list")
    for i, f in enumerate(features):
        where = f"features[{i}]"
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise ReferenceError(f"{where} must be an object with a name")
        if f.get("type") == NUMERIC:
            edges = f.get("edges")
            if not isinstance(edges, list) or not all(_number(e) for e in edges):
                raise ReferenceError(f"{where}.edges must be a list of numbers")
            if any(a >= b for a, b in itertools.pairwise(edges)):
                raise ReferenceError(f"{where}.edges must increase")
        elif f.get("type") == CATEGORICAL:
            cats = f.get("categories")
            if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
                raise ReferenceError(f"{where}.categories must be a list of strings")
        else:
            raise ReferenceError(f"{where}.type must be {NUMERIC} or {CATEGORICAL}")
        counts = f.get("counts")
        ok = isinstance(counts, list) and len(counts) == _count_bins(f)
        if not ok or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            raise ReferenceError(f"{where}.counts must be one integer per bin")
        if not isinstance(f.get("nulls"), int) or isinstance(f["nulls"], bool):
            raise ReferenceError(f"{where}.nulls must be an integer")


def matches_schema(reference: Reference, schema: Mapping[str, Any]) -> str | None:
    """None when the reference describes the schema's features (names, types, categories,
    in order); else what differs."""
    names = [f["name"] for f in schema["features"]]
    if [f.name for f in reference.features] != names:
        return "its features are not the model's"
    for ref, f in zip(reference.features, schema["features"], strict=True):
        if ref.type != f["type"] or (ref.type == CATEGORICAL and ref.categories != f["categories"]):
            return f"feature {ref.name!r} differs from the model's schema"
    return None
