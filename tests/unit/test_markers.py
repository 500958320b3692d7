"""The `mechanics` marker (pyproject.toml): tests.run_on_dataset leaves its tests out of the
runs on other datasets, so tests/conftest.py refuses it on a test that uses the configured
dataset, and the selection those runs make cannot shrink below MIN_PASSED unnoticed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.config import ROOT
from tests import run_on_dataset as harness

pytestmark = pytest.mark.mechanics  # never reads the configured dataset (pyproject.toml)

CONFTEST = """\
from tests.conftest import *  # noqa: F403
from tests.conftest import pytest_collection_modifyitems  # noqa: F401
"""

MARKED = """\
import pytest


@pytest.fixture(params=["params", "other"])
def picked(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def other():
    return 1


@pytest.fixture
def through(split):
    return split


@pytest.mark.mechanics
def test_direct(params):
    pass


@pytest.mark.mechanics
def test_through(through):
    pass


@pytest.mark.mechanics
def test_picked(picked):
    pass


@pytest.mark.mechanics
def test_fixture_table(multiclass_case, tmp_path):
    pass
"""


def collect(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir"]
    cmd += [str(cwd), "--collect-only", "-q", "-p", "no:cacheprovider", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def test_mechanics_is_refused_on_a_test_of_the_configured_dataset(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_marked.py").write_text(MARKED)
    proc = collect(["test_marked.py"], tmp_path)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "marked mechanics" in ln]
    named = line.split("tests/conftest.py): ", 1)[1].split(", ")
    # directly, through another fixture, picked by name; the fixture table's test is fine
    assert named == [
        "test_marked.py::test_direct",
        "test_marked.py::test_through",
        "test_marked.py::test_picked[params]",
    ]


def test_the_dataset_runs_select_at_least_min_passed_tests():
    proc = collect([*harness.FAST_SUITE, "tests"], ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = [ln for ln in proc.stdout.splitlines() if "::" in ln]
    assert len(ids) >= harness.MIN_PASSED, len(ids)
    for folder in ("tests/data/", "tests/model/", "tests/serving/"):  # the configured dataset's
        assert any(i.startswith(folder) for i in ids), folder
    assert not any(i.startswith("tests/unit/test_markers.py") for i in ids)


def test_summary_counts_and_what_picks_tests():
    assert harness.passed_count("227 passed, 3 skipped in 61.20s") == 227
    assert harness.passed_count("1 failed, 12 passed in 3.1s") == 12
    assert harness.passed_count("no tests ran in 0.01s") == 0
    assert not harness.chooses_tests([]) and not harness.chooses_tests(["-x", "--durations=5"])
    assert harness.chooses_tests(["tests/model", "-x"]) and harness.chooses_tests(["-k", "api"])


def test_jobs_below_one_is_refused(capsys):
    with pytest.raises(SystemExit) as stopped:
        harness.main(["--all", "--jobs", "0"])
    assert stopped.value.code == 2
    assert "--jobs 0: must be 1 or more" in capsys.readouterr().err
