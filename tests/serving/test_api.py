"""Every endpoint of the predictor and the whole input contract, with the Flask test client
and a model trained in memory and exported like the pipeline's export stage does."""

from __future__ import annotations

import io
import json
import random
import re

import jsonschema
import numpy as np
import pytest

from flask_app import ConfigError, ModelLoadError, create_app
from src.features.schema import to_model_frame
from tests.serving.conftest import PARITY_TOLERANCE

RECORD = {
    "island": "Biscoe",
    "bill_length_mm": 45.1,
    "bill_depth_mm": 14.5,
    "flipper_length_mm": 215,
    "body_mass_g": 5000,
    "sex": "female",
}


def post(client, body, content_type="application/json"):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post("/predict", data=data, content_type=content_type)


def assert_client_error(response, status, field=None, problem=None):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert all(set(d) == {"field", "problem"} for d in error["details"])
    if field is not None:
        fields = [d["field"] for d in error["details"]]
        assert field in fields, error
        if problem is not None:
            text = next(d["problem"] for d in error["details"] if d["field"] == field)
            assert re.search(problem, text), text
    return error


def sklearn_predict(bundle, records):
    import pandas as pd

    frame = to_model_frame(pd.DataFrame(records), bundle["schema"])
    return bundle["pipeline"].predict(frame).tolist(), bundle["pipeline"].predict_proba(frame)


# -- the endpoints ------------------------------------------------------------------------


def test_health_and_ready(client):
    assert client.get("/health").get_json() == {"status": "ok"}
    response = client.get("/ready")
    assert response.status_code == 200 and response.get_json() == {"status": "ready"}


def test_ready_is_503_when_the_model_cannot_score(app, client, monkeypatch):
    model = app.extensions["mloperation"].model
    monkeypatch.setattr(model, "_session", None)
    monkeypatch.setattr(model, "_onnx_bytes", b"not onnx")
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.get_json()["status"] == "not ready"
    assert "ONNX Runtime cannot load" in response.get_json()["reason"]
    assert client.get("/health").status_code == 200  # liveness does no model work


def test_metadata_identifies_the_model(client, bundle):
    meta = client.get("/metadata").get_json()
    assert meta["model_sha256"] == "0" * 64  # the joblib hash the export stage recorded
    assert len(meta["onnx_sha256"]) == 64
    assert "git_commit" in meta
    assert meta["training_metrics"] == bundle["metadata"]["training_metrics"]
    assert meta["classes"] == bundle["schema"]["classes"]
    assert meta["schema"] == bundle["schema"]


def test_predict_one_record_matches_sklearn(client, bundle):
    response = post(client, RECORD)
    assert response.status_code == 200
    body = response.get_json()
    labels, proba = sklearn_predict(bundle, [RECORD])
    assert body["predictions"] == labels
    assert list(body["probabilities"][0]) == bundle["schema"]["classes"]
    served = np.array([list(p.values()) for p in body["probabilities"]])
    assert np.abs(served - proba).max() <= PARITY_TOLERANCE


def test_predict_batch_matches_sklearn_on_the_test_set(serving_dir, bundle, test_records):
    client = create_app({"MODEL_DIR": str(serving_dir)}).test_client()
    nullable = [f["name"] for f in bundle["schema"]["features"] if f["nullable"]]
    records = test_records + [{**r, **dict.fromkeys(nullable)} for r in test_records[:20]]
    response = post(client, {"instances": records})
    assert response.status_code == 200
    body = response.get_json()
    labels, proba = sklearn_predict(bundle, records)
    assert body["predictions"] == labels
    served = np.array([list(p.values()) for p in body["probabilities"]])
    assert np.abs(served - proba).max() <= PARITY_TOLERANCE


def test_null_allowed_only_where_training_had_missing_values(client, bundle):
    nullable = {f["name"]: f["nullable"] for f in bundle["schema"]["features"]}
    assert nullable["sex"] and not nullable["island"]
    assert post(client, {**RECORD, "sex": None, "bill_length_mm": None}).status_code == 200
    assert_client_error(
        post(client, {**RECORD, "island": None}), 422, "island", "null is not allowed"
    )


def test_openapi_document_is_generated_from_the_schema(client, bundle):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert {"/predict", "/health", "/ready", "/metadata", "/metrics", "/openapi.json", "/"} <= set(
        doc["paths"]
    )
    record = doc["components"]["schemas"]["Record"]
    assert record["required"] == [f["name"] for f in bundle["schema"]["features"]]
    assert record["properties"]["island"]["enum"] == ["Biscoe", "Dream", "Torgersen"]
    assert record["additionalProperties"] is False
    # The document is as strict as the server: same verdict on valid and invalid records.
    validator = jsonschema.Draft202012Validator({**record, "$defs": {}})
    cases = [
        RECORD,
        {**RECORD, "sex": None},
        {**RECORD, "island": "Mars"},
        {**RECORD, "island": None},
        {**RECORD, "body_mass_g": "5000"},
        {**RECORD, "colour": "red"},
        {k: v for k, v in RECORD.items() if k != "sex"},
    ]
    for case in cases:
        assert validator.is_valid(case) == (post(client, case).status_code == 200), case


def test_metrics_count_requests_and_predictions(client):
    for _ in range(3):
        assert post(client, RECORD).status_code == 200
    assert post(client, {"instances": [RECORD, {**RECORD, "island": "Dream"}]}).status_code == 200
    assert post(client, {**RECORD, "island": "Mars"}).status_code == 422
    client.get("/nope")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert samples['mloperation_requests_total{endpoint="/predict",status="200"}'] == "4"
    assert samples['mloperation_requests_total{endpoint="/predict",status="422"}'] == "1"
    assert samples['mloperation_requests_total{endpoint="other",status="404"}'] == "1"
    assert (
        samples[
            'mloperation_request_duration_seconds_bucket{endpoint="/predict",status="200",le="+Inf"}'
        ]
        == "4"
    )
    predicted = sum(
        float(v) for k, v in samples.items() if k.startswith("mloperation_predictions_total")
    )
    assert predicted == 5  # records, not requests
    assert "# TYPE mloperation_request_duration_seconds histogram" in text


def test_index_page_has_a_form_generated_from_the_schema(client, bundle):
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    for feature in bundle["schema"]["features"]:
        assert f'name="{feature["name"]}"' in html
    for category in ("Biscoe", "Dream", "Torgersen"):
        assert f'<option value="{category}"' in html


def test_constant_model_switch_keeps_the_contract(serving_dir):
    client = create_app({"MODEL_DIR": str(serving_dir), "CONSTANT_MODEL": "1"}).test_client()
    body = post(client, {"instances": [RECORD, {**RECORD, "island": "Dream"}]}).get_json()
    assert body["predictions"] == ["Adelie", "Adelie"]
    assert client.get("/metadata").get_json()["constant_model"] is True
    assert_client_error(post(client, {**RECORD, "island": "Mars"}), 422, "island")


# -- the input contract: every client error is a 4xx with a JSON body naming the field ----


@pytest.mark.parametrize(
    ("body", "status", "field", "problem"),
    [
        ({k: v for k, v in RECORD.items() if k != "sex"}, 422, "sex", "missing"),
        ({**RECORD, "colour": "red"}, 422, "colour", "unknown field"),
        ({**RECORD, "island": "Mars"}, 422, "island", "'Biscoe', 'Dream', 'Torgersen'"),
        ({**RECORD, "island": 3}, 422, "island", "expected one of"),
        ({**RECORD, "bill_length_mm": "45.1"}, 422, "bill_length_mm", "expected a number"),
        ({**RECORD, "bill_length_mm": True}, 422, "bill_length_mm", "boolean"),
        ({**RECORD, "bill_length_mm": [45.1]}, 422, "bill_length_mm", "expected a number"),
        ({**RECORD, "bill_length_mm": {"v": 1}}, 422, "bill_length_mm", "expected a number"),
        ({**RECORD, "body_mass_g": 1e39}, 422, "body_mass_g", "finite"),
        ({**RECORD, "body_mass_g": 10**40}, 422, "body_mass_g", "finite"),
        ([RECORD], 400, "(body)", "array"),
        ("42", 400, "(body)", "number"),
        ({"instances": []}, 400, "instances", "at least one"),
        ({"instances": RECORD}, 400, "instances", "object"),
        ({"instances": [RECORD], "extra": 1}, 400, "extra", "unknown"),
        ({"instances": [RECORD, "x"]}, 422, "instances[1]", "expected an object"),
        ({"instances": [RECORD, {**RECORD, "sex": "x"}]}, 422, "instances[1].sex", "category"),
        ({"instances": [RECORD] * 101}, 413, "instances", "at most 100"),
    ],
)
def test_schema_violations(client, body, status, field, problem):
    assert_client_error(post(client, body), status, field, problem)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b'{"island": "Biscoe",', "Expecting"),
        (b'{"island": NaN}', "NaN is not allowed"),
        (b'{"island": Infinity}', "Infinity is not allowed"),
        (b'{"island": -Infinity}', "Infinity is not allowed"),
        (b'{"bill_length_mm": 1e999}', None),  # parses as inf: rejected below as 422
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"bill_length_mm": ' + b"1" * 5000 + b"}", "digits"),
        (b'{"island": "\xff\xfe"}', "position"),
        (b"", "empty"),
        (b"   ", "empty"),
    ],
)
def test_malformed_bodies(client, raw, problem):
    response = post(client, raw)
    if problem is None:
        assert_client_error(response, 422, "bill_length_mm", "finite")
    else:
        assert_client_error(response, 400, "(body)", problem)


def test_echoed_input_cannot_break_the_error_body(client):
    # A lone surrogate is valid JSON but cannot be encoded as UTF-8: echoed, it must not 500.
    raw = b'{"island": "\\ud800", "\\udc00x": 1, "' + b"k" * 5000 + b'": 2}'
    error = assert_client_error(post(client, raw), 422, "island", "unknown category")
    assert all(len(d["field"]) <= 100 for d in error["details"])
    assert any(d["field"] == "\udc00x" for d in error["details"])


def test_wrong_content_type_is_415(client):
    assert_client_error(post(client, json.dumps(RECORD), "text/plain"), 415, "Content-Type")
    assert_client_error(
        post(client, json.dumps(RECORD), "application/json; charset=latin-1"), 415, "Content-Type"
    )
    form = client.post("/predict", data=RECORD)  # a browser form post
    assert_client_error(form, 415, "Content-Type")
    assert post(client, json.dumps(RECORD), "application/json; charset=UTF-8").status_code == 200


def test_oversized_body_is_413(serving_dir):
    client = create_app({"MODEL_DIR": str(serving_dir), "MAX_BODY_BYTES": 2000}).test_client()
    body = {"instances": [RECORD] * 30}
    assert len(json.dumps(body)) > 2000
    assert_client_error(post(client, body), 413, "(body)", "larger than 2000 bytes")
    raw = json.dumps(body).encode()
    chunked = client.post(  # no Content-Length: the server must not parse a truncated body
        "/predict",
        input_stream=io.BytesIO(raw),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # as gunicorn sets it
    )
    assert_client_error(chunked, 413, "(body)", "larger than 2000 bytes")
    assert_client_error(post(client, raw[:2001]), 413, "(body)")  # one byte over
    assert post(client, {"instances": [RECORD] * 5}).status_code == 200


def test_unknown_paths_and_methods_answer_json(client):
    assert_client_error(client.get("/nope"), 404, "(path)")
    response = client.get("/predict")
    assert_client_error(response, 405, "(method)", "use")
    assert "POST" in response.headers["Allow"]
    assert_client_error(client.delete("/health"), 405)


def test_errors_list_every_problem_of_a_record(client):
    error = assert_client_error(
        post(client, {"island": "Mars", "bill_length_mm": "x", "colour": 1}), 422
    )
    fields = {d["field"] for d in error["details"]}
    assert {
        "island",
        "bill_length_mm",
        "colour",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "sex",
    } <= fields


def test_a_batch_of_garbage_gets_a_bounded_answer(client):
    error = assert_client_error(post(client, {"instances": [{"x": 1}] * 100}), 422)
    assert len(error["details"]) <= 50
    assert "+" in error["message"]  # says there are more


# -- configuration and start-up faults ----------------------------------------------------


def test_bad_settings_are_refused(serving_dir):
    with pytest.raises(ConfigError, match="MAX_BATCH_SIZE='lots' is not an integer"):
        create_app({"MODEL_DIR": str(serving_dir), "MAX_BATCH_SIZE": "lots"})
    with pytest.raises(ConfigError, match="CONSTANT_MODEL"):
        create_app({"MODEL_DIR": str(serving_dir), "CONSTANT_MODEL": "maybe"})


def test_model_dir_from_environment(serving_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "absent"))
    with pytest.raises(ModelLoadError, match="absent"):
        create_app()
    monkeypatch.delenv("MODEL_DIR")
    monkeypatch.setenv("MODEL_PATH", str(serving_dir / "model.json"))
    assert create_app().test_client().get("/ready").status_code == 200


def test_fuzzed_bodies_never_cause_a_server_error(client):
    """Seeded random bodies: odd values in every field, odd shapes, corrupted bytes."""
    rng = random.Random(0)
    values = [
        None, True, False, 0, -1, 2**64, 10**400, 1e308, -1e-320, 3.5, "", "Biscoe", "\ud800",
        "x" * 3000, [], [1, 2], {}, {"a": {"b": []}}, "NaN", "1e999",
    ]  # fmt: skip
    valid = json.dumps({"instances": [RECORD, RECORD]}).encode()
    for i in range(1500):
        if i % 3 == 0:
            body = {k: rng.choice(values) if rng.random() < 0.4 else v for k, v in RECORD.items()}
            if rng.random() < 0.3:
                body[rng.choice(["x", "instances", "", "island "])] = rng.choice(values)
            if rng.random() < 0.3:
                body = {"instances": [body] * rng.randint(0, 3)}
            raw = json.dumps(body).encode("utf-8", "surrogatepass")
        elif i % 3 == 1:
            raw = bytearray(valid)
            for _ in range(rng.randint(1, 8)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            raw = bytes(raw)
        else:
            raw = valid[: rng.randrange(len(valid))]
        response = post(client, raw)
        assert response.status_code < 500, (raw, response.get_data(as_text=True))
        if response.status_code != 200:
            assert_client_error(response, response.status_code)
