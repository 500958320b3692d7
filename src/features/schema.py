"""The feature schema: learned once from the training data, stored with the model.

It is the single description of the model's inputs (names, types, allowed categories,
whether null is allowed) used by training, batch prediction and the predictor, so a new
dataset needs no hand-written validation code.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from src.serving.manifest import preview

log = logging.getLogger(__name__)

NUMERIC = "numeric"
CATEGORICAL = "categorical"
MISSING_CATEGORY = ""  # a null categorical value in the model frame (see to_model_frame)


class SchemaError(ValueError):
    """Input does not match the feature schema. `details` lists {field, problem} dicts."""

    def __init__(self, message: str, details: list[dict[str, str]]):
        super().__init__(
            message + ": " + "; ".join(f"{d['field']}: {d['problem']}" for d in details)
        )
        self.message = message
        self.details = details


UNKNOWN_POLICIES = ("ignore", "reject")


def learn_feature_schema(
    train: pd.DataFrame,
    data_schema: dict[str, str],
    target: str,
    drop_columns: list[str],
    task: str = "multiclass",
    unknown_categories: str = "reject",
) -> dict[str, Any]:
    """Describe every feature column of `train` from the declared raw types and the data.

    `task` (binary | multiclass | regression, see src.tasks) and the unknown-category
    policy (`features.unknown_categories`: ignore | reject) travel with the schema, so
    evaluate, batch prediction, the server and the smoke test apply the same ones.
    """
    if unknown_categories not in UNKNOWN_POLICIES:
        raise ValueError(
            f"features.unknown_categories {unknown_categories!r} is not one of: "
            + ", ".join(UNKNOWN_POLICIES)
        )
    features = []
    for name, kind in data_schema.items():
        if name == target or name in drop_columns:
            continue
        column = train[name]
        if kind == "category":  # "" is a missing category, as in to_model_frame
            column = column.where(column.astype(str) != MISSING_CATEGORY)
        entry: dict[str, Any] = {
            "name": name,
            "type": CATEGORICAL if kind == "category" else NUMERIC,
            "nullable": bool(column.isna().any()),
        }
        if entry["type"] == CATEGORICAL:
            entry["categories"] = sorted(str(v) for v in column.dropna().unique())
        else:
            entry["min"] = float(column.min())
            entry["max"] = float(column.max())
        features.append(entry)
    if not features:
        raise ValueError("no feature columns left after removing the target and drop_columns")
    schema: dict[str, Any] = {
        "target": target,
        "task": task,
        "unknown_categories": unknown_categories,
        "features": features,
    }
    if task != "regression":
        schema["classes"] = sorted(str(v) for v in train[target].dropna().unique())
    return schema


def unknown_category_rows(df: pd.DataFrame, schema: dict[str, Any]) -> pd.Series:
    """Boolean mask of rows holding a category the model never saw in training."""
    mask = pd.Series(False, index=df.index)
    for feature in schema["features"]:
        if feature["type"] == CATEGORICAL and feature["name"] in df.columns:
            column = df[feature["name"]]
            text = column.astype(str)
            known = column.isna() | (text == MISSING_CATEGORY) | text.isin(feature["categories"])
            mask |= ~known
    return mask


def feature_names(schema: dict[str, Any]) -> list[str]:
    return [f["name"] for f in schema["features"]]


def to_model_frame(df: pd.DataFrame, schema: dict[str, Any]) -> pd.DataFrame:
    """Select the feature columns in schema order with the training dtypes.

    Numeric features become float64 (None -> NaN), categorical ones object strings with
    MISSING_CATEGORY ("") for a null, so a frame built from JSON records gives the same
    predictions as one read from CSV. (The categorical imputer's missing value is that
    string, not NaN, because skl2onnx converts string imputers only for a string marker;
    a client's "" is therefore a missing category too.)
    """
    out = {}
    for feature in schema["features"]:
        column = df[feature["name"]]
        if feature["type"] == NUMERIC:
            out[feature["name"]] = pd.to_numeric(column, errors="raise").astype("float64")
        else:
            values = column.astype("object")
            out[feature["name"]] = pd.Series(
                [MISSING_CATEGORY if pd.isna(v) else str(v) for v in values],
                index=df.index,
                dtype=object,
            )
    return pd.DataFrame(out, index=df.index)


def validate_frame(df: pd.DataFrame, schema: dict[str, Any]) -> pd.DataFrame:
    """Validate a batch (e.g. a CSV) against the schema and return the model frame.

    Missing columns and non-numeric values in numeric columns raise SchemaError naming
    the column. Extra columns are ignored; nulls where training had none are logged as
    warnings (the preprocessor imputes them). Unseen categories follow the schema's
    `unknown_categories` policy: `reject` raises SchemaError naming them; `ignore` logs
    a warning (they encode as no known category, as in evaluate and the server).
    """
    reject = schema.get("unknown_categories", "reject") == "reject"
    details: list[dict[str, str]] = []
    for feature in schema["features"]:
        name = feature["name"]
        if name not in df.columns:
            details.append({"field": name, "problem": "missing column"})
            continue
        column = df[name]
        if feature["type"] == NUMERIC:
            if ptypes.is_bool_dtype(column):
                details.append({"field": name, "problem": "expected numbers, found booleans"})
                continue
            numeric = pd.to_numeric(column, errors="coerce")
            bad = column[numeric.isna() & column.notna()]
            if len(bad):
                examples = ", ".join(repr(v) for v in bad.unique()[:3])
                details.append({"field": name, "problem": f"expected numbers, found {examples}"})
            elif not np.isfinite(numeric.dropna()).all():
                details.append({"field": name, "problem": "contains infinite values"})
        else:
            unseen = sorted(set(column.dropna().astype(str)) - set(feature["categories"]))
            if unseen and reject:
                details.append(
                    {
                        "field": name,
                        "problem": f"unknown categories {preview(unseen)}; expected one of "
                        f"{preview(feature['categories'])} (features.unknown_categories: reject)",
                    }
                )
            elif unseen:
                log.warning("column %r: categories not seen in training: %s", name, preview(unseen))
        if not feature["nullable"] and column.isna().any():
            log.warning("column %r: %d null(s), none in training", name, int(column.isna().sum()))
    if details:
        raise SchemaError("input does not match the model's feature schema", details)
    return to_model_frame(df, schema)
