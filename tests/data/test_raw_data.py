"""Expectations about the CONFIGURED dataset and its split, all derived from params.yaml and
the raw source itself (no counts, names or classes written down here)."""

import math

import numpy as np
import pandas as pd

from src.data.make_dataset import validate_raw
from src.tasks import schema_task, task_family

# Regression: the test mean may differ from the training mean by this many standard errors
# of the difference (a random split's difference is within 3 about 997 times in 1000), and
# the standard deviations by at most this factor either way.
MEAN_DIFF_STANDARD_ERRORS = 3.0
STD_RATIO = 1.5


def test_raw_data_matches_declared_schema(params, raw_data):
    declared = params["data"]["schema"]
    target = params["data"]["target"]
    assert set(declared) <= set(raw_data.columns)
    clean = validate_raw(raw_data, declared, target)
    # only rows without a target are dropped, and every other row is kept
    assert len(clean) == len(raw_data) - int(raw_data[target].isna().sum()) > 0
    assert list(clean.columns) == list(declared)


def test_target_alike_in_train_and_test(params, raw_data, split, bundle):
    """The split keeps the target's distribution: every class on both sides, in about the
    same shares (classification); a finite target with about the same mean and spread on
    both sides (regression)."""
    train, test = split
    target = params["data"]["target"]
    family = task_family(params["data"])
    assert schema_task(bundle["schema"]).family == family
    if family == "classification":
        raw_classes = set(raw_data[target].dropna().astype(str))
        assert set(train[target]) == set(test[target]) == raw_classes
        assert bundle["schema"]["classes"] == sorted(raw_classes)
        # stratified: each class's share differs by under 3 points between train and test
        share_train = train[target].value_counts(normalize=True)
        share_test = test[target].value_counts(normalize=True)
        assert ((share_train - share_test).abs() < 0.03).all()
        return
    assert "classes" not in bundle["schema"]
    y_train = pd.to_numeric(train[target]).to_numpy(dtype=float)
    y_test = pd.to_numeric(test[target]).to_numpy(dtype=float)
    for name, y in (("train", y_train), ("test", y_test)):
        assert len(y) and np.isfinite(y).all(), f"{name}: the target has nulls or infinities"
    std = float(np.std(np.concatenate([y_train, y_test]), ddof=1))
    assert std > 0, "the target is constant"
    standard_error = std * math.sqrt(1 / len(y_train) + 1 / len(y_test))
    gap = abs(y_train.mean() - y_test.mean())
    assert gap <= MEAN_DIFF_STANDARD_ERRORS * standard_error, (
        f"means differ by {gap:.4g} (train {y_train.mean():.4g}, test {y_test.mean():.4g}), "
        f"over {MEAN_DIFF_STANDARD_ERRORS} standard errors ({standard_error:.4g})"
    )
    ratio = float(np.std(y_train, ddof=1) / np.std(y_test, ddof=1))
    assert 1 / STD_RATIO <= ratio <= STD_RATIO, f"train/test standard deviation ratio {ratio:.3f}"


def test_split_sizes_and_no_overlap(params, raw_data, split):
    """The split is a partition of the valid rows: none lost, none in both train and test
    (rows that are duplicated in the raw data itself may be on both sides, once each)."""
    train, test = split
    n = len(train) + len(test)
    assert len(test) == math.ceil(n * params["split"]["test_size"])  # as scikit-learn rounds
    key = list(params["data"]["schema"])
    clean = validate_raw(raw_data, params["data"]["schema"], params["data"]["target"])

    def rows(df: pd.DataFrame) -> pd.DataFrame:
        return df[key].sort_values(key, na_position="last").reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(pd.concat([train, test])), rows(clean))


def test_features_are_usable_by_the_model(params, split, bundle):
    """Declared types hold after the split, and the test set asks nothing the model did not
    see in training: no unknown categories (the server would refuse them), numeric values
    finite and within a span of the training range, no feature null in every row."""
    train, test = split
    declared = params["data"]["schema"]
    for f in bundle["schema"]["features"]:
        name = f["name"]
        assert train[name].notna().any(), name
        if f["type"] == "categorical":
            assert declared[name] == "category"
            assert set(test[name].dropna()) <= set(f["categories"]), name
            continue
        values = pd.concat([train[name], test[name]]).dropna().to_numpy(dtype=float)
        assert np.isfinite(values).all(), name
        if declared[name] == "int":
            assert (values == np.round(values)).all(), name
        span = f["max"] - f["min"]
        assert test[name].dropna().between(f["min"] - span, f["max"] + span).all(), name
