"""The feature schema learned from training data, and batch validation against it."""

import numpy as np
import pandas as pd
import pytest

from src.features.schema import (
    MISSING_CATEGORY,
    SchemaError,
    learn_feature_schema,
    to_model_frame,
    validate_frame,
)

pytestmark = pytest.mark.mechanics  # never reads the configured dataset (pyproject.toml)

DATA_SCHEMA = {"y": "category", "colour": "category", "size": "float", "year": "int"}


@pytest.fixture
def schema():
    train = pd.DataFrame(
        {
            "y": ["a", "b", "a"],
            "colour": ["red", None, "blue"],
            "size": [1.0, 2.0, 3.0],
            "year": [1, 2, 3],
        }
    )
    return learn_feature_schema(train, DATA_SCHEMA, "y", ["year"])


def test_schema_learns_types_categories_and_nullability(schema):
    assert schema["target"] == "y"
    assert schema["classes"] == ["a", "b"]
    colour, size = schema["features"]
    assert colour == {
        "name": "colour",
        "type": "categorical",
        "nullable": True,
        "categories": ["blue", "red"],
    }
    assert size["name"] == "size" and size["type"] == "numeric" and size["nullable"] is False
    assert [f["name"] for f in schema["features"]] == ["colour", "size"]  # year dropped


def test_model_frame_has_training_dtypes_from_json_like_input(schema):
    records = pd.DataFrame([{"size": 2, "colour": None}, {"size": None, "colour": "red"}])
    frame = to_model_frame(records, schema)
    assert list(frame.columns) == ["colour", "size"]
    assert frame["size"].dtype == "float64"
    assert frame["colour"].dtype == object
    # a categorical null is the missing-category marker "" (the imputer's missing value)
    assert frame["colour"].iloc[0] == MISSING_CATEGORY == "" and frame["colour"].iloc[1] == "red"


def test_validate_frame_names_missing_and_mistyped_columns(schema):
    bad = pd.DataFrame({"size": ["1.0", "big"], "extra": [1, 2]})
    with pytest.raises(SchemaError) as info:
        validate_frame(bad, schema)
    fields = {d["field"]: d["problem"] for d in info.value.details}
    assert fields["colour"] == "missing column"
    assert "'big'" in fields["size"]
    assert "extra" not in fields


def test_validate_frame_rejects_booleans_and_infinity(schema):
    with pytest.raises(SchemaError, match="size: expected numbers, found booleans"):
        validate_frame(pd.DataFrame({"colour": ["red"], "size": [True]}), schema)
    with pytest.raises(SchemaError, match="size: contains infinite"):
        validate_frame(pd.DataFrame({"colour": ["red"], "size": [np.inf]}), schema)


def test_validate_frame_accepts_extra_columns_and_unseen_categories(schema, caplog):
    df = pd.DataFrame({"y": ["a"], "colour": ["green"], "size": [1.5]})
    out = validate_frame(df, {**schema, "unknown_categories": "ignore"})
    assert list(out.columns) == ["colour", "size"]
    assert "not seen in training" in caplog.text


def test_validate_frame_rejects_unseen_categories_by_default(schema):
    df = pd.DataFrame({"y": ["a"], "colour": ["green"], "size": [1.5]})
    with pytest.raises(SchemaError, match="colour: unknown categories 'green'; expected one of"):
        validate_frame(df, schema)
