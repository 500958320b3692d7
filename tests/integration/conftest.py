"""Fixtures of the integration tests: a real `mlflow server` process on loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.repo_tools import free_port, venv_env, wait_http

STARTUP_TIMEOUT_S = 120


def wait_for_mlflow(uri: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Until the MLflow server at `uri` answers /health; the test fails with its log if it
    exits or stays silent for `timeout` s."""
    if not wait_http(f"{uri}/health", proc, timeout, interval=0.5):
        proc.kill()
        pytest.fail(f"mlflow server did not start:\n{log.read_text()}")


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
    wait_for_mlflow(uri, proc, root / "server.log", STARTUP_TIMEOUT_S)
    yield uri
    proc.terminate()
    proc.wait(timeout=30)
