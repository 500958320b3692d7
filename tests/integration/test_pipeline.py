"""The whole pipeline, run by DVC in a temporary copy of the repository.

Expectations come from the copy's params.yaml and the model it trained (classes, features),
so the tests hold for whatever dataset params.yaml configures."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from src.data.make_dataset import load_source
from src.models.artifact import load_model
from src.tasks import schema_task
from tests.conftest import copy_repo, run, stages_run
from tests.expectations import gate_bounds

pytestmark = pytest.mark.slow


def repo_params(repo) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def repo_schema(repo) -> dict:
    """The feature schema the pipeline stored with the model."""
    return load_model(repo / "models" / "model.joblib")["schema"]


def assert_meets_gate_minimums(scores: dict, params: dict) -> None:
    minimums = gate_bounds(params)["min"]
    checked = {name: bound for name, bound in minimums.items() if name in scores}
    assert checked, (minimums, sorted(scores))
    for name, bound in checked.items():
        assert scores[name] >= bound, (name, scores[name], bound)


def predict_cmd(input_path: str, out: str) -> list[str]:
    """The seed's batch prediction command, as the README gives it."""
    return [
        "python",
        "-m",
        "src.models.predict_model",
        "--input",
        input_path,
        "--model",
        "models/model.joblib",
        "--out",
        out,
    ]


def test_repro_writes_model_metrics_plots_and_mlflow_run(pipeline_repo):
    repo = pipeline_repo
    assert (repo / "models" / "model.joblib").stat().st_size > 0
    scores = json.loads((repo / "metrics" / "scores.json").read_text())
    schema = repo_schema(repo)
    task = schema_task(schema)
    for key in task.cv_scoring:  # the task's metrics, on the test set and cross-validated
        assert {key, f"cv_{key}_mean", f"cv_{key}_std"} <= set(scores), key
    assert_meets_gate_minimums(scores, repo_params(repo))
    plots = repo / "plots"
    assert (plots / "feature_importance.csv").stat().st_size > 0
    assert (plots / "images" / "feature_importance.png").read_bytes()[:4] == b"\x89PNG"
    if task.is_classifier:
        for name in ("confusion_matrix.csv", "images/roc.png", "images/confusion_matrix.png"):
            assert (plots / name).stat().st_size > 0, name
        for curves in ("roc", "precision_recall"):  # one file per class
            files = sorted((plots / curves).glob("*.csv"))
            assert len(files) == len(schema["classes"]), files
            assert all(f.stat().st_size > 0 for f in files), files
    else:
        for name in ("predictions.csv", "images/predicted_vs_actual.png", "images/residuals.png"):
            assert (plots / name).stat().st_size > 0, name
        assert not (plots / "confusion_matrix.csv").exists()
    with sqlite3.connect(repo / "mlflow.db") as db:
        (runs,) = db.execute("select count(*) from runs where status='FINISHED'").fetchone()
    assert runs == 1


def test_metrics_and_plots_work_with_dvc_commands(pipeline_repo):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], pipeline_repo).stdout)
    (workspace,) = shown.values()
    scores = workspace["data"]["metrics/scores.json"]["data"]
    assert scores == json.loads((pipeline_repo / "metrics" / "scores.json").read_text())
    assert_meets_gate_minimums(scores, repo_params(pipeline_repo))
    plots = json.loads(run(["dvc", "plots", "show", "--json"], pipeline_repo).stdout)
    assert "Feature importance" in plots["data"]
    if "classes" in repo_schema(pipeline_repo):
        roc = sorted(p.relative_to(pipeline_repo) for p in (pipeline_repo / "plots/roc").glob("*"))
        assert roc and all(str(p) in plots["data"] for p in roc)
        assert "Confusion matrix" in plots["data"]
    else:
        assert "Predicted vs actual" in plots["data"]


def test_second_repro_is_a_no_op(pipeline_repo):
    proc = run(["dvc", "repro"], pipeline_repo)
    assert stages_run(proc.stdout) == []
    assert "Data and pipelines are up to date" in proc.stdout


def test_param_change_reruns_only_train_and_evaluate(pipeline_repo, tmp_path):  # and export
    repo = tmp_path / "repo"
    shutil.copytree(pipeline_repo, repo, symlinks=True)  # workspace, cache and lock
    assert stages_run(run(["dvc", "repro"], repo).stdout) == []
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["n_estimators"] = 50
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert stages_run(run(["dvc", "repro"], repo).stdout) == ["train", "export", "evaluate"]


def test_forced_repro_is_byte_identical(pipeline_repo, rerun_repo, tmp_path):
    first = (pipeline_repo / "metrics" / "scores.json").read_bytes()
    run(
        predict_cmd("data/processed/test.csv", str(tmp_path / "p1.csv")),
        pipeline_repo,
    )
    repo = rerun_repo.repo  # another copy, `dvc repro -f` (tests/conftest.py)
    stages = ["prepare", "features", "train", "export", "evaluate"]
    assert stages_run(rerun_repo.stdout) == stages
    assert (repo / "metrics" / "scores.json").read_bytes() == first
    written = sorted(
        str(p.relative_to(pipeline_repo / "plots"))
        for p in (pipeline_repo / "plots").rglob("*")
        if p.is_file()
    )
    assert "feature_importance.csv" in written and "images/feature_importance.png" in written
    for name in written:  # every plot file, data and images, whatever the task
        assert (repo / "plots" / name).read_bytes() == (
            pipeline_repo / "plots" / name
        ).read_bytes(), name
    run(
        predict_cmd("data/processed/test.csv", str(tmp_path / "p2.csv")),
        repo,
    )
    assert (tmp_path / "p1.csv").read_bytes() == (tmp_path / "p2.csv").read_bytes()


def test_seed_batch_predict_command(pipeline_repo, tmp_path):
    out = tmp_path / "reports" / "predictions.csv"
    run(
        predict_cmd("data/processed/test.csv", str(out)),
        pipeline_repo,
    )
    predictions = pd.read_csv(out, dtype={"prediction": str})
    test = pd.read_csv(pipeline_repo / "data" / "processed" / "test.csv")
    schema = repo_schema(pipeline_repo)
    assert len(predictions) == len(test)
    scores = json.loads((pipeline_repo / "metrics" / "scores.json").read_text())
    # the batch command answers as the evaluate stage scored
    if "classes" in schema:
        columns = ["prediction"] + [f"proba_{c}" for c in schema["classes"]]
        assert list(predictions.columns) == columns
        accuracy = (predictions["prediction"] == test[schema["target"]].astype(str)).mean()
        assert round(accuracy, 6) == scores["accuracy"]
    else:
        assert list(predictions.columns) == ["prediction"]
        error = predictions["prediction"].astype(float) - test[schema["target"]]
        assert abs(float(np.sqrt((error**2).mean())) - scores["rmse"]) < 1e-4


def test_batch_predict_rejects_bad_columns_and_writes_nothing(pipeline_repo, tmp_path):
    test = pd.read_csv(pipeline_repo / "data" / "processed" / "test.csv")
    features = repo_schema(pipeline_repo)["features"]
    dropped = features[0]["name"]
    numeric = next(f["name"] for f in features[1:] if f["type"] == "numeric")
    bad = test.drop(columns=dropped).assign(**{numeric: "heavy"})
    bad.to_csv(tmp_path / "bad.csv", index=False)
    out = tmp_path / "out.csv"
    proc = run(
        predict_cmd(str(tmp_path / "bad.csv"), str(out)),
        pipeline_repo,
        check=False,
    )
    assert proc.returncode == 1
    assert f"{dropped}: missing column" in proc.stderr
    assert f"{numeric}: expected numbers, found 'heavy'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_bad_raw_data_stops_prepare_with_a_named_column(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    params = repo_params(repo)
    data = params["data"]
    raw = load_source(str(data["source"]), data.get("sha256"), tmp_path / "download")
    column = next(c for c in data["schema"] if c != data["target"])
    raw.drop(columns=column).to_csv(repo / "data" / "external" / "broken.csv", index=False)
    params["data"]["source"] = "data/external/broken.csv"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run(["dvc", "repro", "prepare"], repo, check=False)
    assert proc.returncode != 0
    assert f"missing column(s): {column}" in proc.stdout + proc.stderr
    assert not (repo / "data" / "processed" / "train.csv").exists()


def snapshot(repo) -> dict:
    """Every file under data/ and models/: its bytes and modification time."""
    return {
        str(p.relative_to(repo)): (p.read_bytes(), p.stat().st_mtime_ns)
        for folder in ("data", "models")
        for p in sorted((repo / folder).rglob("*"))
        if p.is_file()
    }


def test_a_bad_param_stops_make_repro_before_dvc_changes_anything(pipeline_repo, tmp_path):
    # DVC removes a stage's outputs before it runs the stage: the Makefile checks first
    repo = tmp_path / "repo"
    shutil.copytree(pipeline_repo, repo, symlinks=True)
    before = snapshot(repo)
    assert any(name.startswith("data/raw/") for name in before) and "models/model.joblib" in before
    params = repo_params(repo)
    params["split"]["test_size"] = 1.5
    params["train"]["n_estimators"] = "lots"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    venv = Path(sys.executable).parent.parent
    for target in ("repro", "data", "train"):
        proc = run(["make", "-s", target, "RUN_STAMP=", f"VENV={venv}"], repo, check=False)
        assert proc.returncode != 0
        errors = [
            line.split(" ERROR ", 1)[1] for line in proc.stderr.splitlines() if " ERROR " in line
        ]
        assert errors == [
            "params.yaml: split.test_size: 1.5: must be a fraction between 0 and 1 (exclusive)",
            "params.yaml: train.n_estimators: 'lots': must be an integer from 1 to 10000",
        ], proc.stderr
        assert "Traceback" not in proc.stderr and "Running stage" not in proc.stdout
    assert snapshot(repo) == before
