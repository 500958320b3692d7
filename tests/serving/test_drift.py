"""Drift: the training reference stored by the export, the statistic (src/serving/drift.py),
`make drift`'s module (src/monitoring/drift.py) and the app's GET /drift and
POST /drift/reset in the Flask test client. The real two-worker server: test_drift_server.py.

Every case runs on the configured dataset's model and on the fixture table's, with data
shifted or resampled from its own training frame (tests/drift_data.py).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time

import jsonschema
import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flask_app import ConfigError, ModelLoadError, create_app
from src.config import ROOT
from src.models.export_model import frame_records
from src.params import check
from src.serving.drift import INSUFFICIENT, Reference, psi
from src.serving.manifest import read_model_dir
from src.utils import ParamsError
from tests.drift_data import resampled, shifted
from tests.serving.conftest import rewrite_export

TOKEN = "t" * 24


@pytest.fixture(params=["configured", "fixture"])
def case(request, serving_dir, split, params, fixture_serving_dir, multiclass_case):
    """(model dir, its training frame, params) of the configured data and the fixture's."""
    if request.param == "configured":
        return serving_dir, split[0], params
    return fixture_serving_dir, multiclass_case.train, multiclass_case.params


def reference_of(model_dir) -> Reference:
    return Reference.from_bytes((model_dir / "drift_reference.json").read_bytes())


# -- the statistic -------------------------------------------------------------------------


def test_one_record_and_batch_binning_agree(case):
    """The server bins one record without numpy and batches with it: the same bins, edges
    included (a value equal to an edge belongs to the bin it closes)."""
    model_dir, train, _ = case
    reference = reference_of(model_dir)
    rng = np.random.default_rng(0)
    for f in reference.features:
        if f.type == "numeric":
            values = [*f.edges.tolist(), *rng.normal(0, 1e3, 50).tolist(), None, float("nan")]
            values += [float(v) for v in train[f.name].dropna().head(50)]
        else:
            values = [*f.categories, "never seen in training", None, "", float("nan")]
        one_by_one = np.zeros(f.size, dtype=np.int64)
        for v in values:
            one_by_one[f.index(v)] += 1
        assert one_by_one.tolist() == f.counts(values).tolist(), f.name


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift():
    q = np.array([30, 30, 40])
    assert psi(q, q) == 0.0
    assert psi(q * 10, q) == pytest.approx(0.0, abs=1e-3)  # proportions, not counts
    small, large = psi(np.array([35, 30, 35]), q), psi(np.array([80, 10, 10]), q)
    assert 0 < small < 0.1 < large
    assert np.isfinite(psi(np.array([100, 0, 0]), q))  # an empty bin: smoothed, finite


def test_reference_counts_the_training_frame(case):
    model_dir, train, _ = case
    reference = reference_of(model_dir)
    assert reference.rows == len(train)
    for f in reference.features:
        assert int(f.train_counts.sum()) + f.train_nulls == len(train)
        if f.type == "numeric":
            assert f.train_nulls == int(train[f.name].isna().sum())
            assert len(f.edges) < reference.data["bins"] and np.all(np.diff(f.edges) > 0)


def test_training_data_itself_has_no_drift(case):
    model_dir, train, _ = case
    reference = reference_of(model_dir)
    columns = {f.name: train[f.name].to_numpy(dtype=object) for f in reference.features}
    summary = reference.summarize(reference.count_columns(columns), min_records=1)
    assert summary["status"] == "ok" and summary["drifted"] == []
    assert all(f["psi"] == pytest.approx(0.0, abs=1e-9) for f in summary["features"])


def test_a_drift_reference_changed_after_export_stops_the_server(case, tmp_path):
    model_dir, _, _ = case
    copy_dir = rewrite_export(model_dir, tmp_path / "m")
    path = copy_dir / "drift_reference.json"
    path.write_text(path.read_text().replace('"bins": 10', '"bins": 11'))
    with pytest.raises(ModelLoadError, match=r"drift reference .*drift_reference.json does not"):
        read_model_dir(copy_dir)
    path.unlink()
    with pytest.raises(ModelLoadError, match=r"drift reference not found: .*drift_reference"):
        create_app({"MODEL_DIR": str(copy_dir)})


def test_params_drift_block_is_strict():
    from src.utils import load_params

    params = load_params(ROOT / "params.yaml")
    bad = copy.deepcopy(params)
    bad["drift"] = {**params["drift"], "bins": 1, "max_psi": "0.2", "window": 5}
    with pytest.raises(ParamsError) as info:
        check(bad)
    lines = info.value.lines()
    assert any(line.startswith("params.yaml: drift.bins: 1: must be an integer") for line in lines)
    assert any(line.startswith("params.yaml: drift.max_psi: '0.2': must be") for line in lines)
    assert any(line.startswith("params.yaml: drift.window: unknown key") for line in lines)


# -- make drift's module -------------------------------------------------------------------


def run_drift(model_dir, params, frame: pd.DataFrame, tmp_path, suffix=".csv"):
    """`python -m src.monitoring.drift` on `frame` written as a file: (exit, stderr, out)."""
    data = tmp_path / f"input{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(data, index=False)
    else:
        frame.to_csv(data, index=False)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    out = tmp_path / "report"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "src.monitoring.drift", "--input", str(data)),
            *("--model-dir", str(model_dir), "--params", str(params_file), "--out", str(out)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stderr, out


def test_make_drift_flags_exactly_the_shifted_features(case, tmp_path):
    model_dir, train, params = case
    frame, changed = shifted(train, read_model_dir(model_dir)[1]["schema"])
    code, stderr, out = run_drift(model_dir, params, frame, tmp_path, ".parquet")
    assert code == 1, stderr
    summary = json.loads((out / "drift.json").read_text())
    assert set(summary["drifted"]) == changed
    report = (out / "report.md").read_text()
    assert "**Drift**" in report
    plots = sorted(p.name for p in out.glob("*.png"))
    assert len(plots) == len(summary["features"])
    assert all(f"](./{p})" in report for p in plots)
    assert (out / plots[0]).read_bytes().startswith(b"\x89PNG")


def test_make_drift_passes_a_resample_of_the_training_data(case, tmp_path):
    model_dir, train, params = case
    code, stderr, out = run_drift(model_dir, params, resampled(train), tmp_path)
    assert code == 0, stderr
    summary = json.loads((out / "drift.json").read_text())
    assert summary["status"] == "ok" and summary["drifted"] == []
    assert max(f["psi"] for f in summary["features"]) < params["drift"]["max_psi"] / 2


def test_make_drift_thresholds_come_from_params(case, tmp_path):
    model_dir, train, params = case
    loose = copy.deepcopy(params)
    loose["drift"]["max_psi"] = 1000.0
    frame, _ = shifted(train, read_model_dir(model_dir)[1]["schema"])
    code, stderr, out = run_drift(model_dir, loose, frame, tmp_path)
    assert code == 0, stderr  # the same shift, judged with a looser threshold
    assert json.loads((out / "drift.json").read_text())["thresholds"]["psi"] == 1000.0


@pytest.mark.parametrize("problem", ["missing", "extra", "mistyped", "too few rows"])
def test_make_drift_refuses_columns_that_do_not_fit(case, tmp_path, problem):
    model_dir, train, params = case
    schema = read_model_dir(model_dir)[1]["schema"]
    frame = resampled(train)
    numeric = next(f["name"] for f in schema["features"] if f["type"] == "numeric")
    last = schema["features"][-1]["name"]
    if problem == "missing":
        frame = frame.drop(columns=[last])
        expected = f"missing {last!r}"
    elif problem == "extra":
        frame["not in the schema"] = 1
        expected = "extra 'not in the schema'"
    elif problem == "mistyped":
        frame[numeric] = "text"
        expected = f"mistyped {numeric!r} (expected finite numbers)"
    else:
        frame = frame.head(params["drift"]["min_records"] - 1)
        expected = f"{len(frame)} rows; drift is judged on at least"
    code, stderr, out = run_drift(model_dir, params, frame, tmp_path)
    assert code == 65
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and expected in errors[0], stderr
    assert not out.exists()


# -- the app (Flask test client) -----------------------------------------------------------


def post_all(client, records, batch: int = 0):
    if batch:
        for i in range(0, len(records), batch):
            response = client.post("/predict", json={"instances": records[i : i + batch]})
            assert response.status_code == 200, response.get_json()
    else:
        for record in records:
            assert client.post("/predict", json=record).status_code == 200


def metric_samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_drift_endpoint_judges_traffic_and_agrees_with_metrics(case):
    model_dir, train, _ = case
    schema = read_model_dir(model_dir)[1]["schema"]
    app = create_app({"MODEL_DIR": str(model_dir), "DRIFT_RESET_TOKEN": TOKEN})
    client = app.test_client()
    body = client.get("/drift").get_json()
    assert body["status"] == INSUFFICIENT and body["records"] == 0
    assert all(f["psi"] is None for f in body["features"])
    frame, changed = shifted(train, schema, rows=400)
    records = frame_records(frame, schema)
    post_all(client, records[:150])
    post_all(client, records[150:], batch=50)
    body = client.get("/drift").get_json()
    assert body["records"] == 400 and set(body["drifted"]) == changed
    doc = client.get("/openapi.json").get_json()
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/Drift", "components": doc["components"]}
    )
    assert list(validator.iter_errors(body)) == []  # the answer is what the document says
    reference = reference_of(model_dir)
    columns = {f["name"]: [r[f["name"]] for r in records] for f in schema["features"]}
    expected = reference.summarize(reference.count_columns(columns))
    assert [f["psi"] for f in body["features"]] == [f["psi"] for f in expected["features"]]
    samples = metric_samples(client.get("/metrics").data.decode())
    for f in body["features"]:
        assert samples[("mloperation_drift_psi", (("feature", f["name"]),))] == f["psi"]
        drifted = samples[("mloperation_drift_drifted", (("feature", f["name"]),))]
        assert drifted == (1.0 if f["name"] in changed else 0.0)
    assert samples[("mloperation_drift_window_records", ())] == 400


def test_drift_reset_needs_the_token(case):
    model_dir, train, _ = case
    schema = read_model_dir(model_dir)[1]["schema"]
    records = frame_records(resampled(train, rows=250), schema)
    closed = create_app({"MODEL_DIR": str(model_dir)}).test_client()
    response = closed.post("/drift/reset", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 403
    assert "DRIFT_RESET_TOKEN" in response.get_json()["error"]["details"][0]["problem"]
    client = create_app({"MODEL_DIR": str(model_dir), "DRIFT_RESET_TOKEN": TOKEN}).test_client()
    post_all(client, records, batch=125)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = client.post("/drift/reset", headers=headers)
        assert response.status_code == 401 and response.get_json()["error"]["details"]
    assert client.get("/drift").get_json()["records"] == 250
    response = client.post("/drift/reset", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and response.get_json()["records"] == 0
    assert client.get("/drift").get_json()["status"] == INSUFFICIENT
    assert client.get("/drift/reset").status_code == 405


def test_drift_window_closes_and_keeps_the_last_window(fixture_serving_dir, multiclass_case):
    schema = read_model_dir(fixture_serving_dir)[1]["schema"]
    records = frame_records(resampled(multiclass_case.train, rows=300), schema)
    app = create_app({"MODEL_DIR": str(fixture_serving_dir), "DRIFT_WINDOW_SECONDS": 1})
    client = app.test_client()
    post_all(client, records, batch=100)
    assert client.get("/drift").get_json()["records"] == 300
    time.sleep(1.1)
    body = client.get("/drift").get_json()
    assert body["records"] == 0 and body["window"]["seconds"] == 1
    previous = body["previous_window"]
    assert previous["records"] == 300 and previous["status"] == "ok"
    assert previous["window"]["ended"] >= previous["window"]["started"] + 1


@pytest.mark.parametrize("flush", ["0", "60"])
def test_a_workers_own_reads_count_its_pending_records(case, flush):
    """Counts wait in the worker up to DRIFT_FLUSH_SECONDS (0: none), but its own /drift
    and /metrics always include them."""
    model_dir, train, _ = case
    schema = read_model_dir(model_dir)[1]["schema"]
    records = frame_records(resampled(train, rows=30), schema)
    app = create_app({"MODEL_DIR": str(model_dir), "DRIFT_FLUSH_SECONDS": flush})
    client = app.test_client()
    post_all(client, records[:10])
    post_all(client, records[10:], batch=10)
    counted = {
        labels: v
        for (name, labels), v in metric_samples(client.get("/metrics").data.decode()).items()
        if name == "mloperation_drift_values_total"
    }
    for f in schema["features"]:
        assert sum(v for labels, v in counted.items() if ("feature", f["name"]) in labels) == 30
    assert client.get("/drift").get_json()["records"] == 30


def test_drift_tracking_off(fixture_serving_dir):
    client = create_app(
        {"MODEL_DIR": str(fixture_serving_dir), "DRIFT_TRACKING": "0"}
    ).test_client()
    assert client.get("/drift").status_code == 404
    assert "DRIFT_TRACKING=0" in client.get("/drift").get_json()["error"]["details"][0]["problem"]
    assert "mloperation_drift" not in client.get("/metrics").data.decode()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "DRIFT_WINDOW_SECONDS",
            "-1",
            r"DRIFT_WINDOW_SECONDS='-1' must be 0 \(no window\) or more",
        ),
        ("DRIFT_RESET_TOKEN", "short", "DRIFT_RESET_TOKEN must be at least 16"),
        ("DRIFT_TRACKING", "maybe", "DRIFT_TRACKING='maybe' is not a boolean"),
        ("DRIFT_FLUSH_SECONDS", "soon", "DRIFT_FLUSH_SECONDS='soon' is not a number"),
        ("DRIFT_FLUSH_SECONDS", "-1", r"must be from 0 \(every request\) to 60 seconds"),
        ("DRIFT_FLUSH_SECONDS", "nan", r"must be from 0 \(every request\) to 60 seconds"),
    ],
)
def test_bad_drift_settings_stop_the_app(fixture_serving_dir, key, value, message):
    with pytest.raises(ConfigError, match=message):
        create_app({"MODEL_DIR": str(fixture_serving_dir), key: value})


def test_openapi_documents_drift(fixture_serving_dir):
    doc = create_app({"MODEL_DIR": str(fixture_serving_dir)}).test_client()
    paths = doc.get("/openapi.json").get_json()["paths"]
    assert set(paths["/drift"]["get"]["responses"]) >= {"200", "404"}
    assert set(paths["/drift/reset"]["post"]["responses"]) >= {"200", "401", "403"}
