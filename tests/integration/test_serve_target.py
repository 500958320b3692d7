"""`make serve` serves models/serving/ only when it is the export dvc.lock describes.

A failed or skipped `make repro` (params or code changed since) or a hand-edited export
must be refused with one line that says `run make repro`, before gunicorn starts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.repo_tools import free_port, run, venv_env
from tests.serving.conftest import call

pytestmark = pytest.mark.slow

VENV = Path(sys.executable).parent.parent


def make(target: str) -> list[str]:
    """`make TARGET` in `repo` with this venv (its install stamp taken as up to date)."""
    stamp = VENV / ".installed-run"
    return ["make", "-o", str(stamp), f"VENV={VENV}", target]


@pytest.fixture
def repo(pipeline_repo, tmp_path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(pipeline_repo, copy, symlinks=True)  # workspace, cache and lock
    return copy


def refused(repo: Path) -> str:
    proc = run(make("serve"), repo, env=venv_env(repo, PORT=str(free_port())), check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Booting worker" not in proc.stdout + proc.stderr  # gunicorn never started
    (line,) = [x for x in proc.stderr.splitlines() if "does not match dvc.lock" in x]
    assert line.endswith(": run make repro"), line
    return line


def test_an_up_to_date_export_is_served(repo):
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        make("serve"),
        cwd=repo,
        env=venv_env(repo, PORT=str(port), ACCESS_LOG=""),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        while time.monotonic() - started < 60:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if call("GET", f"http://127.0.0.1:{port}/ready", timeout=1)[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError("make serve did not become ready in 60 s")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_changed_params_without_a_repro_are_refused(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["n_estimators"] = 7  # as after a `make repro` that failed in train
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    line = refused(repo)
    assert "train: changed deps params.yaml: train.n_estimators (modified)" in line, line


def test_a_hand_edited_export_is_refused(repo):
    manifest = repo / "models" / "serving" / "model.json"
    manifest.write_text(manifest.read_text().replace('"task"', '"task" ', 1))
    line = refused(repo)
    assert "export: changed outs models/serving (modified)" in line, line


def test_a_missing_export_is_refused(repo):
    shutil.rmtree(repo / "models" / "serving")
    proc = run(make("serve"), repo, check=False)
    assert proc.returncode != 0
    assert "models/serving/ missing: run make repro" in proc.stderr
