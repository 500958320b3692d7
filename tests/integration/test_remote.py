"""DVC remote round trips for real: a local-folder remote and an S3 API (moto) on loopback.

Push the pipeline's outputs and run-cache from one clone; in a fresh clone, pull them
and check that `dvc repro` has nothing to do (no retraining).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run, stages_run, venv_env

pytestmark = pytest.mark.slow

BUCKET = "mloperation-dvc"  # the bucket in .dvc/config's default remote `storage`
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def origin(pipeline_repo, tmp_path_factory) -> Path:
    """A repo whose pipeline has run, with its results committed (like a pushed branch)."""
    repo = tmp_path_factory.mktemp("origin") / "repo"
    shutil.copytree(pipeline_repo, repo, symlinks=True)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "pipeline results"], repo)
    return repo


def round_trip(origin: Path, clone: Path, configure: list[list[str]], env: dict) -> None:
    (origin / ".dvc" / "config.local").unlink(missing_ok=True)  # from an earlier test
    for cmd in configure:
        run(cmd, origin, env=env)
    pushed = run(["dvc", "push", "--run-cache"], origin, env=env)
    assert "pushed" in pushed.stdout + pushed.stderr

    run(["git", "clone", "-q", str(origin), str(clone)], origin.parent, env=env)
    assert not (clone / "models" / "model.joblib").exists()
    for cmd in configure:
        run(cmd, clone, env=env)
    run(["dvc", "pull", "--run-cache"], clone, env=env)
    assert (clone / "models" / "model.joblib").read_bytes() == (
        origin / "models" / "model.joblib"
    ).read_bytes()
    status = run(["dvc", "status"], clone, env=env)
    assert "up to date" in status.stdout
    repro = run(["dvc", "repro"], clone, env=env)
    assert stages_run(repro.stdout) == [], repro.stdout
    assert "Data and pipelines are up to date" in repro.stdout


def test_local_folder_remote_round_trip(origin, tmp_path):
    remote = tmp_path / "dvc-remote"
    configure = [["dvc", "remote", "modify", "--local", "storage", "url", str(remote)]]
    round_trip(origin, tmp_path / "clone", configure, venv_env(origin))
    assert any(remote.rglob("*")), "nothing was pushed to the folder remote"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto_s3(tmp_path):
    """A real S3 API on loopback (moto server), with the remote's bucket created."""
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        **{
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "region_name": "us-east-1",
        },
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            s3.create_bucket(Bucket=BUCKET)
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.3)
    yield endpoint, s3
    proc.terminate()
    proc.wait(timeout=10)


def test_s3_remote_round_trip(origin, tmp_path, moto_s3):
    """Endpoint and credentials from the environment only, as the CI workflows pass them."""
    endpoint, s3 = moto_s3
    env = venv_env(origin, AWS_ENDPOINT_URL=endpoint, **S3_ENV)
    round_trip(origin, tmp_path / "clone", [], env)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert any(k.startswith("store/") for k in keys)
    assert any("runs" in k for k in keys), "run-cache was not pushed"
