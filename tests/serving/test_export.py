"""The export stage: ONNX + model.json that reproduce the scikit-learn pipeline, checked
before they are written; and the server-side loader's start-up checks.

The conversion's mechanics run on the fixture tables (tests/fixture_data.py: binary and
multiclass, categorical and numeric features with nulls; regression's in
tests/unit/test_task_pipeline.py); the configured dataset's model (`bundle`, `serving_dir`)
is exported and checked as well, with the parity figures of its task: labels and
probabilities (classification), values relative to the predictions' spread (regression)."""

from __future__ import annotations

import copy
import json
import stat

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from src.models import export_model
from src.models.export_model import (
    ONNX_PROBABILITIES,
    ONNX_VALUES,
    check_parity,
    export,
    export_metrics,
    frame_records,
    probe_frame,
    to_model_frame,
)
from src.models.factory import MODEL_BUILDERS
from src.params import check as check_params
from src.serving.model import PROBA_DECIMALS, ModelLoadError, ServingModel
from src.tasks import schema_task
from src.utils import PipelineError
from tests.conftest import train_bundle
from tests.serving.conftest import (
    PARITY_TOLERANCE,
    parity_tolerance,
    rewrite_export,
    unrunnable_graph,
)

CLASSIFICATION_FIGURES = {"label_mismatches", "max_abs_proba_diff"}
REGRESSION_FIGURES = {"max_abs_diff", "max_rel_diff"}


def assert_parity(figures: dict, schema: dict, tolerance: float) -> None:
    """The parity figures of the model's task, within `tolerance`: no label differs and
    probabilities within it (classification); values within it, as a share of the
    predictions' standard deviation (regression). Each task reports only its own figures."""
    is_classifier = schema_task(schema).is_classifier
    own, other = (
        (CLASSIFICATION_FIGURES, REGRESSION_FIGURES)
        if is_classifier
        else (REGRESSION_FIGURES, CLASSIFICATION_FIGURES)
    )
    for name, f in figures.items():
        assert own <= set(f) and not other & set(f), (name, sorted(f))
        if is_classifier:
            assert f["label_mismatches"] == 0, (name, f)
            assert f["max_abs_proba_diff"] <= tolerance, (name, f)
        else:
            assert f["max_rel_diff"] <= tolerance, (name, f)
            assert 0 <= f["max_abs_diff"] < float("inf"), (name, f)


@pytest.mark.parametrize("model_type", sorted(MODEL_BUILDERS))
def test_every_model_type_exports_with_parity(model_type, classification_case, tmp_path):
    case = classification_case
    params = copy.deepcopy(case.params)
    # On this small table, 50 trees give exact ties on some probe records (two classes at
    # 0.5, or two of three equally likely): ONNX's float32 sums may break them the other
    # way, which is no mismatch.
    params["train"].update(model_type=model_type, n_estimators=50, max_iter=30, cv_folds=2)
    bundle = train_bundle(params, case.train)
    frames = {
        "train": case.train,
        "test": case.test,
        "probe": probe_frame(bundle["schema"], 500, seed=1),
    }
    figures = export(bundle, tmp_path / "serving", frames, PARITY_TOLERANCE)
    for name, f in figures.items():
        assert f["rows"] == len(frames[name])
        assert f["label_mismatches"] == 0, (model_type, name, f)
        assert f["max_abs_proba_diff"] <= PARITY_TOLERANCE, (model_type, name, f)
    assert figures["probe"]["rows_with_nulls"] > 0  # imputation inside the graph is checked
    # what the server loads predicts like scikit-learn, record by record: its label is
    # scikit-learn's most likely class (one of them, on a tie)
    served = ServingModel.load(tmp_path / "serving")
    labels, _ = served.predict(export_model.frame_records(case.test, bundle["schema"]))
    proba = bundle["pipeline"].predict_proba(
        export_model.to_model_frame(case.test, bundle["schema"])
    )
    column = [bundle["schema"]["classes"].index(label) for label in labels]
    chosen = proba[np.arange(len(labels)), column]
    assert (proba.max(axis=1) - chosen <= 10.0**-PROBA_DECIMALS).all()


def test_the_configured_model_exports_with_parity(bundle, split, params, tmp_path):
    frames = {
        "train": split[0],
        "test": split[1],
        "probe": probe_frame(bundle["schema"], 500, seed=1),
    }
    # what the export stage checks: export.max_abs_proba_diff or export.max_rel_diff
    key = "max_abs_proba_diff" if schema_task(bundle["schema"]).is_classifier else "max_rel_diff"
    tolerance = float(params["export"][key])
    figures = export(bundle, tmp_path / "serving", frames, tolerance)
    assert set(figures) == set(frames)
    assert_parity(figures, bundle["schema"], tolerance)


def test_export_writes_manifest_and_onnx(bundle, split, params, tmp_path):
    out = tmp_path / "serving"
    tolerance = parity_tolerance(params, bundle["schema"])
    export(bundle, out, {"test": split[1]}, tolerance, model_sha256="ab" * 32)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["drift_reference.json", "model.json", "model.onnx"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # readable by a non-root server user
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["task"] == bundle["schema"]["task"]
    if schema_task(bundle["schema"]).is_classifier:
        assert manifest["classes"] == bundle["schema"]["classes"]
        assert manifest["onnx"]["output"] == ONNX_PROBABILITIES
    else:
        assert "classes" not in manifest  # a regressor has none
        assert manifest["onnx"]["output"] == ONNX_VALUES
    assert manifest["schema"] == bundle["schema"]
    assert manifest["model"]["model_sha256"] == "ab" * 32
    assert manifest["model"]["training_metrics"] == bundle["metadata"]["training_metrics"]
    features = bundle["schema"]["features"]
    inputs = manifest["onnx"]["inputs"]  # one ONNX input per feature, in schema order
    assert [i["feature"] for i in inputs] == [f["name"] for f in features]
    assert [i["dtype"] for i in inputs] == [
        "float32" if f["type"] == "numeric" else "string" for f in features
    ]
    assert "preprocessing" not in manifest or isinstance(manifest["preprocessing"], list)
    assert [p.name for p in tmp_path.iterdir()] == ["serving"]  # no staging dirs left


def test_export_follows_the_umask(multiclass_case, tmp_path):
    """The export directory and files get the modes any new ones would, not mkdtemp's 0700."""
    import os

    previous = os.umask(0o027)
    try:
        export(multiclass_case.bundle, tmp_path / "serving", {"test": multiclass_case.test}, 1e-5)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "serving").stat().st_mode) == 0o750
    for name in ("model.json", "model.onnx"):
        assert stat.S_IMODE((tmp_path / "serving" / name).stat().st_mode) == 0o640, name


def test_export_fails_and_keeps_the_previous_model_when_parity_breaks(
    multiclass_case, tmp_path, monkeypatch
):
    case = multiclass_case
    params = copy.deepcopy(case.params)
    params["train"].update(model_type="random_forest", n_estimators=40, cv_folds=2)
    bundle = train_bundle(params, case.train)
    out = tmp_path / "serving"
    export(bundle, out, {"test": case.test}, PARITY_TOLERANCE)
    before = (out / "model.onnx").read_bytes()
    # A converter that gets trees wrong: the parity check must catch it.
    other = copy.deepcopy(bundle["pipeline"])
    other.steps[-1][1].estimators_ = other.steps[-1][1].estimators_[::-1][:20]
    real_convert = export_model.convert_pipeline
    monkeypatch.setattr(export_model, "convert_pipeline", lambda pipe, *a: real_convert(other, *a))
    with pytest.raises(PipelineError, match=r"does not reproduce .*test: .*(labels|probabilities)"):
        export(bundle, out, {"test": case.test}, PARITY_TOLERANCE)
    assert (out / "model.onnx").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["serving"]


def test_export_fails_when_the_graphs_preprocessing_differs(multiclass_case, tmp_path, monkeypatch):
    bundle = multiclass_case.bundle
    wrong = copy.deepcopy(bundle["pipeline"])
    _, numeric, columns = next(t for t in wrong[0].transformers_ if t[0] == "num")
    imputer = numeric.named_steps["impute"] if isinstance(numeric, Pipeline) else numeric
    nullable = {f["name"] for f in bundle["schema"]["features"] if f["nullable"]}
    column = next(i for i, name in enumerate(columns) if name in nullable)
    imputer.statistics_[column] += 1.0  # a wrong median: visible only on rows with nulls
    real_convert = export_model.convert_pipeline
    monkeypatch.setattr(export_model, "convert_pipeline", lambda pipe, *a: real_convert(wrong, *a))
    frames = {"probe": probe_frame(bundle["schema"], 300, seed=2)}
    with pytest.raises(PipelineError, match="probe: .*(labels|probabilities) differ"):
        export(bundle, tmp_path / "serving", frames, PARITY_TOLERANCE)
    assert not (tmp_path / "serving").exists()


def retrained(case, features=None, **train):
    """The fixture table's model with other `features:` / `train:` params."""
    params = copy.deepcopy(case.params)
    params["features"].update(features or {})
    params["train"].update(n_estimators=30, max_iter=30, cv_folds=2, **train)
    return train_bundle(params, case.train)


def test_a_scaler_ahead_of_a_linear_model_exports_with_parity(multiclass_case, tmp_path):
    case = multiclass_case
    bundle = retrained(case, {"scale_numeric": "standard"}, model_type="logistic_regression")
    scaler = bundle["pipeline"][0].named_transformers_["num"]
    assert isinstance(scaler, Pipeline) and "scale" in scaler.named_steps
    frames = {"test": case.test, "probe": probe_frame(bundle["schema"], 500, seed=4)}
    figures = export(bundle, tmp_path / "serving", frames, PARITY_TOLERANCE)
    for f in figures.values():
        assert f["label_mismatches"] == 0 and f["max_abs_proba_diff"] <= PARITY_TOLERANCE


def test_a_scaler_ahead_of_trees_is_refused_or_exact(multiclass_case, tmp_path):
    # ONNX Runtime scales in float32, so values can move across split thresholds (measured
    # 0.1-0.8 max |dp| on the penguins demo): the export either reproduces scikit-learn or
    # refuses naming the param, never serves a different model.
    case = multiclass_case
    bundle = retrained(case, {"scale_numeric": "standard"}, model_type="random_forest")
    frames = {"train": case.train, "probe": probe_frame(bundle["schema"], 2000, seed=42)}
    try:
        figures = export(bundle, tmp_path / "serving", frames, PARITY_TOLERANCE)
    except PipelineError as exc:
        assert str(exc).startswith("export: features.scale_numeric: standard with a tree")
        assert not (tmp_path / "serving").exists()
    else:
        assert all(f["max_abs_proba_diff"] <= PARITY_TOLERANCE for f in figures.values())


@pytest.mark.parametrize(
    ("key", "value"), [("onehot_min_frequency", 70), ("onehot_max_categories", 2)]
)
def test_infrequent_categories_are_refused_naming_the_key(key, value, multiclass_case, tmp_path):
    # the fixture's colour has 3 categories of ~55 training rows each: both settings group
    bundle = retrained(multiclass_case, {key: value})
    encoder = bundle["pipeline"][0].named_transformers_["cat"].named_steps["onehot"]
    assert any(c is not None for c in encoder.infrequent_categories_)
    match = rf"^export: features.{key}: skl2onnx .* cannot convert"
    with pytest.raises(PipelineError, match=match) as raised:
        export(bundle, tmp_path / "serving", {"test": multiclass_case.test}, PARITY_TOLERANCE)
    assert "\n" not in str(raised.value)  # one line


def test_infrequent_options_that_group_nothing_export_with_parity(multiclass_case, tmp_path):
    bundle = retrained(multiclass_case, {"onehot_min_frequency": 1})
    figures = export(bundle, tmp_path / "serving", {"test": multiclass_case.test}, PARITY_TOLERANCE)
    assert figures["test"]["label_mismatches"] == 0


def test_bad_preprocessing_params_are_named(multiclass_case):
    for features, key in (
        ({"scale_numeric": "minmax"}, "scale_numeric"),
        ({"onehot_min_frequency": -1}, "onehot_min_frequency"),
        ({"onehot_max_categories": 1.5}, "onehot_max_categories"),
    ):
        params = copy.deepcopy(multiclass_case.params)
        params["features"].update(features)
        with pytest.raises(PipelineError, match=f"params.yaml: features.{key}: "):
            check_params(params)  # what every stage runs first (load_params)


def test_nulls_and_unseen_categories_score_as_in_scikit_learn(multiclass_case, tmp_path):
    # colour: nullable category; site: category without nulls; size: nullable number
    bundle = retrained(multiclass_case, {"unknown_categories": "ignore"})
    schema = bundle["schema"]
    export(bundle, tmp_path / "serving", {"test": multiclass_case.test}, PARITY_TOLERANCE)
    served = ServingModel.load(tmp_path / "serving")
    frame = multiclass_case.test.head(12).copy()
    frame.loc[frame.index[:4], "colour"] = None
    frame.loc[frame.index[4:8], "site"] = "Atlantis"  # never seen in training
    frame.loc[frame.index[8:10], "size"] = None
    frame.loc[frame.index[10:], ["colour", "site"]] = ["", ""]  # a client's "" is missing
    records = frame_records(frame, schema)
    assert records[10]["colour"] is None and records[4]["site"] == "Atlantis"
    labels, proba = served.predict(records)
    X = to_model_frame(frame, schema)
    assert labels == bundle["pipeline"].predict(X).tolist()
    np.testing.assert_allclose(proba, bundle["pipeline"].predict_proba(X), atol=PARITY_TOLERANCE)
    # the client's "" directly (the contract lets any string through with ignore)
    raw = [dict(r, colour="") if r["colour"] is None else r for r in records]
    assert served.predict(raw)[0] == labels


@pytest.mark.parametrize("which", ["configured", "multiclass"])
def test_probe_records_cover_the_schema(which, bundle, multiclass_case):
    if which == "multiclass":
        bundle = multiclass_case.bundle
    frame = probe_frame(bundle["schema"], 400, seed=3)
    for f in bundle["schema"]["features"]:
        column = frame[f["name"]]
        assert column.isna().any() == f["nullable"]
        if f["type"] == "numeric":  # half the values are rounded to 1 decimal
            assert column.min() >= f["min"] - 0.05 and column.max() <= f["max"] + 0.05
        else:
            assert set(column.dropna()) == set(f["categories"])
    assert probe_frame(bundle["schema"], 50, seed=3).equals(probe_frame(bundle["schema"], 50, 3))


def test_export_metrics_are_flat_numbers(bundle, split, params, serving_dir):
    served = ServingModel.load(serving_dir)
    figures = {"test": check_parity(bundle["pipeline"], served, split[1], bundle["schema"])}
    tolerance = parity_tolerance(params, bundle["schema"])
    metrics = export_metrics(figures, tolerance)
    assert metrics["parity_tolerance"] == tolerance
    assert metrics["test_rows"] == len(split[1])
    if schema_task(bundle["schema"]).is_classifier:
        assert metrics["test_label_mismatches"] == 0
        assert metrics["test_max_abs_proba_diff"] <= tolerance
        assert "test_max_rel_diff" not in metrics
    else:  # regression: the relative gap only (metrics/export.json's regression figure)
        assert metrics["test_max_rel_diff"] <= tolerance
        assert not {"test_label_mismatches", "test_max_abs_proba_diff"} & set(metrics)
    assert all(isinstance(v, int | float) for v in metrics.values())


# -- the loader's start-up checks: each names the file and the problem ---------------------


def copy_export(serving_dir, tmp_path):
    out = tmp_path / "copy"
    out.mkdir(parents=True)
    for p in serving_dir.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    return out


def test_missing_model(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model directory not found: .*nowhere"):
        ServingModel.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"model manifest not found: .*empty/model.json"):
        ServingModel.load(tmp_path / "empty")


def test_missing_onnx(serving_dir, tmp_path):
    out = copy_export(serving_dir, tmp_path)
    (out / "model.onnx").unlink()
    with pytest.raises(ModelLoadError, match=r"ONNX model not found: .*copy/model.onnx"):
        ServingModel.load(out)


def test_truncated_onnx(serving_dir, tmp_path):
    out = copy_export(serving_dir, tmp_path)
    data = (out / "model.onnx").read_bytes()
    (out / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"model.onnx does not match its manifest.*truncated"):
        ServingModel.load(out)


def test_truncated_manifest(serving_dir, tmp_path):
    out = copy_export(serving_dir, tmp_path)
    text = (out / "model.json").read_text()
    (out / "model.json").write_text(text[: len(text) // 2])
    with pytest.raises(ModelLoadError, match=r"truncated or not JSON: .*copy/model.json"):
        ServingModel.load(out)


def test_foreign_files(serving_dir, tmp_path):
    out = copy_export(serving_dir, tmp_path)
    (out / "model.json").write_text(json.dumps({"weights": [1, 2]}))
    with pytest.raises(ModelLoadError, match=r"not an MLOperation serving manifest: .*model.json"):
        ServingModel.load(out)
    out = copy_export(serving_dir, tmp_path / "b")
    manifest = json.loads((out / "model.json").read_text())
    manifest["format_version"] = 99
    (out / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="version 99"):
        ServingModel.load(out)


def test_onnx_that_onnxruntime_cannot_run(serving_dir, tmp_path):
    out = rewrite_export(serving_dir, tmp_path / "copy", onnx_bytes=unrunnable_graph(serving_dir))
    model = ServingModel.load(out, open_session=False)  # files are consistent...
    with pytest.raises(ModelLoadError, match=r"ONNX Runtime cannot load .*model.onnx"):
        model.open_session()  # ...but the graph is not
    feeds = model.feeds([model.example_record()])
    assert len(feeds) == len(model.schema["features"])
