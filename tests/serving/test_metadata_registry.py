"""GET /metadata's `registry` block: the registered model's name, version and alias the
image was built for (REGISTERED_MODEL_* baked in by the release build), and null for each
when the server was started without them, never a made-up value."""

from __future__ import annotations

from flask_app import create_app

KEYS = ("REGISTERED_MODEL_NAME", "REGISTERED_MODEL_VERSION", "REGISTERED_MODEL_ALIAS")


def metadata(serving_dir) -> dict:
    return create_app({"MODEL_DIR": str(serving_dir)}).test_client().get("/metadata").get_json()


def test_without_a_registry_every_field_is_null(serving_dir, monkeypatch):
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    assert metadata(serving_dir)["registry"] == {"name": None, "version": None, "alias": None}
    for key in KEYS:  # the image's empty build args
        monkeypatch.setenv(key, "")
    assert metadata(serving_dir)["registry"] == {"name": None, "version": None, "alias": None}


def test_the_built_for_version_is_reported(serving_dir, monkeypatch):
    monkeypatch.setenv("REGISTERED_MODEL_NAME", "team-model")
    monkeypatch.setenv("REGISTERED_MODEL_VERSION", "7")
    monkeypatch.setenv("REGISTERED_MODEL_ALIAS", "production")
    assert metadata(serving_dir)["registry"] == {
        "name": "team-model",
        "version": 7,
        "alias": "production",
    }


def test_the_pushed_image_tags_are_reported_and_null_before_publishing(serving_dir, monkeypatch):
    monkeypatch.delenv("MLOPERATION_IMAGE_TAGS", raising=False)
    assert metadata(serving_dir)["image_tags"] is None
    tags = "ghcr.io/acme/churn:1.4.0 ghcr.io/acme/churn:sha-1234567"
    monkeypatch.setenv("MLOPERATION_IMAGE_TAGS", tags)
    assert metadata(serving_dir)["image_tags"] == tags.split()
