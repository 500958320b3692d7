"""Fixtures for the predictor: models trained in memory and exported to a tmp dir, and
helpers to run the real gunicorn server on a free loopback port.

`serving_dir` is the CONFIGURED dataset's model (params.yaml); `fixture_serving_dir` is the
multiclass fixture table's (tests/fixture_data.py), whose schema is known to hold every
kind of feature (categorical and numeric, nullable and not), for the contract's mechanics;
`regression_serving_dir` is the regression fixture table's, so a regressor's answers are
checked whatever task params.yaml configures.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flask_app import create_app
from src.config import ROOT
from src.models.export_model import export, frame_records
from src.serving.manifest import CHECKSUM_KEY, manifest_checksum, sha256_bytes
from src.tasks import schema_task
from tests.conftest import train_bundle
from tests.repo_tools import free_port

PARITY_TOLERANCE = 1e-5  # classification: largest served - scikit-learn probability gap


def parity_tolerance(params: dict, schema: dict) -> float:
    """The export's parity tolerance for the model's task: PARITY_TOLERANCE on probabilities
    (classification); params.yaml's `export.max_rel_diff`, a share of the standard deviation
    of the predictions (regression)."""
    if schema_task(schema).is_classifier:
        return PARITY_TOLERANCE
    return float(params["export"]["max_rel_diff"])


@pytest.fixture(scope="session")
def serving_dir(bundle, split, params, tmp_path_factory) -> Path:
    """The session's in-memory model, exported as the pipeline's export stage does."""
    out = tmp_path_factory.mktemp("serving") / "model"
    tolerance = parity_tolerance(params, bundle["schema"])
    frames = {"train": split[0], "test": split[1]}
    export(bundle, out, frames, tolerance, "0" * 64, drift_params=params.get("drift"))
    return out


@pytest.fixture(scope="session")
def test_records(bundle, split) -> list[dict]:
    return frame_records(split[1], bundle["schema"])


# The contract does not depend on the model type, so the fixture model is the same whatever
# `train:` in params.yaml says: a random forest with an odd number of trees and leaves of at
# least 5 rows, which keeps exact probability ties (which float32 may break either way) out
# of the small fixture table, so the tests can compare labels with scikit-learn's exactly.
FIXTURE_SERVING_TRAIN = {"model_type": "random_forest", "n_estimators": 51, "min_samples_leaf": 5}


@pytest.fixture(scope="session")
def fixture_serving_bundle(multiclass_case) -> dict:
    """The multiclass fixture table's model, trained in memory for the serving tests."""
    params = copy.deepcopy(multiclass_case.params)
    params["train"].update(FIXTURE_SERVING_TRAIN)
    return train_bundle(params, multiclass_case.train)


@pytest.fixture(scope="session")
def fixture_serving_dir(fixture_serving_bundle, multiclass_case, tmp_path_factory) -> Path:
    """`fixture_serving_bundle`, exported like `serving_dir`."""
    out = tmp_path_factory.mktemp("fixture-serving") / "model"
    frames = {"train": multiclass_case.train, "test": multiclass_case.test}
    export(fixture_serving_bundle, out, frames, PARITY_TOLERANCE, "1" * 64)
    return out


@pytest.fixture(scope="session")
def regression_serving_bundle(fixture_cases) -> dict:
    """The regression fixture table's model, trained in memory for the serving tests."""
    case = fixture_cases["regression"]
    params = copy.deepcopy(case.params)
    params["train"].update(FIXTURE_SERVING_TRAIN)
    return train_bundle(params, case.train)


@pytest.fixture(scope="session")
def regression_serving_dir(regression_serving_bundle, fixture_cases, tmp_path_factory) -> Path:
    """`regression_serving_bundle`, exported like `serving_dir`."""
    case = fixture_cases["regression"]
    out = tmp_path_factory.mktemp("regression-serving") / "model"
    tolerance = parity_tolerance(case.params, regression_serving_bundle["schema"])
    frames = {"train": case.train, "test": case.test}
    export(regression_serving_bundle, out, frames, tolerance, "2" * 64)
    return out


def rewrite_export(
    source: Path,
    dest: Path,
    edit: Callable[[dict], None] | None = None,
    onnx_bytes: bytes | None = None,
    checksums: bool = True,
) -> Path:
    """A copy of the export `source` in `dest`, its manifest changed by `edit(manifest)`
    and/or its graph replaced by `onnx_bytes`; with `checksums`, the ONNX sha256 and the
    manifest's own checksum are recomputed, as a careful hand-editor would."""
    dest.mkdir(parents=True)
    manifest = json.loads((source / "model.json").read_text())
    graph = (source / "model.onnx").read_bytes() if onnx_bytes is None else onnx_bytes
    if edit is not None:
        edit(manifest)
    if checksums:
        manifest["onnx"]["sha256"] = sha256_bytes(graph)
        manifest[CHECKSUM_KEY] = manifest_checksum(manifest)
    (dest / "model.onnx").write_bytes(graph)
    (dest / "model.json").write_text(json.dumps(manifest, indent=2))
    reference = source / manifest["drift_reference"]["file"]
    if reference.is_file():
        shutil.copyfile(reference, dest / reference.name)
    return dest


def unrunnable_graph(model_dir: Path) -> bytes:
    """The export's graph with one node's operator renamed to one ONNX Runtime lacks:
    inputs, outputs and metadata as before, so only starting a session can tell."""
    import onnx

    model = onnx.load(model_dir / "model.onnx")
    model.graph.node[0].op_type = "NoSuchOperator"
    return model.SerializeToString()


@pytest.fixture
def app(serving_dir):
    return create_app({"MODEL_DIR": str(serving_dir), "MAX_BATCH_SIZE": 100})


@pytest.fixture
def client(app):
    return app.test_client()


def call(method: str, url: str, body: dict | bytes | None = None, timeout: float = 10.0):
    """(status, parsed JSON or text) for one request; never raises on HTTP errors."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, raw, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
    return status, json.loads(raw) if ctype.startswith("application/json") else raw.decode()


class Server:
    """A gunicorn process started with the project's gunicorn.conf.py."""

    def __init__(self, model_dir: Path, log_path: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "MODEL_DIR": str(model_dir),
            "WEB_CONCURRENCY": "2",
            "ACCESS_LOG": "",
            "PYTHONPATH": str(ROOT),
            **env,
        }
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 20.0) -> float:
        """Seconds until /ready answered 200; fails with the server log otherwise."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                if call("GET", self.url + "/ready", timeout=1)[0] == 200:
                    return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log()}")

    def worker_pids(self) -> set[int]:
        pids: set[int] = set()
        for children in Path(f"/proc/{self.proc.pid}/task").glob("*/children"):
            pids.update(int(p) for p in children.read_text().split())
        return pids

    def wait_workers(self, n: int = 2, timeout: float = 15.0) -> set[int]:
        """The worker pids once `n` are up (/ready answers as soon as one is)."""
        deadline = time.monotonic() + timeout
        while len(pids := self.worker_pids()) != n and time.monotonic() < deadline:
            time.sleep(0.05)
        return pids

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def start_server(tmp_path) -> Iterator:
    """start_server(model_dir, **env) -> Server; every server is stopped after the test."""
    servers: list[Server] = []

    def start(model_dir: Path, **env: str) -> Server:
        server = Server(model_dir, tmp_path / f"server{len(servers)}.log", **env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
