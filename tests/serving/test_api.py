"""Every endpoint of the predictor and the whole input contract, with the Flask test client.

Three models, all trained in memory and exported like the pipeline's export stage does:
- the CONFIGURED dataset's (`client`, `bundle`, `record`): the endpoints and parity with
  scikit-learn; every request is built from its stored schema (the example record, rows of
  the test set), never written by hand;
- the multiclass FIXTURE table's (tests/fixture_data.py): the contract's mechanics, on a
  schema known to hold categorical and numeric features, nullable and not;
- the regression FIXTURE table's: the endpoints' answers for a regressor, whatever task
  params.yaml configures.
Tests taking `served` run on the first two, tests taking `endpoint` on the configured and the
regression models, tests taking `any_model` on all three. What the task changes (labels and
probabilities, or numbers; classes in /metadata and /metrics) comes from the model's task.
"""

from __future__ import annotations

import html
import io
import json
import random
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flask_app import ConfigError, ModelLoadError, create_app
from src.features.schema import to_model_frame
from src.models.export_model import frame_records
from src.serving.model import ServingModel
from src.tasks import schema_task
from tests.serving.conftest import parity_tolerance

UNKNOWN_FIELD = "not_a_feature"


@dataclass
class Served:
    """One exported model and what a test needs to talk to it."""

    serving_dir: Path
    bundle: dict[str, Any]
    test_records: list[dict[str, Any]]
    tolerance: float  # the export's parity tolerance for the task (conftest.parity_tolerance)
    model_sha256: str  # what the export recorded as the joblib file's hash

    @property
    def schema(self) -> dict[str, Any]:
        return self.bundle["schema"]

    @property
    def is_classifier(self) -> bool:
        return schema_task(self.schema).is_classifier

    @cached_property
    def prediction_scale(self) -> float:
        """Regression: the standard deviation of scikit-learn's predictions on the test
        records (or 1 when constant), the scale `export.max_rel_diff` is a share of."""
        values, _ = sklearn_predict(self.bundle, self.test_records)
        return float(np.std(values)) or 1.0

    def assert_matches_sklearn(self, body: dict[str, Any], records: list[dict]) -> None:
        """`body` is /predict's answer for `records`, equal to scikit-learn's: the same
        labels and probabilities within the tolerance (classification), numbers within
        tolerance x the predictions' standard deviation (regression)."""
        expected, proba = sklearn_predict(self.bundle, records)
        if self.is_classifier:
            assert set(body) == {"predictions", "probabilities"}, sorted(body)
            assert body["predictions"] == expected
            assert all(list(p) == self.schema["classes"] for p in body["probabilities"])
            assert np.abs(served_proba(body) - proba).max() <= self.tolerance
            return
        assert set(body) == {"predictions"}, sorted(body)
        values = body["predictions"]
        assert len(values) == len(records)
        assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        gap = np.abs(np.asarray(values, dtype=np.float64) - np.asarray(expected))
        assert gap.max() <= self.tolerance * self.prediction_scale, (gap.max(), self.tolerance)

    @property
    def features(self) -> list[dict[str, Any]]:
        return self.schema["features"]

    @cached_property
    def record(self) -> dict[str, Any]:
        """A valid record: the served model's own example (from the schema)."""
        return ServingModel.load(self.serving_dir, open_session=False).example_record()

    def client(self, **config: Any):
        return create_app({"MODEL_DIR": str(self.serving_dir), **config}).test_client()

    def pick(self, kind: str, nullable: bool | None = None) -> dict[str, Any] | None:
        """The first feature of a type ("numeric"/"categorical"), optionally by nullability."""
        for f in self.features:
            if f["type"] == kind and nullable in (None, f["nullable"]):
                return f
        return None


@pytest.fixture(scope="module")
def configured(serving_dir, bundle, test_records, params) -> Served:
    tolerance = parity_tolerance(params, bundle["schema"])
    return Served(serving_dir, bundle, test_records, tolerance, "0" * 64)


@pytest.fixture(scope="module")
def mixed(fixture_serving_dir, fixture_serving_bundle, multiclass_case) -> Served:
    """The fixture model: its schema has each kind of feature (checked here)."""
    schema = fixture_serving_bundle["schema"]
    served = Served(
        fixture_serving_dir,
        fixture_serving_bundle,
        frame_records(multiclass_case.test, schema),
        parity_tolerance(multiclass_case.params, schema),
        "1" * 64,
    )
    for kind in ("numeric", "categorical"):
        for nullable in (True, False):
            assert served.pick(kind, nullable), f"fixture schema lacks a {kind} {nullable}"
    return served


@pytest.fixture(scope="module")
def regression(regression_serving_dir, regression_serving_bundle, fixture_cases) -> Served:
    """The regression fixture table's model."""
    case, schema = fixture_cases["regression"], regression_serving_bundle["schema"]
    served = Served(
        regression_serving_dir,
        regression_serving_bundle,
        frame_records(case.test, schema),
        parity_tolerance(case.params, schema),
        "2" * 64,
    )
    assert not served.is_classifier
    return served


@pytest.fixture(scope="module", params=["configured", "mixed"])
def served(request) -> Served:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module", params=["configured", "regression"])
def endpoint(request) -> Served:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module", params=["configured", "mixed", "regression"])
def any_model(request) -> Served:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def record(configured) -> dict[str, Any]:
    return configured.record


def post(client, body, content_type="application/json"):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post("/predict", data=data, content_type=content_type)


def without(record: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != name}


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
    """scikit-learn's (labels, probabilities) for classification, (values, None) for
    regression."""
    frame = to_model_frame(pd.DataFrame(records), bundle["schema"])
    pipeline = bundle["pipeline"]
    if not schema_task(bundle["schema"]).is_classifier:
        return pipeline.predict(frame).astype(np.float64).tolist(), None
    return pipeline.predict(frame).tolist(), pipeline.predict_proba(frame)


def served_proba(body) -> np.ndarray:
    return np.array([list(p.values()) for p in body["probabilities"]])


# -- the endpoints (configured model) ------------------------------------------------------


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


def test_metadata_identifies_the_model(endpoint):
    meta = endpoint.client().get("/metadata").get_json()
    bundle = endpoint.bundle
    assert meta["model_sha256"] == endpoint.model_sha256  # the joblib hash the export recorded
    assert len(meta["onnx_sha256"]) == 64
    assert "git_commit" in meta  # the image's revision (GIT_COMMIT), else null
    assert "trained_at" not in meta and "mlflow_run_id" not in meta  # not in the export
    assert meta["training_metrics"] == bundle["metadata"]["training_metrics"]
    assert meta["task"] == bundle["schema"]["task"]
    if endpoint.is_classifier:
        assert meta["classes"] == bundle["schema"]["classes"]
    else:
        assert not meta.get("classes"), meta.get("classes")  # a regressor has none
    assert meta["schema"] == bundle["schema"]


def test_predict_one_record_matches_sklearn(endpoint):
    response = post(endpoint.client(), endpoint.record)
    assert response.status_code == 200
    endpoint.assert_matches_sklearn(response.get_json(), [endpoint.record])


def test_predict_batch_matches_sklearn_on_the_test_set(any_model):
    client = any_model.client()
    nullable = [f["name"] for f in any_model.features if f["nullable"]]
    records = any_model.test_records + [
        {**r, **dict.fromkeys(nullable)} for r in any_model.test_records[:20]
    ]
    response = post(client, {"instances": records})
    assert response.status_code == 200
    any_model.assert_matches_sklearn(response.get_json(), records)


def metric_samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of a Prometheus text exposition, parsed with
    prometheus_client's own parser (which raises on anything malformed)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_metrics_count_requests_and_predictions(endpoint):
    """Requests by endpoint and status; predicted records by class (classification only:
    a regressor's answers have no class to count). The output is valid Prometheus text."""
    client, record = endpoint.client(), endpoint.record
    for _ in range(3):
        assert post(client, record).status_code == 200
    assert post(client, {"instances": [record, endpoint.test_records[0]]}).status_code == 200
    assert post(client, {**record, UNKNOWN_FIELD: 1}).status_code == 422
    client.get("/nope")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    samples = metric_samples(text)
    requests = "mloperation_requests_total"
    assert sample(samples, requests, endpoint="/predict", status="200") == 4
    assert sample(samples, requests, endpoint="/predict", status="422") == 1
    assert sample(samples, requests, endpoint="other", status="404") == 1
    duration = "mloperation_request_duration_seconds"
    labels = {"endpoint": "/predict", "status": "200"}
    assert sample(samples, duration + "_bucket", **labels, le="+Inf") == 4
    assert sample(samples, duration + "_count", **labels) == 4
    assert 0 < sample(samples, duration + "_sum", **labels) < 60
    predicted = {
        dict(labels)["class"]: v
        for (name, labels), v in samples.items()
        if name == "mloperation_predictions_total"
    }
    if endpoint.is_classifier:
        assert set(predicted) == set(endpoint.schema["classes"])  # every class, 0 or more
        assert sum(predicted.values()) == 5  # records, not requests
    else:
        assert predicted == {}
    info = [labels for (name, labels) in samples if name == "mloperation_model_info"]
    assert len(info) == 1 and dict(info[0])["model_sha256"]
    assert "# TYPE mloperation_request_duration_seconds histogram" in text


def test_constant_model_switch_keeps_the_contract(endpoint):
    client, record = endpoint.client(CONSTANT_MODEL="1"), endpoint.record
    body = post(client, {"instances": [record, endpoint.test_records[0]]}).get_json()
    if endpoint.is_classifier:
        assert body["predictions"] == [endpoint.schema["classes"][0]] * 2
        assert [list(p) for p in body["probabilities"]] == [endpoint.schema["classes"]] * 2
    else:
        assert body == {"predictions": [0.0, 0.0]}  # numbers, as a regressor answers
    assert client.get("/metadata").get_json()["constant_model"] is True
    assert_client_error(post(client, {**record, UNKNOWN_FIELD: 1}), 422, UNKNOWN_FIELD)


# -- documents generated from the schema (both models) -------------------------------------


def test_openapi_document_is_generated_from_the_schema(served):
    client = served.client()
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert {"/predict", "/health", "/ready", "/metadata", "/metrics", "/openapi.json", "/"} <= set(
        doc["paths"]
    )
    record_doc = doc["components"]["schemas"]["Record"]
    assert record_doc["required"] == [f["name"] for f in served.features]
    for f in served.features:
        if f["type"] == "categorical":
            allowed = [c for c in record_doc["properties"][f["name"]]["enum"] if c is not None]
            assert allowed == f["categories"]
    assert record_doc["additionalProperties"] is False
    # The document is as strict as the server: same verdict on valid and invalid records.
    validator = jsonschema.Draft202012Validator({**record_doc, "$defs": {}})
    record = served.record
    cases = [record, {**record, UNKNOWN_FIELD: "red"}, without(record, served.features[-1]["name"])]
    for f in served.features:
        cases.append({**record, f["name"]: None})  # valid exactly where nullable
        if f["type"] == "categorical":
            cases.append({**record, f["name"]: "Mars"})
        else:
            cases.append({**record, f["name"]: str(record[f["name"]])})
    for case in cases:
        assert validator.is_valid(case) == (post(client, case).status_code == 200), case


def test_index_page_has_a_form_generated_from_the_schema(served):
    response = served.client().get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    for feature in served.features:
        assert f'name="{html.escape(feature["name"])}"' in page
        for category in feature.get("categories", []):
            assert f'<option value="{html.escape(category)}"' in page


# -- the input contract: every client error is a 4xx with a JSON body naming the field ----


def test_every_feature_is_required_typed_and_null_checked(served):
    """For each feature of the schema: missing, mistyped, out of range, unknown category and
    null are answered as the contract says, naming that feature."""
    client, record = served.client(), served.record
    for f in served.features:
        name = f["name"]
        assert_client_error(post(client, without(record, name)), 422, name, "missing")
        if f["type"] == "numeric":
            assert_client_error(post(client, {**record, name: "1"}), 422, name, "a number")
            assert_client_error(post(client, {**record, name: True}), 422, name, "boolean")
            assert_client_error(post(client, {**record, name: 1e39}), 422, name, "finite")
            edges = [{**record, name: f["min"]}, {**record, name: f["max"]}]
            assert post(client, {"instances": edges}).status_code == 200
        else:
            assert_client_error(post(client, {**record, name: 3}), 422, name, "expected one of")
            listing = re.escape(", ".join(repr(c) for c in f["categories"]))
            unseen = post(client, {**record, name: "Mars\u2603"})
            pattern = f"unknown category .*; expected one of {listing}"
            assert_client_error(unseen, 422, name, pattern)
            every = [{**record, name: c} for c in f["categories"]]
            assert post(client, {"instances": every}).status_code == 200
        nulled = post(client, {**record, name: None})
        if f["nullable"]:
            assert nulled.status_code == 200, nulled.get_data(as_text=True)
        else:
            assert_client_error(nulled, 422, name, "null is not allowed")


def test_errors_list_every_problem_of_a_record(served):
    first = served.features[0]
    bad = {first["name"]: "x" if first["type"] == "numeric" else 7, UNKNOWN_FIELD: 1}
    error = assert_client_error(post(served.client(), bad), 422)
    fields = {d["field"] for d in error["details"]}
    assert {UNKNOWN_FIELD} | {f["name"] for f in served.features} <= fields


@dataclass(frozen=True)
class Names:
    """A valid record of the mixed model and one feature of each kind, by name."""

    record: dict[str, Any]
    cat: str  # categorical, not nullable
    categories: list[str]  # its categories
    ncat: str  # categorical, nullable
    num: str  # numeric, not nullable


VIOLATIONS = {  # case -> Names -> (body, status, field named, problem pattern)
    "missing field": lambda n: (without(n.record, n.cat), 422, n.cat, "missing"),
    "unknown field": lambda n: ({**n.record, UNKNOWN_FIELD: 1}, 422, UNKNOWN_FIELD, "unknown"),
    "unknown category lists the known ones": lambda n: (
        {**n.record, n.cat: "Mars"},
        422,
        n.cat,
        re.escape(", ".join(repr(c) for c in n.categories)),
    ),
    "category not a string": lambda n: ({**n.record, n.cat: 3}, 422, n.cat, "expected one of"),
    "null where training had none": lambda n: (
        {**n.record, n.cat: None},
        422,
        n.cat,
        "null is not allowed",
    ),
    "number as a string": lambda n: ({**n.record, n.num: "4.5"}, 422, n.num, "expected a number"),
    "boolean": lambda n: ({**n.record, n.num: True}, 422, n.num, "boolean"),
    "list": lambda n: ({**n.record, n.num: [4.5]}, 422, n.num, "expected a number"),
    "object": lambda n: ({**n.record, n.num: {"v": 1}}, 422, n.num, "expected a number"),
    "float over float32": lambda n: ({**n.record, n.num: 1e39}, 422, n.num, "finite"),
    "int over float32": lambda n: ({**n.record, n.num: 10**40}, 422, n.num, "finite"),
    "body is an array": lambda n: ([n.record], 400, "(body)", "array"),
    "body is a number": lambda n: ("42", 400, "(body)", "number"),
    "empty batch": lambda n: ({"instances": []}, 400, "instances", "at least one"),
    "instances not a list": lambda n: ({"instances": n.record}, 400, "instances", "object"),
    "batch with another key": lambda n: (
        {"instances": [n.record], "extra": 1},
        400,
        "extra",
        "unknown",
    ),
    "batch item not an object": lambda n: (
        {"instances": [n.record, "x"]},
        422,
        "instances[1]",
        "expected an object",
    ),
    "batch item with an unknown category": lambda n: (
        {"instances": [n.record, {**n.record, n.ncat: "x"}]},
        422,
        f"instances[1].{n.ncat}",
        "category",
    ),
    "batch over the limit": lambda n: (
        {"instances": [n.record] * 101},
        422,
        "instances",
        "at most 100",
    ),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
def test_schema_violations(mixed, case):
    cat = mixed.pick("categorical", nullable=False)
    names = Names(
        mixed.record,
        cat["name"],
        cat["categories"],
        mixed.pick("categorical", nullable=True)["name"],
        mixed.pick("numeric", nullable=False)["name"],
    )
    body, status, field, problem = VIOLATIONS[case](names)
    assert_client_error(post(mixed.client(MAX_BATCH_SIZE=100), body), status, field, problem)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b'{"a": "b",', "Expecting"),
        (b'{"a": NaN}', "NaN is not allowed"),
        (b'{"a": Infinity}', "Infinity is not allowed"),
        (b'{"a": -Infinity}', "Infinity is not allowed"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a": ' + b"1" * 5000 + b"}", "digits"),
        (b'{"a": "\xff\xfe"}', "position"),
        (b"", "empty"),
        (b"   ", "empty"),
    ],
    ids=lambda v: v[:24] if isinstance(v, bytes) else v,
)
def test_malformed_bodies(client, raw, problem):
    assert_client_error(post(client, raw), 400, "(body)", problem)


def test_number_literal_beyond_float_range_is_422(served):
    num = served.pick("numeric")["name"]
    raw = b"{" + json.dumps(num).encode() + b": 1e999}"  # parses as inf
    assert_client_error(post(served.client(), raw), 422, num, "finite")


def test_echoed_input_cannot_break_the_error_body(mixed):
    # A lone surrogate is valid JSON but cannot be encoded as UTF-8: echoed, it must not 500.
    cat = mixed.pick("categorical")["name"]
    raw = (
        json.dumps({cat: "\ud800"}, ensure_ascii=True)[:-1].encode()
        + b', "\\udc00x": 1, "'
        + b"k" * 5000
        + b'": 2}'
    )
    error = assert_client_error(post(mixed.client(), raw), 422, cat, "unknown category")
    assert all(len(d["field"]) <= 100 for d in error["details"])
    assert any(d["field"] == "\udc00x" for d in error["details"])


def test_wrong_content_type_is_415(client, record):
    assert_client_error(post(client, json.dumps(record), "text/plain"), 415, "Content-Type")
    assert_client_error(
        post(client, json.dumps(record), "application/json; charset=latin-1"), 415, "Content-Type"
    )
    form = client.post("/predict", data=record)  # a browser form post
    assert_client_error(form, 415, "Content-Type")
    assert post(client, json.dumps(record), "application/json; charset=UTF-8").status_code == 200


def test_oversized_body_is_413(configured, record):
    fits = {"instances": [record] * 5}
    limit = len(json.dumps(fits)) + 100
    client = configured.client(MAX_BODY_BYTES=limit)
    body = {"instances": [record] * 30}
    assert len(json.dumps(body)) > limit
    assert_client_error(post(client, body), 413, "(body)", f"larger than {limit} bytes")
    raw = json.dumps(body).encode()
    chunked = client.post(  # no Content-Length: the server must not parse a truncated body
        "/predict",
        input_stream=io.BytesIO(raw),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # as gunicorn sets it
    )
    assert_client_error(chunked, 413, "(body)", f"larger than {limit} bytes")
    assert_client_error(post(client, raw[: limit + 1]), 413, "(body)")  # one byte over
    assert post(client, fits).status_code == 200


def test_a_batch_over_the_record_limit_is_422_not_413(configured, record):
    """1001 records at the default limit (1000): well-formed JSON of a few hundred KB that the
    contract refuses (422 naming the limit); 413 is kept for bodies over MAX_BODY_BYTES."""
    client = configured.client()  # default MAX_BATCH_SIZE and MAX_BODY_BYTES
    limits = client.get("/metadata").get_json()["limits"]
    assert limits["max_batch_size"] == 1000
    body = json.dumps({"instances": [record] * 1001})
    assert len(body) < limits["max_body_bytes"]
    error = assert_client_error(post(client, body), 422, "instances", "at most 1000 records")
    assert "1001 records; the limit is 1000" in error["message"]
    assert post(client, {"instances": [record] * 1000}).status_code == 200
    responses = client.get("/openapi.json").get_json()["paths"]["/predict"]["post"]["responses"]
    assert "1000 records" in responses["422"]["description"]
    assert "records" not in responses["413"]["description"]


def test_unknown_paths_and_methods_answer_json(client):
    assert_client_error(client.get("/nope"), 404, "(path)")
    response = client.get("/predict")
    assert_client_error(response, 405, "(method)", "use")
    assert "POST" in response.headers["Allow"]
    assert_client_error(client.delete("/health"), 405)


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


def test_fuzzed_bodies_never_cause_a_server_error(served):
    """Seeded random bodies: odd values in every field, odd shapes, corrupted bytes."""
    client, record = served.client(MAX_BATCH_SIZE=100), served.record
    rng = random.Random(0)
    categories = [c for f in served.features for c in f.get("categories", [])[:1]]
    values = [
        None, True, False, 0, -1, 2**64, 10**400, 1e308, -1e-320, 3.5, "", "\ud800",
        "x" * 3000, [], [1, 2], {}, {"a": {"b": []}}, "NaN", "1e999", *categories,
    ]  # fmt: skip
    odd_keys = ["x", "instances", "", served.features[0]["name"] + " "]
    valid = json.dumps({"instances": [record, record]}).encode()
    for i in range(1500):
        if i % 3 == 0:
            body = {k: rng.choice(values) if rng.random() < 0.4 else v for k, v in record.items()}
            if rng.random() < 0.3:
                body[rng.choice(odd_keys)] = rng.choice(values)
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


@pytest.mark.parametrize(
    "classes",
    [
        ["only"],
        ["no", "yes"],
        ['quote"', "brace}{", "back\\slash", "%r %s", "k0", "v1", "__import__('os').system('x')"],
        ["é", "日本", "\n", " ", ""],
        [f"class {i}" for i in range(300)],
    ],
)
def test_probability_rows_name_every_class_whatever_its_name(classes):
    """/predict's probability objects, built by a comprehension compiled per model, are
    {class: p} for any class names a dataset brings (the names are values, not source)."""
    from flask_app import _row_dicts

    rows = np.random.default_rng(0).random((5, len(classes))).tolist()
    assert _row_dicts(classes)(rows) == [dict(zip(classes, r, strict=True)) for r in rows]


def _typed(value):
    """A JSON value with the type of every part (1 == 1.0 == True in Python)."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


def _decoded(decode, raw: bytes):
    from flask_app.contract import ClientError

    try:
        return "value", _typed(decode(raw))
    except ClientError as exc:
        return "error", exc.status, exc.body()


def test_the_fast_json_decoder_answers_as_the_standard_library(served):
    """decode_json parses with orjson and falls back to the standard library: on valid,
    malformed and corrupted bodies the outcome (value, or status and message) is the
    standard library's, but for integers beyond 64 bits, which orjson reads as floats."""
    from flask_app.contract import decode_json, decode_json_stdlib

    rng = random.Random(1)
    valid = json.dumps({"instances": [served.record] * 3}).encode()
    odd = [
        b"{}", b"[]", b'"\\ud800"', b'{"a": "\\udc00x"}', b"1e999", b"-0", b"0.0", b"1E5",
        b'{"a":1,"a":2}', b"[1,2,]", b"\xef\xbb\xbf{}", b'"\x01"', b" \n{} \t", b"01",
        b"[" * 1100 + b"]" * 1100, b'{"a": 18446744073709551615}', b'"\xc3\x28"', b"nul",
    ]  # fmt: skip
    bodies = [*odd, valid]
    for _ in range(1500):
        raw = bytearray(valid)
        for _ in range(rng.randint(1, 6)):
            raw[rng.randrange(len(raw))] = rng.choice(b'{}[]",:\\ 0e.-+\xff\x00')
        bodies.append(bytes(raw[: rng.randrange(1, len(raw) + 1)]))
    for raw in bodies:
        assert _decoded(decode_json, raw) == _decoded(decode_json_stdlib, raw), raw[:80]
    big = b'{"a": 18446744073709551616}'
    assert _typed(decode_json(big)) == {"a": ("float", 2.0**64)}  # the one difference
    assert _typed(decode_json_stdlib(big)) == {"a": ("int", 2**64)}
