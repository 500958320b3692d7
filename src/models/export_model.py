"""Stage `export`: convert the trained model for serving and prove it predicts the same.

    python -m src.models.export_model [--params params.yaml]

Reads `models/model.joblib`; writes `models/serving/` (`model.onnx`: the whole fitted
pipeline - preprocessing, float32 cast, estimator - converted by skl2onnx into one graph
with one input per feature; `drift_reference.json`: the training set's bins for drift
monitoring, params `drift:`, src/serving/drift.py; `model.json`: feature schema, those
inputs, classes, identity, both files' sha256) and `metrics/export.json` (the parity
figures). The predictor (flask_app/) needs only
numpy + onnxruntime to serve it, and preprocessing lives in one place:
src/features/build_features.py.

Before anything is written, the exported files are loaded exactly as the server loads them
and scored on the whole train and test sets and on seeded random records drawn from the
schema (with nulls, and with unseen categories when `features.unknown_categories` is
ignore), end to end (records in, answers out). Classification: every label must equal
scikit-learn's (on a tie between classes, either
of them) and every probability be within `export.max_abs_proba_diff` of it;
regression: every prediction within `export.max_rel_diff` of scikit-learn's, relative to
the predictions' standard deviation. Otherwise the stage fails, naming the param to change
where one is to blame, and the previous export stays.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from src import config
from src.features.schema import MISSING_CATEGORY, NUMERIC, to_model_frame
from src.models.artifact import Float32, ModelLoadError, load_model
from src.serving import drift
from src.serving.manifest import (
    CHECKSUM_KEY,
    DRIFT_KEY,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    ONNX_FILE,
    canonical_json,
    manifest_checksum,
    serving_contract,
    sha256_bytes,
)
from src.serving.model import PROBA_DECIMALS, ServingModel
from src.serving.onnx_graph import CONTRACT_KEY
from src.tasks import schema_task
from src.utils import PipelineError, atomic_dir, load_params, run_cli, sha256_file, write_json

log = logging.getLogger(__name__)

SERVING_DIR = config.MODELS_DIR / "serving"
EXPORT_METRICS_FILE = config.METRICS_DIR / "export.json"
ONNX_PROBABILITIES = "probabilities"  # classifiers (skl2onnx, zipmap off)
ONNX_VALUES = "variable"  # regressors (skl2onnx's name for the predicted values)
UNSEEN = "(a category never seen in training)"  # probes the unknown-category policy
TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
GRAPH_NAME = "mloperation"


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


def _round_down_float32(thresholds: np.ndarray) -> np.ndarray:
    """The largest float32 <= each threshold, as float64 (exact in float32)."""
    t32 = thresholds.astype(np.float32)
    above = t32.astype(np.float64) > thresholds
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32.astype(np.float64)


def float32_thresholds(estimator: Any) -> Any:
    """A copy of `estimator` whose tree split thresholds are rounded down to float32.

    The served model compares float32 inputs with float32 thresholds; scikit-learn
    compares them with float64 ones. A float64 threshold between two adjacent float32
    values rounds to the upper one, and a value equal to it then goes left when served
    but right in scikit-learn (seen on scikit-learn's diabetes data: 28.2 vs
    28.1999998). For a float32 x, `x <= t` and `x <= round_down_float32(t)` agree, so
    rounding down makes the two identical. Estimators without trees are returned as is.
    """
    import copy

    found = False
    model = copy.deepcopy(estimator)
    for step in model.steps if hasattr(model, "steps") else [(None, model)]:
        est = step[1]
        if hasattr(est, "_predictors"):  # hist gradient boosting
            for predictors in est._predictors:
                for predictor in predictors:
                    nodes = predictor.nodes
                    nodes["num_threshold"] = _round_down_float32(nodes["num_threshold"])
                    found = True
        trees = getattr(est, "estimators_", None)
        if trees is None and hasattr(est, "tree_"):
            trees = [est]
        for tree in np.ravel(np.asarray(trees, dtype=object)) if trees is not None else []:
            if hasattr(tree, "tree_"):
                threshold = tree.tree_.threshold  # a writable view of the fitted nodes
                threshold[:] = _round_down_float32(threshold)
                found = True
    return model if found else estimator


def _float32_shape(operator: Any) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    (source,) = operator.inputs
    operator.outputs[0].type = FloatTensorType(source.type.shape)


def _float32_converter(scope: Any, operator: Any, container: Any) -> None:
    from onnx import TensorProto

    container.add_node(
        "Cast",
        operator.inputs[0].full_name,
        operator.outputs[0].full_name,
        name=scope.get_unique_operator_name("Float32"),
        to=TensorProto.FLOAT,
    )


def _register_float32() -> None:
    """The converter of artifact.Float32 (a Cast: skl2onnx has none for our own class)."""
    from skl2onnx import update_registered_converter

    update_registered_converter(Float32, "MLOperationFloat32", _float32_shape, _float32_converter)


def onnx_input_types(schema: dict[str, Any]) -> list[tuple[str, Any]]:
    """One ONNX input per feature, in schema order: numeric float32 [N, 1] (NaN for a
    null), categorical string [N, 1] (MISSING_CATEGORY for a null)."""
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    return [
        (
            f["name"],
            FloatTensorType([None, 1]) if f["type"] == NUMERIC else StringTensorType([None, 1]),
        )
        for f in schema["features"]
    ]


def _final_estimator(estimator: Any) -> Any:
    while isinstance(estimator, Pipeline):
        estimator = estimator.steps[-1][1]
    return estimator


def _onehot_keys(pipeline: Any) -> str:
    """The params that turned on OneHotEncoder's infrequent categories, as `features.<key>`."""
    keys = set()
    for _, step, _ in pipeline[0].transformers_:
        for sub in step.steps if isinstance(step, Pipeline) else [(None, step)]:
            if isinstance(sub[1], OneHotEncoder):
                if sub[1].min_frequency is not None:
                    keys.add("features.onehot_min_frequency")
                if sub[1].max_categories is not None:
                    keys.add("features.onehot_max_categories")
    return " / ".join(sorted(keys)) or "features.onehot_*"


def convert_pipeline(
    pipeline: Pipeline, schema: dict[str, Any], is_classifier: bool = True
) -> tuple[bytes, list[dict[str, str]]]:
    """The whole fitted pipeline as one ONNX graph, and its inputs (one per feature:
    {"feature", "name", "dtype"}; skl2onnx makes names like "x 1" into valid ones).

    The graph computes in float32 (ONNX Runtime cannot load the double-precision one);
    the estimator is a copy whose tree thresholds are rounded to float32
    (float32_thresholds), so served trees split as scikit-learn's. Outputs:
    `probabilities` (classifiers) or `variable` (regressors).
    """
    import warnings

    import skl2onnx
    from skl2onnx import convert_sklearn

    _patch_skl2onnx()
    _register_float32()
    estimator = float32_thresholds(pipeline.steps[-1][1])
    served = Pipeline([*pipeline.steps[:-1], (pipeline.steps[-1][0], estimator)])
    wanted = ONNX_PROBABILITIES if is_classifier else ONNX_VALUES
    options = {id(_final_estimator(estimator)): {"zipmap": False}} if is_classifier else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = convert_sklearn(
                served,
                initial_types=onnx_input_types(schema),
                options=options,
                target_opset=TARGET_OPSET,
            )
        except NotImplementedError as exc:
            if "nfrequent categories" not in str(exc):
                raise PipelineError(_cannot_convert(estimator, exc)) from exc
            raise PipelineError(
                f"export: {_onehot_keys(pipeline)}: skl2onnx {skl2onnx.__version__} cannot "
                "convert OneHotEncoder's infrequent categories; set it to null"
            ) from exc
        except Exception as exc:  # skl2onnx raises many types for models it cannot express
            raise PipelineError(_cannot_convert(estimator, exc)) from exc
    outputs = [o.name for o in model.graph.output]
    if wanted not in outputs:
        raise PipelineError(f"export: ONNX model has outputs {outputs}, no {wanted!r}")
    names = [i.name for i in model.graph.input]
    if len(names) != len(schema["features"]):
        raise PipelineError(f"export: ONNX model has inputs {names}, one per feature expected")
    inputs = [
        {
            "feature": f["name"],
            "name": name,
            "dtype": "float32" if f["type"] == NUMERIC else "string",
        }
        for f, name in zip(schema["features"], names, strict=True)
    ]
    return model.SerializeToString(), inputs


def _cannot_convert(estimator: Any, exc: Exception) -> str:
    return (
        f"export: skl2onnx cannot convert the pipeline ({type(estimator).__name__}, "
        f"train.model_type; preprocessing from features.*): {type(exc).__name__}: "
        f"{str(exc)[:200]}"
    ).replace("\n", " ")


# -- parity --------------------------------------------------------------------------------


def frame_records(frame: pd.DataFrame, schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows as the JSON records a client sends: numbers, strings, None for missing."""
    model_frame = to_model_frame(frame, schema)
    records = []
    for row in model_frame.itertuples(index=False):
        record = {}
        for feature, value in zip(schema["features"], row, strict=True):
            if (
                value is None
                or (isinstance(value, float) and np.isnan(value))
                or (feature["type"] != NUMERIC and value == MISSING_CATEGORY)
            ):
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
            if schema.get("unknown_categories", "reject") == "ignore":
                column = [
                    UNSEEN if m else v for v, m in zip(column, rng.random(n) < 0.05, strict=True)
                ]
        if f["nullable"]:
            column = [None if m else v for v, m in zip(column, rng.random(n) < 0.1, strict=True)]
        columns[f["name"]] = column
    return pd.DataFrame(columns)


def check_parity(
    pipeline: Any, model: ServingModel, frame: pd.DataFrame, schema: dict[str, Any]
) -> dict[str, Any]:
    """Score `frame` with scikit-learn and with the served model; compare.

    Classification: labels must be identical, `max_abs_proba_diff` is the largest
    probability gap. Regression: `max_rel_diff` is the largest gap relative to the scale
    of the predictions (their standard deviation, or 1 when they are constant).
    """
    X = to_model_frame(frame, schema)
    records = frame_records(frame, schema)
    served, served_proba = model.predict(records)
    categorical = [f["name"] for f in schema["features"] if f["type"] != NUMERIC]
    known = {f["name"]: set(f.get("categories", ())) for f in schema["features"]}
    figures: dict[str, Any] = {
        "rows": len(frame),
        # what the records exercised besides plain values: imputation, unseen categories
        "rows_with_nulls": int(sum(None in r.values() for r in records)),
        "rows_with_unseen_categories": int(
            sum(
                any(r[c] is not None and r[c] not in known[c] for c in categorical) for r in records
            )
        ),
    }
    if model.is_classifier:
        expected = pipeline.predict_proba(X)
        expected_labels = np.asarray(pipeline.predict(X)).astype(str)
        differ = np.asarray(served) != expected_labels
        if differ.any():  # a tie (two classes as likely, to the served rounding) breaks either way
            column = {str(c): i for i, c in enumerate(pipeline.classes_)}
            rows = np.flatnonzero(differ)
            ours = expected[rows, [column[expected_labels[r]] for r in rows]]
            theirs = expected[rows, [column[served[r]] for r in rows]]
            differ[rows] = ours - theirs > 10.0**-PROBA_DECIMALS
        figures["label_mismatches"] = int(differ.sum())
        figures["max_abs_proba_diff"] = (
            float(np.abs(served_proba - expected).max()) if len(frame) else 0.0
        )
    else:
        expected = np.asarray(pipeline.predict(X), dtype=np.float64)
        scale = float(np.std(expected)) or 1.0
        gap = np.abs(np.asarray(served, dtype=np.float64) - expected)
        figures["max_abs_diff"] = float(gap.max()) if len(frame) else 0.0
        figures["max_rel_diff"] = float(gap.max() / scale) if len(frame) else 0.0
    return figures


def parity_problems(figures: dict[str, dict[str, Any]], tolerance: float) -> list[str]:
    problems = []
    for name, f in figures.items():
        if f.get("label_mismatches"):
            problems.append(f"{name}: {f['label_mismatches']} of {f['rows']} labels differ")
        if f.get("max_abs_proba_diff", 0.0) > tolerance:
            problems.append(
                f"{name}: probabilities differ by up to {f['max_abs_proba_diff']:.3g} "
                f"(tolerance {tolerance:g})"
            )
        if f.get("max_rel_diff", 0.0) > tolerance:
            problems.append(
                f"{name}: predictions differ by up to {f['max_rel_diff']:.3g} of their "
                f"standard deviation (tolerance {tolerance:g})"
            )
    return problems


# -- the export itself ---------------------------------------------------------------------


def drift_reference(schema: dict[str, Any], train: pd.DataFrame, settings: dict[str, Any]) -> bytes:
    """The drift reference of the training frame (src/serving/drift.py), as file bytes:
    indented, sorted JSON, the same bytes for the same data and params."""
    frame = to_model_frame(train, schema)
    columns = {
        f["name"]: frame[f["name"]].to_numpy(dtype=np.float64 if f["type"] == NUMERIC else object)
        for f in schema["features"]
    }
    data = drift.build_reference(
        schema,
        columns,
        bins=int(settings["bins"]),
        thresholds=drift.thresholds_of(settings),
        min_records=int(settings["min_records"]),
    )
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def build_manifest(
    bundle: dict[str, Any],
    onnx_bytes: bytes,
    inputs: list[dict[str, str]],
    model_sha256: str | None,
    reference_bytes: bytes = b"",
) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import skl2onnx

    estimator = bundle["pipeline"][-1]
    meta = bundle["metadata"]
    task = schema_task(bundle["schema"])
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task.name,
        "onnx": {
            "file": ONNX_FILE,
            "sha256": sha256_bytes(onnx_bytes),
            "inputs": inputs,
            "missing_category": MISSING_CATEGORY,
            "output": ONNX_PROBABILITIES if task.is_classifier else ONNX_VALUES,
            "opset": TARGET_OPSET,
        },
        DRIFT_KEY: {"file": drift.REFERENCE_FILE, "sha256": sha256_bytes(reference_bytes)},
        "schema": bundle["schema"],
        # for people: the fitted steps the graph holds (the server reads only "onnx")
        "preprocessing": [repr(step) for _, step in bundle["pipeline"].steps[:-1]],
        # Only facts fixed by the inputs (no time, run id or git commit): the same model
        # exports to the same bytes. The MLflow run is the one tagged model_sha256.
        "model": {
            "model_type": meta.get("model_type"),
            "model_sha256": model_sha256,
            "training_metrics": meta.get("training_metrics", {}),
            "params": meta.get("params", {}),
            "versions": meta.get("versions", {}),
        },
        "export": {
            "versions": {
                "skl2onnx": skl2onnx.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            },
        },
    }
    if task.is_classifier:
        manifest["classes"] = [str(c) for c in estimator.classes_]
    return manifest


def seal(onnx_bytes: bytes, manifest: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The final pair: the graph with a fixed name and the manifest's serving contract in
    its metadata (the server compares the two at start-up), and the manifest with the
    graph's sha256 and its own checksum (manifest_sha256)."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    # skl2onnx names the graph with a random uuid and lists opsets in set order (which
    # PYTHONHASHSEED changes): fix both, so the same model always gives the same bytes
    model.graph.name = GRAPH_NAME
    opsets = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    for domain, version in opsets:
        model.opset_import.add(domain=domain, version=version)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = CONTRACT_KEY, canonical_json(serving_contract(manifest)).decode()
    sealed = model.SerializeToString(deterministic=True)
    manifest = {**manifest, "onnx": {**manifest["onnx"], "sha256": sha256_bytes(sealed)}}
    manifest.pop(CHECKSUM_KEY, None)
    manifest[CHECKSUM_KEY] = manifest_checksum(manifest)
    return sealed, manifest


def export(
    bundle: dict[str, Any],
    out_dir: Path,
    frames: dict[str, pd.DataFrame],
    tolerance: float,
    model_sha256: str | None = None,
    drift_params: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Convert, verify on `frames`, then (only if parity holds) replace `out_dir`.

    The drift reference is taken from `frames["train"]` (the stage always passes it; a
    caller checking parity on other frames only gets the first frame's) with
    `drift_params` (params.yaml's `drift:`; None: its defaults). Returns the parity
    figures per frame; raises PipelineError naming what differs.
    """
    pipeline, schema = bundle["pipeline"], bundle["schema"]
    is_classifier = schema_task(schema).is_classifier
    onnx_bytes, inputs = convert_pipeline(pipeline, schema, is_classifier)
    train = frames["train"] if "train" in frames else next(iter(frames.values()))
    reference = drift_reference(schema, train, drift.settings(drift_params))
    onnx_bytes, manifest = seal(
        onnx_bytes, build_manifest(bundle, onnx_bytes, inputs, model_sha256, reference)
    )
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as staging:
        (staging / ONNX_FILE).write_bytes(onnx_bytes)
        (staging / drift.REFERENCE_FILE).write_bytes(reference)
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        (staging / MANIFEST_FILE).write_text(text, encoding="utf-8")
        served = ServingModel.load(staging)  # exactly what the server will load
        figures = {name: check_parity(pipeline, served, f, schema) for name, f in frames.items()}
        problems = parity_problems(figures, tolerance)
        if problems:
            raise PipelineError(
                _blame(pipeline)
                + "the ONNX model does not reproduce the scikit-learn pipeline: "
                + "; ".join(problems)
                + f" ({out_dir} left unchanged)"
            )
    return figures


def _blame(pipeline: Pipeline) -> str:
    """`export: ` and, when a known combination is the cause, the param to change."""
    estimator = pipeline.steps[-1][1]
    scaled = any(
        isinstance(sub, StandardScaler)
        for _, step, _ in pipeline[0].transformers_
        for _, sub in (step.steps if isinstance(step, Pipeline) else [(None, step)])
    )
    if scaled and float32_thresholds(estimator) is not estimator:  # trees
        return (
            "export: features.scale_numeric: standard with a tree model "
            f"({type(_final_estimator(estimator)).__name__}): ONNX scales in float32, which "
            "moves values across split thresholds (trees need no scaling: use none); "
        )
    return "export: "


def export_metrics(figures: dict[str, dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """Flat, deterministic figures for metrics/export.json (and the PR report)."""
    out: dict[str, Any] = {"parity_tolerance": tolerance}
    for name, f in figures.items():
        out[f"{name}_rows"] = f["rows"]
        for key in ("label_mismatches",):
            if key in f:
                out[f"{name}_{key}"] = f[key]
        for key in ("max_abs_proba_diff", "max_rel_diff"):
            if key in f:
                out[f"{name}_{key}"] = float(f"{f[key]:.3g}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=config.PARAMS_FILE)
    args = parser.parse_args()
    params = load_params(args.params)
    settings = params.get("export") or {}
    try:
        bundle = load_model(config.MODEL_FILE)
    except ModelLoadError as exc:
        raise PipelineError(str(exc)) from exc
    key = "max_abs_proba_diff" if schema_task(bundle["schema"]).is_classifier else "max_rel_diff"
    tolerance = float(settings.get(key, 1e-5))
    frames = {
        "train": pd.read_csv(config.TRAIN_DATA),
        "test": pd.read_csv(config.TEST_DATA),
        "probe": probe_frame(
            bundle["schema"],
            int(settings.get("probe_records", 2000)),
            int(params["base"]["random_state"]),
        ),
    }
    figures = export(
        bundle,
        SERVING_DIR,
        frames,
        tolerance,
        sha256_file(config.MODEL_FILE),
        drift_params=params.get("drift"),
    )
    write_json(EXPORT_METRICS_FILE, export_metrics(figures, tolerance))
    log.info("wrote %s; parity: %s", SERVING_DIR, json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    run_cli(main)
