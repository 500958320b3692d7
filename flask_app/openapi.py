"""The OpenAPI 3.1 document of the predictor, with the request schema generated from the
model's feature schema (so it is as strict as flask_app.contract)."""

from __future__ import annotations

from typing import Any

from flask_app.contract import FLOAT32_MAX


def record_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema of one record: every feature required, no other fields."""
    properties: dict[str, Any] = {}
    for f in schema["features"]:
        if f["type"] == "categorical" and schema.get("unknown_categories", "reject") == "reject":
            prop: dict[str, Any] = {"type": "string", "enum": list(f["categories"])}
            if f["nullable"]:
                prop = {"type": ["string", "null"], "enum": [*f["categories"], None]}
        elif f["type"] == "categorical":  # unknown categories are accepted (and ignored)
            prop = {
                "type": ["string", "null"] if f["nullable"] else "string",
                "examples": list(f["categories"][:20]),
                "description": f"{len(f['categories'])} categories seen in training; "
                "others are scored as none of them",
            }
        else:
            prop = {
                "type": ["number", "null"] if f["nullable"] else "number",
                "minimum": -FLOAT32_MAX,
                "maximum": FLOAT32_MAX,
                "description": f"seen in training: {f['min']:g} to {f['max']:g}",
            }
        if f["nullable"]:
            prop["description"] = (
                prop.get("description", "") + "; null when unknown (imputed as in training)"
            ).lstrip("; ")
        properties[f["name"]] = prop
    return {
        "type": "object",
        "properties": properties,
        "required": [f["name"] for f in schema["features"]],
        "additionalProperties": False,
    }


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


def build_openapi(
    schema: dict[str, Any], classes: list[str], max_batch: int, max_body: int, version: str
) -> dict[str, Any]:
    example = {}
    for f in schema["features"]:
        if f["type"] == "categorical":
            example[f["name"]] = f["categories"][0]
        else:
            example[f["name"]] = round((f["min"] + f["max"]) / 2, 1)
    if classes:
        class_probs = {
            "type": "object",
            "properties": {c: {"type": "number", "minimum": 0, "maximum": 1} for c in classes},
            "required": list(classes),
            "additionalProperties": False,
        }
        response: dict[str, Any] = {
            "type": "object",
            "properties": {
                "predictions": {"type": "array", "items": {"enum": list(classes)}},
                "probabilities": {"type": "array", "items": class_probs},
            },
            "required": ["predictions", "probabilities"],
        }
        answers = f"one of {', '.join(classes[:10])}{' …' if len(classes) > 10 else ''}"
    else:  # regression: a number per record, no probabilities
        response = {
            "type": "object",
            "properties": {"predictions": {"type": "array", "items": {"type": "number"}}},
            "required": ["predictions"],
            "additionalProperties": False,
        }
        answers = "a number"
    client_errors = {
        "400": _error("Malformed JSON, invalid UTF-8, wrong body shape or an empty batch"),
        "408": _error("The body did not arrive within BODY_TIMEOUT seconds"),
        "413": _error(f"Body over {max_body} bytes"),
        "415": _error("Content-Type is not application/json"),
        "422": _error(
            f"A record does not match the feature schema, or a batch over {max_batch} "
            "records (details name the fields and the limit)"
        ),
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "MLOperation predictor",
            "version": version,
            "description": f"Predicts {schema['target']!r} ({answers}) from "
            f"{len(schema['features'])} features. Every client error is a 4xx with a JSON "
            "body naming the offending fields.",
        },
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Predict one record or a batch",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/PredictRequest"},
                                "examples": {
                                    "one record": {"value": example},
                                    "batch": {"value": {"instances": [example, example]}},
                                },
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            "PredictResponse",
                            "Predicted classes and probabilities"
                            if classes
                            else "Predicted values",
                        ),
                        **client_errors,
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness (no model work)",
                    "responses": {"200": _json("Status", "The process answers")},
                }
            },
            "/ready": {
                "get": {
                    "summary": "Readiness: the model is loaded and scores",
                    "responses": {
                        "200": _json("Status", "Ready to predict"),
                        "503": _json("Status", "Not ready"),
                    },
                }
            },
            "/metadata": {
                "get": {
                    "summary": "Model identity: git commit, model hash, metrics, schema, classes",
                    "responses": {"200": {"description": "Model metadata"}},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (all workers)",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format 0.0.4",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1 document"}},
                }
            },
            "/": {
                "get": {
                    "summary": "A form to try a prediction in a browser",
                    "responses": {
                        "200": {"description": "HTML", "content": {"text/html": {}}},
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Record": record_schema(schema),
                "PredictRequest": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Record"},
                        {
                            "type": "object",
                            "properties": {
                                "instances": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Record"},
                                    "minItems": 1,
                                    "maxItems": max_batch,
                                }
                            },
                            "required": ["instances"],
                            "additionalProperties": False,
                        },
                    ]
                },
                "PredictResponse": response,
                "Status": {
                    "type": "object",
                    "properties": {"status": {"type": "string"}},
                    "required": ["status"],
                },
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "message": {"type": "string"},
                                "details": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "field": {"type": "string"},
                                            "problem": {"type": "string"},
                                        },
                                        "required": ["field", "problem"],
                                    },
                                },
                            },
                            "required": ["message", "details"],
                        }
                    },
                    "required": ["error"],
                },
            }
        },
    }
    doc["paths"].update(drift_paths())
    doc["components"]["schemas"].update(drift_schemas())
    return doc


def drift_paths() -> dict[str, Any]:
    """GET /drift and POST /drift/reset (flask_app/drift.py)."""
    off = _error("Drift tracking is off (DRIFT_TRACKING=0)")
    return {
        "/drift": {
            "get": {
                "summary": "Per-feature drift of live traffic against the training data "
                "(PSI, null and unseen-category rates; all workers)",
                "responses": {"200": _json("Drift", "The current drift window"), "404": off},
            }
        },
        "/drift/reset": {
            "post": {
                "summary": "Start a new drift window (Authorization: Bearer DRIFT_RESET_TOKEN)",
                "security": [{"driftResetToken": []}],
                "responses": {
                    "200": _json("Drift", "The new, empty window"),
                    "401": _error("No or a wrong bearer token"),
                    "403": _error("The server has no DRIFT_RESET_TOKEN: reset is disabled"),
                    "404": off,
                },
            }
        },
    }


_NUMBER_OR_NULL = {"type": ["number", "null"]}


def drift_schemas() -> dict[str, Any]:
    feature = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "type": {"enum": ["numeric", "categorical"]},
            "status": {"enum": ["ok", "drift", "insufficient data"]},
            "records": {"type": "integer", "minimum": 0},
            "psi": _NUMBER_OR_NULL,
            "null_rate": _NUMBER_OR_NULL,
            "reference_null_rate": {"type": "number"},
            "unseen_rate": _NUMBER_OR_NULL,
            "reasons": {"type": "array", "items": {"type": "string"}},
            "bins": {"type": "array", "items": {"type": "string"}},
            "observed": {"type": "array", "items": {"type": "number"}},
            "reference": {"type": "array", "items": {"type": "number"}},
        },
        "required": ["name", "type", "status", "records", "psi", "null_rate", "reasons"],
    }
    window = {
        "type": "object",
        "properties": {
            "status": {"enum": ["ok", "drift", "insufficient data"]},
            "drifted": {"type": "array", "items": {"type": "string"}},
            "records": {"type": "integer", "minimum": 0},
            "statistic": {"type": "object"},
            "thresholds": {"type": "object"},
            "min_records": {"type": "integer"},
            "window": {"type": "object"},
            "features": {"type": "array", "items": feature},
        },
        "required": ["status", "drifted", "records", "features", "window"],
    }
    return {
        "DriftWindow": window,
        "Drift": {
            **window,
            "properties": {
                **window["properties"],
                "previous_window": {
                    "oneOf": [{"$ref": "#/components/schemas/DriftWindow"}, {"type": "null"}]
                },
            },
            "required": [*window["required"], "previous_window"],
        },
    }
