"""Stage `features`: learn the feature schema and fit the preprocessor on the training set.

    python -m src.features.build_features [--params params.yaml]

Reads `data/processed/train.csv` and `data.*`, `features.*` params; writes
`data/interim/features.joblib` (feature schema + fitted preprocessor) and
`data/interim/train_features.csv` (the transformed training matrix).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from src import config
from src.features.schema import (
    CATEGORICAL,
    MISSING_CATEGORY,
    NUMERIC,
    learn_feature_schema,
    to_model_frame,
)
from src.tasks import resolve_task
from src.utils import PipelineError, atomic_write, load_params, run_cli

log = logging.getLogger(__name__)


def build_preprocessor(schema: dict[str, Any], params: dict[str, Any]) -> ColumnTransformer:
    """Impute (and optionally scale) numeric features; impute and one-hot encode
    categorical ones.

    This is the one home of preprocessing: the export stage converts the whole fitted
    pipeline to one ONNX graph with skl2onnx, so another step skl2onnx converts is added
    here (and its key in params.yaml and dvc.yaml), nowhere else. The export's parity
    check refuses, naming the key, a step whose ONNX form does not score as scikit-learn.
    Scaling is off by default (the linear models scale inside the estimator, see
    src.tasks), so tree models see raw values. `params` is the `features:` block as
    src.params checked it (the allowed values of each key are listed there).
    """
    numeric_strategy = params.get("numeric_impute", "median")
    categorical_strategy = params.get("categorical_impute", "most_frequent")
    scale = params.get("scale_numeric", "none")
    onehot_options = {
        "min_frequency": params.get("onehot_min_frequency"),
        "max_categories": params.get("onehot_max_categories"),
    }
    numeric = [f["name"] for f in schema["features"] if f["type"] == NUMERIC]
    categorical = [f for f in schema["features"] if f["type"] == CATEGORICAL]
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        imputer = SimpleImputer(strategy=numeric_strategy)
        step: Any = imputer
        if scale == "standard":
            step = Pipeline([("impute", imputer), ("scale", StandardScaler())])
        transformers.append(("num", step, numeric))
    if categorical:
        fill = {"fill_value": "missing"} if categorical_strategy == "constant" else {}
        categories = [
            f["categories"] + (["missing"] if categorical_strategy == "constant" else [])
            for f in categorical
        ]
        encoder = Pipeline(
            [
                (
                    "impute",
                    SimpleImputer(
                        missing_values=MISSING_CATEGORY, strategy=categorical_strategy, **fill
                    ),
                ),
                (
                    "onehot",
                    OneHotEncoder(
                        categories=categories,
                        handle_unknown="ignore",
                        sparse_output=False,
                        **onehot_options,
                    ),
                ),
            ]
        )
        transformers.append(("cat", encoder, [f["name"] for f in categorical]))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)


def build_features(
    train: pd.DataFrame, params: dict[str, Any]
) -> tuple[dict[str, Any], ColumnTransformer, pd.DataFrame]:
    """Learn the schema, fit the preprocessor, return (schema, preprocessor, matrix)."""
    data = params["data"]
    features = params.get("features") or {}
    try:
        task = resolve_task(data, train[data["target"]].dropna())
        schema = learn_feature_schema(
            train,
            data["schema"],
            data["target"],
            data.get("drop_columns") or [],
            task=task,
            unknown_categories=features.get("unknown_categories", "reject"),
        )
    except ValueError as exc:
        raise PipelineError(str(exc)) from exc
    preprocessor = build_preprocessor(schema, features)
    X = to_model_frame(train, schema)
    matrix = preprocessor.fit_transform(X)
    frame = pd.DataFrame(matrix, columns=preprocessor.get_feature_names_out())
    return schema, preprocessor, frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=config.PARAMS_FILE)
    args = parser.parse_args()
    params = load_params(args.params)
    if not config.TRAIN_DATA.is_file():
        raise PipelineError(f"{config.TRAIN_DATA} not found: run the prepare stage first")
    train = pd.read_csv(config.TRAIN_DATA)
    schema, preprocessor, frame = build_features(train, params)
    atomic_write(
        config.FEATURES_ARTIFACT,
        lambda p: joblib.dump({"schema": schema, "preprocessor": preprocessor}, p),
    )
    atomic_write(config.TRAIN_FEATURES, lambda p: frame.to_csv(p, index=False))
    log.info(
        "%s: %d features -> %d model columns%s",
        schema["task"],
        len(schema["features"]),
        frame.shape[1],
        f"; classes {schema['classes']}" if "classes" in schema else "",
    )


if __name__ == "__main__":
    run_cli(main)
