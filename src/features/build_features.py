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

NUMERIC_IMPUTE = ("median", "mean")
CATEGORICAL_IMPUTE = ("most_frequent", "constant")
SCALE_NUMERIC = ("none", "standard")


def _count_or_fraction(params: dict[str, Any], key: str, fraction: bool) -> Any:
    """`features.<key>`: null (off), an int >= 1 (or >= 2 for a category count), or, where
    `fraction`, a float in (0, 1)."""
    value = params.get(key)
    if value is None:
        return None
    ok = (
        isinstance(value, int) and not isinstance(value, bool) and value >= (1 if fraction else 2)
    ) or (fraction and isinstance(value, float) and 0.0 < value < 1.0)
    if not ok:
        allowed = "an int >= 1 or a fraction in (0, 1)" if fraction else "an int >= 2"
        raise PipelineError(f"features.{key} must be null or {allowed}, not {value!r}")
    return value


def build_preprocessor(schema: dict[str, Any], params: dict[str, Any]) -> ColumnTransformer:
    """Impute (and optionally scale) numeric features; impute and one-hot encode
    categorical ones.

    This is the one home of preprocessing: the export stage converts the whole fitted
    pipeline to one ONNX graph with skl2onnx, so another step skl2onnx converts is added
    here (and its key in params.yaml and dvc.yaml), nowhere else. The export's parity
    check refuses, naming the key, a step whose ONNX form does not score as scikit-learn.
    Scaling is off by default (the linear models scale inside the estimator, see
    src.tasks), so tree models see raw values.
    """
    numeric_strategy = params.get("numeric_impute", "median")
    categorical_strategy = params.get("categorical_impute", "most_frequent")
    scale = params.get("scale_numeric", "none")
    if numeric_strategy not in NUMERIC_IMPUTE:
        raise PipelineError(f"features.numeric_impute must be one of {NUMERIC_IMPUTE}")
    if categorical_strategy not in CATEGORICAL_IMPUTE:
        raise PipelineError(f"features.categorical_impute must be one of {CATEGORICAL_IMPUTE}")
    if scale not in SCALE_NUMERIC:
        raise PipelineError(f"features.scale_numeric must be one of {SCALE_NUMERIC}")
    onehot_options = {
        "min_frequency": _count_or_fraction(params, "onehot_min_frequency", fraction=True),
        "max_categories": _count_or_fraction(params, "onehot_max_categories", fraction=False),
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
