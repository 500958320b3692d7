"""Stage `export`: convert the trained model for serving and prove it predicts the same.

    python -m src.models.export_model [--params params.yaml]

Reads `models/model.joblib`; writes `models/serving/` (`model.onnx`: the fitted estimator
converted with skl2onnx; `model.json`: feature schema, preprocessing parameters, classes,
identity) and `metrics/export.json` (the parity figures). The predictor (flask_app/) needs
only numpy + onnxruntime to serve it: preprocessing runs in numpy from the exported
imputer fill values and one-hot columns.

Before anything is written, the exported files are loaded exactly as the server loads them
and scored on the whole train and test sets and on seeded random records drawn from the
schema (with nulls): every label must equal scikit-learn's (on a tie between classes,
either of them) and every probability must be within `export.max_abs_proba_diff` of it, or
the stage fails and the previous export stays.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from flask_app.model import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    ONNX_FILE,
    PROBA_DECIMALS,
    ServingModel,
    sha256_bytes,
)
from src import config
from src.features.schema import CATEGORICAL, NUMERIC, to_model_frame
from src.models.artifact import ModelLoadError, load_model
from src.utils import PipelineError, git_commit, load_params, run_cli, sha256_file, write_json

log = logging.getLogger(__name__)

SERVING_DIR = config.MODELS_DIR / "serving"
EXPORT_METRICS_FILE = config.METRICS_DIR / "export.json"
ONNX_INPUT = "X"
ONNX_PROBABILITIES = "probabilities"
TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}


# -- preprocessing: fitted ColumnTransformer -> plain parameters ---------------------------


def _unsupported(step: Any, why: str) -> PipelineError:
    return PipelineError(
        f"export: cannot serve preprocessing step {type(step).__name__} ({why}); the predictor "
        "knows SimpleImputer on numeric columns and [SimpleImputer +] OneHotEncoder on "
        "categorical ones - extend preprocessing_spec() in src/models/export_model.py and "
        "ServingModel.matrix() in flask_app/model.py together"
    )


def _check_imputer(imputer: SimpleImputer) -> list[Any]:
    if imputer.add_indicator:
        raise _unsupported(imputer, "add_indicator=True")
    stats = list(imputer.statistics_)
    if any(isinstance(s, float) and np.isnan(s) for s in stats):
        raise _unsupported(imputer, "a column was empty in training")
    return stats


def preprocessing_spec(preprocessor: ColumnTransformer, schema: dict[str, Any]) -> dict[str, Any]:
    """The fitted preprocessor as data: where each feature lands in the model's input
    matrix and what fills its nulls (numeric: the imputer statistic; categorical: the
    imputed category, then one column per known category)."""
    kinds = {f["name"]: f["type"] for f in schema["features"]}
    numeric: list[dict[str, Any]] = []
    categorical: list[dict[str, Any]] = []
    offset = 0
    for name, step, columns in preprocessor.transformers_:
        if step == "drop" or (name == "remainder" and not len(columns)):
            continue
        columns = list(columns)
        if isinstance(step, SimpleImputer):
            fills = _check_imputer(step)
            for column, fill in zip(columns, fills, strict=True):
                if kinds.get(column) != NUMERIC:
                    raise _unsupported(step, f"{column!r} is not a numeric feature")
                numeric.append({"name": column, "column": offset, "fill": float(fill)})
                offset += 1
            continue
        steps = step.steps if isinstance(step, Pipeline) else [(None, step)]
        imputer = steps[0][1] if len(steps) == 2 else None
        encoder = steps[-1][1]
        if not isinstance(encoder, OneHotEncoder) or len(steps) > 2:
            raise _unsupported(step, f"transformer {name!r}")
        if imputer is not None and not isinstance(imputer, SimpleImputer):
            raise _unsupported(imputer, f"transformer {name!r}")
        if encoder.drop_idx_ is not None:
            raise _unsupported(encoder, "drop is set")
        fills = _check_imputer(imputer) if imputer is not None else [None] * len(columns)
        for column, fill, categories in zip(columns, fills, encoder.categories_, strict=True):
            if kinds.get(column) != CATEGORICAL:
                raise _unsupported(step, f"{column!r} is not a categorical feature")
            mapping = {str(c): offset + i for i, c in enumerate(categories)}
            categorical.append(
                {"name": column, "fill": None if fill is None else str(fill), "columns": mapping}
            )
            offset += len(categories)
    width = len(preprocessor.get_feature_names_out())
    if offset != width:
        raise PipelineError(f"export: preprocessing spec has {offset} columns, expected {width}")
    missing = set(kinds) - {f["name"] for f in numeric + categorical}
    if missing:
        raise PipelineError(f"export: features {sorted(missing)} are not used by the model")
    return {"width": width, "numeric": numeric, "categorical": categorical}


# -- estimator -> ONNX ---------------------------------------------------------------------


def _patch_skl2onnx() -> None:
    """skl2onnx 1.20 passes Python bools for HistGradientBoosting's missing-value flags in an
    INTS attribute, which protobuf 7 rejects; pass ints (same meaning)."""
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node
    if getattr(original, "_bools_as_ints", False):
        return

    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        return original(
            *args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs
        )

    add_node._bools_as_ints = True  # type: ignore[attr-defined]
    tree_ensemble.add_node = add_node


def convert_estimator(estimator: Any, width: int) -> bytes:
    """The fitted estimator as ONNX: float32 matrix `X` in, `probabilities` out.

    float32 is what scikit-learn's trees compare internally, so tree models see the same
    values; linear models lose ~1e-7 (checked by the parity test).
    """
    import warnings

    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    _patch_skl2onnx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = convert_sklearn(
            estimator,
            initial_types=[(ONNX_INPUT, FloatTensorType([None, width]))],
            options={id(estimator): {"zipmap": False}},
            target_opset=TARGET_OPSET,
        )
    outputs = [o.name for o in model.graph.output]
    if ONNX_PROBABILITIES not in outputs:
        raise PipelineError(f"export: ONNX model has outputs {outputs}, no {ONNX_PROBABILITIES!r}")
    return model.SerializeToString()


# -- parity --------------------------------------------------------------------------------


def frame_records(frame: pd.DataFrame, schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows as the JSON records a client sends: numbers, strings, None for missing."""
    model_frame = to_model_frame(frame, schema)
    records = []
    for row in model_frame.itertuples(index=False):
        record = {}
        for feature, value in zip(schema["features"], row, strict=True):
            if value is None or (isinstance(value, float) and np.isnan(value)):
                record[feature["name"]] = None
            elif feature["type"] == NUMERIC:
                record[feature["name"]] = float(value)
            else:
                record[feature["name"]] = str(value)
        records.append(record)
    return records


def probe_frame(schema: dict[str, Any], n: int, seed: int) -> pd.DataFrame:
    """Seeded random records over the training ranges and categories, with nulls where the
    schema allows them: inputs the train and test sets never showed the model."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for f in schema["features"]:
        if f["type"] == NUMERIC:
            values = rng.uniform(f["min"], f["max"], n)
            values = np.where(rng.random(n) < 0.5, np.round(values, 1), values)
            column: list[Any] = values.tolist()
        else:
            column = rng.choice(f["categories"], n).tolist()
        if f["nullable"]:
            column = [None if m else v for v, m in zip(column, rng.random(n) < 0.1, strict=True)]
        columns[f["name"]] = column
    return pd.DataFrame(columns)


def check_parity(
    pipeline: Any, model: ServingModel, frame: pd.DataFrame, schema: dict[str, Any]
) -> dict[str, Any]:
    """Score `frame` with scikit-learn and with the served model; compare."""
    X = to_model_frame(frame, schema)
    expected = pipeline.predict_proba(X)
    expected_labels = np.asarray(pipeline.predict(X)).astype(str)
    records = frame_records(frame, schema)
    labels, proba = model.predict(records)
    served_matrix = model.matrix(records)
    sk_matrix = np.asarray(pipeline[:-1].transform(X), dtype=np.float32)
    differ = np.asarray(labels) != expected_labels
    if differ.any():  # a tie (two classes as likely, to the served rounding) breaks either way
        column = {str(c): i for i, c in enumerate(pipeline.classes_)}
        rows = np.flatnonzero(differ)
        ours = expected[rows, [column[expected_labels[r]] for r in rows]]
        theirs = expected[rows, [column[labels[r]] for r in rows]]
        differ[rows] = ours - theirs > 10.0**-PROBA_DECIMALS
    return {
        "rows": len(frame),
        "label_mismatches": int(differ.sum()),
        "max_abs_proba_diff": float(np.abs(proba - expected).max()) if len(frame) else 0.0,
        "preprocessing_identical": bool(np.array_equal(served_matrix, sk_matrix)),
    }


def parity_problems(figures: dict[str, dict[str, Any]], tolerance: float) -> list[str]:
    problems = []
    for name, f in figures.items():
        if f["label_mismatches"]:
            problems.append(f"{name}: {f['label_mismatches']} of {f['rows']} labels differ")
        if f["max_abs_proba_diff"] > tolerance:
            problems.append(
                f"{name}: probabilities differ by up to {f['max_abs_proba_diff']:.3g} "
                f"(tolerance {tolerance:g})"
            )
        if not f["preprocessing_identical"]:
            problems.append(f"{name}: the numpy preprocessing differs from scikit-learn's")
    return problems


# -- the export itself ---------------------------------------------------------------------


def build_manifest(
    bundle: dict[str, Any], onnx_bytes: bytes, spec: dict[str, Any], model_sha256: str | None
) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import skl2onnx

    estimator = bundle["pipeline"][-1]
    meta = bundle["metadata"]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "onnx": {
            "file": ONNX_FILE,
            "sha256": sha256_bytes(onnx_bytes),
            "input": ONNX_INPUT,
            "input_dtype": "float32",
            "probabilities": ONNX_PROBABILITIES,
            "opset": TARGET_OPSET,
        },
        "classes": [str(c) for c in estimator.classes_],
        "schema": bundle["schema"],
        "preprocessing": spec,
        "model": {
            "model_type": meta.get("model_type"),
            "model_sha256": model_sha256,
            "git_commit": meta.get("git_commit"),
            "trained_at": meta.get("trained_at"),
            "mlflow_run_id": meta.get("mlflow_run_id"),
            "training_metrics": meta.get("training_metrics", {}),
            "params": meta.get("params", {}),
            "versions": meta.get("versions", {}),
        },
        "export": {
            "git_commit": git_commit(),
            "versions": {
                "skl2onnx": skl2onnx.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            },
        },
    }


def export(
    bundle: dict[str, Any],
    out_dir: Path,
    frames: dict[str, pd.DataFrame],
    tolerance: float,
    model_sha256: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Convert, verify on `frames`, then (only if parity holds) replace `out_dir`.

    Returns the parity figures per frame; raises PipelineError naming what differs.
    """
    pipeline, schema = bundle["pipeline"], bundle["schema"]
    spec = preprocessing_spec(pipeline[0], schema)
    onnx_bytes = convert_estimator(pipeline[-1], spec["width"])
    manifest = build_manifest(bundle, onnx_bytes, spec, model_sha256)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from a non-root server user
    try:
        (staging / ONNX_FILE).write_bytes(onnx_bytes)
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        (staging / MANIFEST_FILE).write_text(text, encoding="utf-8")
        served = ServingModel.load(staging)  # exactly what the server will load
        figures = {name: check_parity(pipeline, served, f, schema) for name, f in frames.items()}
        problems = parity_problems(figures, tolerance)
        if problems:
            raise PipelineError(
                "export: the ONNX model does not reproduce the scikit-learn pipeline: "
                + "; ".join(problems)
                + f" ({out_dir} left unchanged)"
            )
        _replace_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return figures


def _replace_dir(new: Path, target: Path) -> None:
    """Swap `new` into `target`; a reader sees the old directory or the new one."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def export_metrics(figures: dict[str, dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """Flat, deterministic figures for metrics/export.json (and the PR report)."""
    out: dict[str, Any] = {"parity_tolerance": tolerance}
    for name, f in figures.items():
        out[f"{name}_rows"] = f["rows"]
        out[f"{name}_label_mismatches"] = f["label_mismatches"]
        out[f"{name}_max_abs_proba_diff"] = float(f"{f['max_abs_proba_diff']:.3g}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=config.PARAMS_FILE)
    args = parser.parse_args()
    params = load_params(args.params)
    settings = params.get("export") or {}
    tolerance = float(settings.get("max_abs_proba_diff", 1e-5))
    try:
        bundle = load_model(config.MODEL_FILE)
    except ModelLoadError as exc:
        raise PipelineError(str(exc)) from exc
    frames = {
        "train": pd.read_csv(config.TRAIN_DATA),
        "test": pd.read_csv(config.TEST_DATA),
        "probe": probe_frame(
            bundle["schema"],
            int(settings.get("probe_records", 2000)),
            int(params["base"]["random_state"]),
        ),
    }
    figures = export(bundle, SERVING_DIR, frames, tolerance, sha256_file(config.MODEL_FILE))
    write_json(EXPORT_METRICS_FILE, export_metrics(figures, tolerance))
    log.info("wrote %s; parity: %s", SERVING_DIR, json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    run_cli(main)
