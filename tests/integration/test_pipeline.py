"""The whole pipeline, run by DVC in a temporary copy of the repository."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pandas as pd
import pytest
import yaml

from tests.conftest import copy_repo, run, stages_run

pytestmark = pytest.mark.slow


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
    for key in (
        "accuracy",
        "balanced_accuracy",
        "f1_macro",
        "roc_auc_ovr",
        "log_loss",
        "cv_accuracy_mean",
        "cv_accuracy_std",
    ):
        assert key in scores
    assert scores["balanced_accuracy"] >= 0.95
    for name in (
        "confusion_matrix.csv",
        "feature_importance.csv",
        "roc/Adelie.csv",
        "precision_recall/Gentoo.csv",
        "images/roc.png",
        "images/confusion_matrix.png",
    ):
        assert (repo / "plots" / name).stat().st_size > 0, name
    assert (repo / "plots" / "images" / "roc.png").read_bytes()[:4] == b"\x89PNG"
    with sqlite3.connect(repo / "mlflow.db") as db:
        (runs,) = db.execute("select count(*) from runs where status='FINISHED'").fetchone()
    assert runs == 1


def test_metrics_and_plots_work_with_dvc_commands(pipeline_repo):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], pipeline_repo).stdout)
    (workspace,) = shown.values()
    assert workspace["data"]["metrics/scores.json"]["data"]["accuracy"] >= 0.95
    plots = json.loads(run(["dvc", "plots", "show", "--json"], pipeline_repo).stdout)
    assert "plots/roc/Adelie.csv" in plots["data"]
    assert "Confusion matrix" in plots["data"]


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


def test_forced_repro_is_byte_identical(pipeline_repo, tmp_path):
    first = (pipeline_repo / "metrics" / "scores.json").read_bytes()
    run(
        predict_cmd("data/processed/test.csv", str(tmp_path / "p1.csv")),
        pipeline_repo,
    )
    repo = copy_repo(tmp_path / "again")
    proc = run(["dvc", "repro", "-f"], repo)
    assert stages_run(proc.stdout) == ["prepare", "features", "train", "export", "evaluate"]
    assert (repo / "metrics" / "scores.json").read_bytes() == first
    for name in (
        "confusion_matrix.csv",
        "roc/Gentoo.csv",
        "feature_importance.csv",
        "images/roc.png",
    ):
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
    predictions = pd.read_csv(out)
    test = pd.read_csv(pipeline_repo / "data" / "processed" / "test.csv")
    assert len(predictions) == len(test)
    assert list(predictions.columns) == [
        "prediction",
        "proba_Adelie",
        "proba_Chinstrap",
        "proba_Gentoo",
    ]
    assert (predictions["prediction"] == test["species"]).mean() >= 0.95


def test_batch_predict_rejects_bad_columns_and_writes_nothing(pipeline_repo, tmp_path):
    test = pd.read_csv(pipeline_repo / "data" / "processed" / "test.csv")
    bad = test.drop(columns="island").assign(body_mass_g="heavy")
    bad.to_csv(tmp_path / "bad.csv", index=False)
    out = tmp_path / "out.csv"
    proc = run(
        predict_cmd(str(tmp_path / "bad.csv"), str(out)),
        pipeline_repo,
        check=False,
    )
    assert proc.returncode == 1
    assert "island: missing column" in proc.stderr
    assert "body_mass_g: expected numbers, found 'heavy'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_bad_raw_data_stops_prepare_with_a_named_column(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    import palmerpenguins

    palmerpenguins.load_penguins().drop(columns="bill_depth_mm").to_csv(
        repo / "data" / "external" / "penguins.csv", index=False
    )
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["source"] = "data/external/penguins.csv"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run(["dvc", "repro", "prepare"], repo, check=False)
    assert proc.returncode != 0
    assert "missing column(s): bill_depth_mm" in proc.stdout + proc.stderr
    assert not (repo / "data" / "processed" / "train.csv").exists()
