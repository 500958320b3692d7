"""The team MLflow server for real: Debian's PostgreSQL (initdb in a temporary folder, its
own port and socket folder) as the backend store, the moto S3 server as the artifact store,
both on loopback, and `make mlflow-server`'s module (src/mlflow_server.py) in front of them.
Then train -> register -> promote -> load by alias -> roll back, and the refusals (an
unreachable server, a missing version, a version that fails the gate) against that server.

Dataset-independent: the expectations come from params.yaml, metrics/scores.json and the
models the pipeline trained in the repo copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from src.tasks import metric_direction
from src.utils import sha256_file
from tests.integration.conftest import wait_for_mlflow
from tests.repo_tools import S3_KEYS, free_port, moto_s3, postgres, run, venv_env

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 300  # 100 s seen on a loaded 2-core machine
BUCKET = "team-mlflow"


@pytest.fixture(scope="module")
def stores():
    """(backend URI, artifact destination, S3 endpoint) of real stores on loopback."""
    with postgres() as backend, moto_s3(BUCKET) as (endpoint, _):
        yield backend, f"s3://{BUCKET}/artifacts", endpoint


def server_env(root: Path, backend: str, artifacts: str, endpoint: str, port: int) -> dict:
    return venv_env(
        root,
        MLFLOW_BACKEND_STORE_URI=backend,
        MLFLOW_ARTIFACTS_DESTINATION=artifacts,
        MLFLOW_S3_ENDPOINT_URL=endpoint,
        MLFLOW_HOST="127.0.0.1",
        MLFLOW_PORT=str(port),
        MLFLOW_WORKERS="1",
        **S3_KEYS,
    )


@pytest.fixture(scope="module")
def server(stores, tmp_path_factory):
    """`python -m src.mlflow_server` (what `make mlflow-server` runs) on loopback."""
    from src.config import ROOT

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.mlflow_server"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=server_env(ROOT, *stores, port),
    )
    uri = f"http://127.0.0.1:{port}"
    wait_for_mlflow(uri, proc, root / "server.log", STARTUP_TIMEOUT_S)
    yield uri
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def registry_cli(repo: Path, uri: str, *args: str, check: bool = True, **env: str):
    return run(
        [sys.executable, "-m", "src.models.registry", *args],
        repo,
        env=venv_env(repo, MLFLOW_TRACKING_URI=uri, **env),
        check=check,
    )


def error_lines(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if " ERROR " in line]


def load_test_frame(repo: Path):
    from src.features.schema import to_model_frame
    from src.models.artifact import load_model

    bundle = load_model(repo / "models" / "model.joblib")
    test = pd.read_csv(repo / "data" / "processed" / "test.csv")
    return bundle, to_model_frame(test, bundle["schema"])


def outputs(model, frame, classifier: bool):
    return model.predict_proba(frame) if classifier else model.predict(frame)


def test_train_register_promote_load_by_alias_and_roll_back(server, pipeline_repo, tmp_path):
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient

    repo = tmp_path / "repo"
    shutil.copytree(pipeline_repo, repo, symlinks=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    name = params["registry"]["model_name"]
    branch_alias = params["registry"]["branch_alias"]
    tag_alias = params["registry"]["tag_alias"]
    env = venv_env(repo, MLFLOW_TRACKING_URI=server)

    # train, logging the run to the team server (the model is byte-identical: dvc.lock holds)
    run(["dvc", "repro", "-f", "train"], repo, env=env)
    run(["dvc", "status", "--quiet"], repo, env=env)
    first_sha = sha256_file(repo / "models" / "model.joblib")
    first_bundle, frame = load_test_frame(repo)
    classifier = bool(first_bundle["schema"].get("classes"))
    scores = json.loads((repo / "metrics" / "scores.json").read_text())

    # register as a push to main does: version 1, for the branch alias (gate-checked)
    outputs_file = tmp_path / "github_output"
    proc = registry_cli(
        repo, server, "register", GITHUB_REF="refs/heads/main", GITHUB_OUTPUT=str(outputs_file)
    )
    assert f"{name} version 1 (new), for alias {branch_alias}" in proc.stdout
    assert outputs_file.read_text() == f"name={name}\nversion=1\nalias={branch_alias}\n"
    client = MlflowClient(server)
    v1 = client.get_model_version(name, "1")
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    assert v1.tags["git_sha"].removesuffix("-dirty") == head
    assert v1.tags["model_sha256"] == first_sha
    for metric, value in scores.items():
        assert float(v1.tags[f"metric.{metric}"]) == pytest.approx(value)
    assert client.get_registered_model(name).aliases == {}  # set once the image is out

    # the same model again (a v* tag's release rebuilds it): the same version
    proc = registry_cli(repo, server, "register", GITHUB_REF="refs/tags/v1.0.0")
    assert f"{name} version 1 (already registered), for alias {tag_alias}" in proc.stdout
    assert len(client.search_model_versions(f"name='{name}'")) == 1

    # after the push: the version gets the image and the alias
    digest = "sha256:" + "a" * 64
    image = "ghcr.io/acme/predictor:sha-1234567"
    proc = run(
        [
            "make",
            "promote",
            "VERSION=1",
            f"ALIAS={branch_alias}",
            f"IMAGE_REF={image}",
            f"IMAGE_DIGEST={digest}",
        ],
        repo,
        env=env,
    )
    assert f"{name}@{branch_alias}: unset -> version 1" in proc.stdout
    v1 = client.get_model_version(name, "1")
    assert (v1.tags["image"], v1.tags["image_digest"]) == (image, digest)

    # a second model: another cv_folds changes the artifact's metadata, not its fit
    folds = params["train"]["cv_folds"]
    params["train"]["cv_folds"] = folds + 1 if folds < 100 else folds - 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro"], repo, env=env)
    second_sha = sha256_file(repo / "models" / "model.joblib")
    assert second_sha != first_sha
    second_bundle, _ = load_test_frame(repo)
    assert "version 2 (new)" in registry_cli(repo, server, "register").stdout
    registry_cli(repo, server, "promote", "--version", "2", "--alias", tag_alias)
    registry_cli(repo, server, "promote", "--version", "2", "--alias", branch_alias)
    assert client.get_registered_model(name).aliases == {branch_alias: "2", tag_alias: "2"}

    # load by alias: the server's model (artifacts proxied from S3) predicts as the local one
    mlflow.set_tracking_uri(server)
    loaded = mlflow.sklearn.load_model(f"models:/{name}@{tag_alias}")
    expected = outputs(second_bundle["pipeline"], frame, classifier)
    np.testing.assert_allclose(outputs(loaded, frame, classifier), expected, rtol=0, atol=1e-12)

    # roll back: the alias at N-1, and loading by it gives the first model again
    proc = registry_cli(repo, server, "promote", "--version", "1", "--alias", tag_alias)
    assert f"{name}@{tag_alias}: version 2 -> version 1" in proc.stdout
    rolled_back = mlflow.sklearn.load_model(f"models:/{name}@{tag_alias}")
    np.testing.assert_allclose(
        outputs(rolled_back, frame, classifier),
        outputs(first_bundle["pipeline"], frame, classifier),
        rtol=0,
        atol=1e-12,
    )
    listing = registry_cli(repo, server, "show").stdout
    assert f"{name} v2  aliases: {branch_alias}  passes the gate" in listing
    assert f"{name} v1  aliases: {tag_alias}  passes the gate" in listing

    # --- refusals: one line, exit 1, the registry unchanged ------------------------------
    before = (
        client.get_registered_model(name).aliases,
        len(client.search_model_versions(f"name='{name}'")),
    )

    missing = registry_cli(
        repo, server, "promote", "--version", "9", "--alias", tag_alias, check=False
    )
    assert missing.returncode == 1
    [line] = error_lines(missing)
    assert "version 9 of registered model" in line and "does not exist" in line

    # a gate that version 1's recorded metrics cannot pass (a bound above a metric's value)
    metric = next(m for m in sorted(scores) if metric_direction(m) > 0)
    family = "classification" if classifier else "regression"
    strict = dict(params)
    strict["gate"] = {family: {"min": {metric: float(scores[metric]) + 1.0}}}
    (repo / "params.yaml").write_text(yaml.safe_dump(strict, sort_keys=False))
    failing = registry_cli(
        repo, server, "promote", "--version", "1", "--alias", branch_alias, check=False
    )
    assert failing.returncode == 1
    [line] = error_lines(failing)
    assert "fails the gate" in line and metric in line and "nothing changed" in line
    unregistered = registry_cli(repo, server, "register", "--alias", branch_alias, check=False)
    assert unregistered.returncode == 1 and "fails the gate" in error_lines(unregistered)[0]

    dead = f"http://127.0.0.1:{free_port()}"
    for args in (("promote", "--version", "1", "--alias", tag_alias), ("register",)):
        proc = registry_cli(repo, dead, *args, check=False)
        assert proc.returncode == 1
        [line] = error_lines(proc)
        assert f"MLflow tracking server {dead} is unreachable" in line

    after = (
        client.get_registered_model(name).aliases,
        len(client.search_model_versions(f"name='{name}'")),
    )
    assert after == before


def test_server_refuses_unusable_stores_in_one_line(stores, tmp_path):
    """Before MLflow starts: a missing setting, a database that does not answer, a bucket
    that does not exist: one line naming it, exit 1."""
    from src.config import ROOT

    backend, artifacts, endpoint = stores
    good = server_env(ROOT, backend, artifacts, endpoint, free_port())
    ok = run([sys.executable, "-m", "src.mlflow_server", "--check"], ROOT, env=good)
    assert "database and artifact store usable" in ok.stdout
    dead_db = backend.replace(backend.split("@")[1].split("/")[0], f"127.0.0.1:{free_port()}")
    cases = {
        "MLFLOW_BACKEND_STORE_URI is not set": {"MLFLOW_BACKEND_STORE_URI": ""},
        "MLFLOW_ARTIFACTS_DESTINATION is not set": {"MLFLOW_ARTIFACTS_DESTINATION": ""},
        "cannot connect": {"MLFLOW_BACKEND_STORE_URI": dead_db},
        "bucket 'no-such-bucket'": {"MLFLOW_ARTIFACTS_DESTINATION": "s3://no-such-bucket/x"},
        "must be s3://, gs:// or wasbs://": {"MLFLOW_ARTIFACTS_DESTINATION": "ftp://x/y"},
    }
    for expected, change in cases.items():
        proc = run(
            [sys.executable, "-m", "src.mlflow_server", "--check"],
            ROOT,
            env={**good, **change},
            check=False,
        )
        assert proc.returncode == 1, (expected, proc.stdout, proc.stderr)
        [line] = error_lines(proc)
        assert expected in line, line
