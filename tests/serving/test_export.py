"""The export stage: ONNX + model.json that reproduce the scikit-learn pipeline, checked
before they are written; and the server-side loader's start-up checks."""

from __future__ import annotations

import copy
import json
import stat

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import StandardScaler

from src.models import export_model
from src.models.export_model import (
    check_parity,
    export,
    export_metrics,
    preprocessing_spec,
    probe_frame,
)
from src.models.factory import MODEL_BUILDERS
from src.serving.model import ModelLoadError, ServingModel
from src.utils import PipelineError
from tests.conftest import train_bundle
from tests.serving.conftest import PARITY_TOLERANCE


@pytest.mark.parametrize("model_type", sorted(MODEL_BUILDERS))
def test_every_model_type_exports_with_parity(model_type, params, split, tmp_path):
    params = copy.deepcopy(params)
    params["train"].update(model_type=model_type, n_estimators=50, max_iter=30, cv_folds=2)
    bundle = train_bundle(params, split[0])
    frames = {
        "train": split[0],
        "test": split[1],
        "probe": probe_frame(bundle["schema"], 500, seed=1),
    }
    figures = export(bundle, tmp_path / "serving", frames, PARITY_TOLERANCE)
    for name, f in figures.items():
        assert f["rows"] == len(frames[name])
        assert f["label_mismatches"] == 0, (model_type, name, f)
        assert f["max_abs_proba_diff"] <= PARITY_TOLERANCE, (model_type, name, f)
        assert f["preprocessing_identical"]
    # what the server loads predicts like scikit-learn, record by record
    served = ServingModel.load(tmp_path / "serving")
    labels, _ = served.predict(export_model.frame_records(split[1], bundle["schema"]))
    X = export_model.to_model_frame(split[1], bundle["schema"])
    assert labels == bundle["pipeline"].predict(X).tolist()


def test_export_writes_manifest_and_onnx(bundle, split, tmp_path):
    out = tmp_path / "serving"
    export(bundle, out, {"test": split[1]}, PARITY_TOLERANCE, model_sha256="ab" * 32)
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # readable by a non-root server user
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["classes"] == bundle["schema"]["classes"]
    assert manifest["schema"] == bundle["schema"]
    assert manifest["model"]["model_sha256"] == "ab" * 32
    assert manifest["model"]["training_metrics"] == bundle["metadata"]["training_metrics"]
    assert manifest["onnx"]["input_dtype"] == "float32"
    assert [p.name for p in tmp_path.iterdir()] == ["serving"]  # no staging dirs left


def test_export_fails_and_keeps_the_previous_model_when_parity_breaks(
    bundle, split, tmp_path, monkeypatch
):
    out = tmp_path / "serving"
    export(bundle, out, {"test": split[1]}, PARITY_TOLERANCE)
    before = (out / "model.onnx").read_bytes()
    # A converter that gets one tree wrong: the parity check must catch it.
    other = copy.deepcopy(bundle["pipeline"][-1])
    other.estimators_ = other.estimators_[::-1][:20]
    real_convert = export_model.convert_estimator
    monkeypatch.setattr(
        export_model, "convert_estimator", lambda est, w, *a: real_convert(other, w, *a)
    )
    with pytest.raises(PipelineError, match=r"does not reproduce .*test: .*(labels|probabilities)"):
        export(bundle, out, {"test": split[1]}, PARITY_TOLERANCE)
    assert (out / "model.onnx").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["serving"]


def test_export_fails_when_the_numpy_preprocessing_differs(bundle, split, tmp_path, monkeypatch):
    real_spec = export_model.preprocessing_spec

    def wrong_fill(pre, schema):
        spec = real_spec(pre, schema)
        spec["numeric"][0]["fill"] += 1.0  # a wrong median: visible only on rows with nulls
        return spec

    monkeypatch.setattr(export_model, "preprocessing_spec", wrong_fill)
    frames = {"probe": probe_frame(bundle["schema"], 300, seed=2)}
    with pytest.raises(PipelineError, match="probe: the numpy preprocessing differs"):
        export(bundle, tmp_path / "serving", frames, PARITY_TOLERANCE)
    assert not (tmp_path / "serving").exists()


def test_unsupported_preprocessing_is_named(bundle):
    pre = ColumnTransformer([("num", StandardScaler(), ["bill_length_mm"])])
    X = export_model.to_model_frame(
        probe_frame(bundle["schema"], 20, seed=0).fillna(40.0), bundle["schema"]
    )
    pre.fit(X)
    with pytest.raises(PipelineError, match="StandardScaler.*extend preprocessing_spec"):
        preprocessing_spec(pre, bundle["schema"])


def test_probe_records_cover_the_schema(bundle):
    frame = probe_frame(bundle["schema"], 400, seed=3)
    for f in bundle["schema"]["features"]:
        column = frame[f["name"]]
        assert column.isna().any() == f["nullable"]
        if f["type"] == "numeric":
            assert column.min() >= f["min"] and column.max() <= f["max"]
        else:
            assert set(column.dropna()) == set(f["categories"])
    assert probe_frame(bundle["schema"], 50, seed=3).equals(probe_frame(bundle["schema"], 50, 3))


def test_export_metrics_are_flat_numbers(bundle, split, serving_dir):
    served = ServingModel.load(serving_dir)
    figures = {"test": check_parity(bundle["pipeline"], served, split[1], bundle["schema"])}
    metrics = export_metrics(figures, PARITY_TOLERANCE)
    assert metrics["test_rows"] == len(split[1])
    assert metrics["test_label_mismatches"] == 0
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
    out = copy_export(serving_dir, tmp_path)
    garbage = b"\x08\x07this is not an onnx graph"
    manifest = json.loads((out / "model.json").read_text())
    manifest["onnx"]["sha256"] = export_model.sha256_bytes(garbage)
    (out / "model.onnx").write_bytes(garbage)
    (out / "model.json").write_text(json.dumps(manifest))
    model = ServingModel.load(out, open_session=False)  # files are consistent...
    with pytest.raises(ModelLoadError, match=r"ONNX Runtime cannot load .*model.onnx"):
        model.open_session()  # ...but the graph is not
    assert np.isfinite(model.matrix([model.example_record()])).all()
