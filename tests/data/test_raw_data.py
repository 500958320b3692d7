"""Expectations about the default dataset and its split."""

import pandas as pd

from src.data.make_dataset import validate_raw


def test_raw_data_matches_declared_schema(params, raw_data):
    declared = params["data"]["schema"]
    assert set(declared) <= set(raw_data.columns)
    clean = validate_raw(raw_data, declared, params["data"]["target"])
    assert len(clean) == len(raw_data) == 344


def test_target_classes_and_balance(params, split):
    train, test = split
    target = params["data"]["target"]
    classes = set(train[target]) | set(test[target])
    assert classes == {"Adelie", "Chinstrap", "Gentoo"}
    # stratified: each class's share differs by under 3 points between train and test
    share_train = train[target].value_counts(normalize=True)
    share_test = test[target].value_counts(normalize=True)
    assert ((share_train - share_test).abs() < 0.03).all()


def test_split_sizes_and_no_overlap(params, split):
    train, test = split
    assert len(test) == round(344 * params["split"]["test_size"])
    key = list(params["data"]["schema"])
    merged = pd.merge(train.drop_duplicates(key), test.drop_duplicates(key), on=key)
    assert merged.empty, "a row appears in both train and test"


def test_physical_ranges_are_plausible(split):
    df = pd.concat(split)
    assert df["body_mass_g"].dropna().between(2000, 7000).all()
    assert df["flipper_length_mm"].dropna().between(150, 250).all()
    assert set(df["island"].dropna()) == {"Biscoe", "Dream", "Torgersen"}
