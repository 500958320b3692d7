"""The model artifact: written atomically, loaded with checks that name the problem.

Mechanics: run on the multiclass fixture model (tests/fixture_data.py), not the configured
dataset."""

import joblib
import pytest

from src.models.artifact import ModelLoadError, load_model, predict, save_model


@pytest.fixture
def bundle(multiclass_case):
    return multiclass_case.bundle


def test_round_trip_predicts_the_same(bundle, multiclass_case, tmp_path):
    path = save_model(bundle, tmp_path / "model.joblib")
    loaded = load_model(path)
    test = multiclass_case.test
    labels1, proba1 = predict(bundle, test)
    labels2, proba2 = predict(loaded, test)
    assert (labels1 == labels2).all()
    assert (proba1.to_numpy() == proba2.to_numpy()).all()
    assert loaded["schema"] == bundle["schema"]


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="model file not found: .*nope.joblib"):
        load_model(tmp_path / "nope.joblib")


def test_empty_file(tmp_path):
    (tmp_path / "m.joblib").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        load_model(tmp_path / "m.joblib")


def test_truncated_file(bundle, tmp_path):
    path = save_model(bundle, tmp_path / "m.joblib")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated or corrupt: .*m.joblib"):
        load_model(path)


def test_foreign_file(tmp_path):
    joblib.dump({"weights": [1, 2, 3]}, tmp_path / "other.joblib")
    with pytest.raises(ModelLoadError, match="not an MLOperation model"):
        load_model(tmp_path / "other.joblib")
    (tmp_path / "text.joblib").write_text("hello, not a pickle")
    with pytest.raises(ModelLoadError, match="text.joblib"):
        load_model(tmp_path / "text.joblib")


def test_failed_save_keeps_previous_model(bundle, tmp_path):
    path = save_model(bundle, tmp_path / "m.joblib")
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - a lambda cannot be pickled
        save_model({**bundle, "metadata": {"bad": lambda: 1}}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.joblib"]
