"""MLflow tracking against a real `mlflow server` process started on loopback
(the `mlflow_server` fixture, tests/integration/conftest.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from src.models.tracking import DEFAULT_EXPERIMENT, summary_metrics
from tests.repo_tools import free_port, run, venv_env

pytestmark = pytest.mark.slow

EXPERIMENT = "evaluate-on-the-training-run"  # its own: other tests train on the same server


@pytest.fixture
def repo(pipeline_repo, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(pipeline_repo, copy, symlinks=True)
    return copy


def test_train_logs_run_params_metrics_model_and_artifacts(mlflow_server, repo):
    import mlflow
    from mlflow.tracking import MlflowClient

    from src.models.artifact import load_model, predict

    run(
        ["python", "-m", "src.models.train_model"],
        repo,
        env=venv_env(repo, MLFLOW_TRACKING_URI=mlflow_server),
    )
    from src.models.tracking import run_id_for_sha
    from src.utils import sha256_file

    bundle = load_model(repo / "models" / "model.joblib")
    assert "mlflow_run_id" not in bundle["metadata"]  # the artifact stays byte-reproducible
    run_id = run_id_for_sha(sha256_file(repo / "models" / "model.joblib"), mlflow_server)
    assert run_id

    client = MlflowClient(tracking_uri=mlflow_server)
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params["train.model_type"] == "random_forest"
    assert logged.data.params["train.n_estimators"] == "200"
    assert (
        logged.data.metrics["cv_accuracy_mean"]
        == bundle["metadata"]["training_metrics"]["cv_accuracy_mean"]
    )
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    assert logged.data.tags["git_commit"].startswith(head)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"params.yaml", "dvc.lock"} <= artifacts

    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.sklearn.load_model(f"runs:/{run_id}/model")
    import pandas as pd

    test = pd.read_csv(repo / "data" / "processed" / "test.csv")
    labels, _ = predict(bundle, test)
    from src.features.schema import to_model_frame

    assert (model.predict(to_model_frame(test, bundle["schema"])) == labels).all()


def test_unreachable_server_fails_train_and_keeps_no_model(repo):
    model = repo / "models" / "model.joblib"
    model.unlink()
    uri = f"http://127.0.0.1:{free_port()}"
    proc = run(
        ["python", "-m", "src.models.train_model"],
        repo,
        env=venv_env(repo, MLFLOW_TRACKING_URI=uri),
        check=False,
    )
    assert proc.returncode == 1
    assert f"MLflow tracking server {uri} is unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not model.exists()


def training_run(uri: str, model: Path, experiment: str):
    """The run tagged with the model file's sha256 (how evaluate and the report find it)."""
    from mlflow.tracking import MlflowClient

    from src.utils import sha256_file

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(experiment)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.model_sha256 = '{sha256_file(model)}'"
    )
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


def assert_test_metrics_on_training_run(uri: str, repo: Path, experiment: str) -> str:
    """metrics/scores.json's test metrics and the task's summary are on the training run."""
    from src.models.artifact import load_model

    client, logged = training_run(uri, repo / "models" / "model.joblib", experiment)
    bundle = load_model(repo / "models" / "model.joblib")
    scores = json.loads((repo / "metrics" / "scores.json").read_text())
    trained = bundle["metadata"]["training_metrics"]
    assert set(trained) <= set(logged.data.metrics)  # the training run itself
    assert logged.data.params["train.model_type"] == bundle["metadata"]["model_type"]
    test_metrics = {k: v for k, v in scores.items() if k not in trained}
    assert test_metrics and "n_test" in test_metrics
    assert {k: logged.data.metrics[k] for k in test_metrics} == test_metrics
    summary = json.loads(
        Path(
            client.download_artifacts(logged.info.run_id, "evaluation/test_summary.json")
        ).read_text()
    )
    if bundle["schema"].get("classes"):
        assert list(summary["per_class"]) == bundle["schema"]["classes"]
        supports = sum(v["support"] for v in summary["per_class"].values())
        assert supports == scores["n_test"]
    else:
        assert set(summary) == {"residual"}
    for name, value in summary_metrics(summary).items():
        assert logged.data.metrics[name] == value
    return logged.info.run_id


def test_evaluate_logs_test_metrics_on_the_training_run_and_the_report_links_it(
    mlflow_server, repo
):
    env = venv_env(repo, MLFLOW_TRACKING_URI=mlflow_server, MLFLOW_EXPERIMENT_NAME=EXPERIMENT)
    for stage in ("train_model", "evaluate_model"):
        run(["python", "-m", f"src.models.{stage}"], repo, env=env)
    run_id = assert_test_metrics_on_training_run(mlflow_server, repo, EXPERIMENT)

    # Credentials in the URI (basic auth) never reach the PR comment.
    host = mlflow_server.removeprefix("http://")
    uri = f"http://ci-user:s3cret@{host}"
    env = venv_env(repo, MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME=EXPERIMENT)
    run(["python", "-m", "src.report", "--base", "main"], repo, env=env)
    report = (repo / "reports" / "experiment" / "report.md").read_text()
    experiment = re.search(r"/#/experiments/(\d+)/runs/", report)
    assert experiment, report[-500:]
    assert f"[MLflow run]({mlflow_server}/#/experiments/{experiment[1]}/runs/{run_id})" in report
    assert "s3cret" not in report and "ci-user" not in report


def test_an_experiment_that_did_not_retrain_logs_nothing_over_another_run(mlflow_server, repo):
    """`dvc exp run -S evaluate.x=…` reruns evaluate but not train: the model's run is the
    committed configuration's, so evaluate (inside the experiment: DVC's DVC_EXP_* env) must
    leave that run's test metrics alone; outside an experiment it logs them."""
    experiment = "exp-did-not-retrain"
    env = venv_env(repo, MLFLOW_TRACKING_URI=mlflow_server, MLFLOW_EXPERIMENT_NAME=experiment)
    run(["python", "-m", "src.models.train_model"], repo, env=env)
    client, trained = training_run(mlflow_server, repo / "models" / "model.joblib", experiment)
    assert "n_test" not in trained.data.metrics
    in_exp = {**env, "DVC_EXP_NAME": "try-it", "DVC_EXP_BASELINE_REV": "a" * 40}
    proc = run(["python", "-m", "src.models.evaluate_model"], repo, env=in_exp)
    assert "did not retrain" in proc.stderr, proc.stderr[-2000:]
    assert "n_test" not in client.get_run(trained.info.run_id).data.metrics
    run(["python", "-m", "src.models.evaluate_model"], repo, env=env)
    assert_test_metrics_on_training_run(mlflow_server, repo, experiment)


def test_evaluate_fails_in_one_line_when_the_server_has_no_training_run(mlflow_server, repo):
    scores = repo / "metrics" / "scores.json"
    before = scores.read_bytes()
    env = venv_env(repo, MLFLOW_TRACKING_URI=mlflow_server, MLFLOW_EXPERIMENT_NAME="no-such")
    proc = run(["python", "-m", "src.models.evaluate_model"], repo, env=env, check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "no MLflow run tagged" in line]
    assert len(errors) == 1, proc.stderr
    assert "model_sha256=" in errors[0] and mlflow_server in errors[0]
    assert "Traceback" not in proc.stderr
    assert scores.read_bytes() == before  # nothing written


def test_local_default_store_holds_the_test_metrics_on_the_training_run(pipeline_repo):
    store = f"sqlite:///{pipeline_repo / 'mlflow.db'}"
    assert_test_metrics_on_training_run(store, pipeline_repo, DEFAULT_EXPERIMENT)
