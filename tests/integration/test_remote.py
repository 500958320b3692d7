"""DVC remote round trips for real: a local-folder remote and an S3 API (moto) on loopback.

Push the pipeline's outputs and run-cache from one clone; in a fresh clone, pull them
and check that `dvc repro` has nothing to do (no retraining).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.repo_tools import S3_KEYS, moto_s3, run, stages_run, venv_env

pytestmark = pytest.mark.slow

BUCKET = "mloperation-dvc"  # the bucket in .dvc/config's default remote `storage`
S3_ENV = {**S3_KEYS, "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def origin(pipeline_repo, tmp_path_factory) -> Path:
    """A repo whose pipeline has run, with its results committed (like a pushed branch)."""
    repo = tmp_path_factory.mktemp("origin") / "repo"
    shutil.copytree(pipeline_repo, repo, symlinks=True)
    run(["git", "add", "-A"], repo)
    # empty when the run reproduced the committed outputs byte for byte (the usual case)
    run(["git", "commit", "-q", "--allow-empty", "-m", "pipeline results"], repo)
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


@pytest.fixture
def s3_server():
    with moto_s3(BUCKET) as server:
        yield server


def test_s3_remote_round_trip(origin, tmp_path, s3_server):
    """Endpoint and credentials from the environment only, as the CI workflows pass them."""
    endpoint, s3 = s3_server
    env = venv_env(origin, AWS_ENDPOINT_URL=endpoint, **S3_ENV)
    round_trip(origin, tmp_path / "clone", [], env)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert any(k.startswith("store/") for k in keys)
    assert any("runs" in k for k in keys), "run-cache was not pushed"
