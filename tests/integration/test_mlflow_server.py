"""MLflow tracking against a real `mlflow server` process started on loopback."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.repo_tools import free_port, run, venv_env

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=venv_env(root),
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()}")
        time.sleep(0.5)
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


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
    from src.models.tracking import training_run_id
    from src.utils import sha256_file

    bundle = load_model(repo / "models" / "model.joblib")
    assert "mlflow_run_id" not in bundle["metadata"]  # the artifact stays byte-reproducible
    run_id = training_run_id(sha256_file(repo / "models" / "model.joblib"), mlflow_server)
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
