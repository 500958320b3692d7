"""The export stage inside the real pipeline (`dvc repro` in a copy of the repository)."""

from __future__ import annotations

import json

import pytest

from src.serving.model import ServingModel
from src.utils import sha256_file

pytestmark = pytest.mark.slow


def test_dvc_repro_exports_the_trained_model_with_parity(pipeline_repo):
    figures = json.loads((pipeline_repo / "metrics" / "export.json").read_text())
    model = ServingModel.load(pipeline_repo / "models" / "serving")
    for name in ("train", "test", "probe"):
        assert figures[f"{name}_rows"] > 0
        if model.is_classifier:
            assert figures[f"{name}_label_mismatches"] == 0
            assert figures[f"{name}_max_abs_proba_diff"] <= figures["parity_tolerance"]
        else:
            assert figures[f"{name}_max_rel_diff"] <= figures["parity_tolerance"]
    # the export belongs to the model.joblib next to it, and says which one
    joblib_sha = sha256_file(pipeline_repo / "models" / "model.joblib")
    assert model.manifest["model"]["model_sha256"] == joblib_sha
    # ...and the MLflow run of that model is found by its tag (no run id in the artifact)
    from src.models.tracking import run_id_for_sha

    assert run_id_for_sha(joblib_sha, f"sqlite:///{pipeline_repo / 'mlflow.db'}")
    answers, _ = model.predict([model.example_record()])
    assert answers[0] in model.classes if model.is_classifier else isinstance(answers[0], float)
