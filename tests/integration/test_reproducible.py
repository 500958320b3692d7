"""Byte-reproducible artifacts: the pipeline's outputs depend only on code, data and params.

Two copies of the repository at different absolute paths run `dvc repro` with a different
PYTHONHASHSEED and OpenMP thread count (the session's `pipeline_repo` and `rerun_repo`,
tests/conftest.py): models/, metrics/ and plots/ must be byte-identical (so dvc.lock is
too). Then a fresh `git clone` of one of them, with that dvc.lock committed, runs `dvc
repro` from nothing and leaves `git status` clean: training no longer marks dvc.lock
modified, and `dvc diff` shows no model change for the same inputs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.repo_tools import run, venv_env

pytestmark = pytest.mark.slow

OUTPUTS = ("models", "metrics", "plots")


def files(repo: Path) -> dict[str, bytes]:
    """Every file under the pipeline's output folders, by path relative to the repo."""
    return {
        str(p.relative_to(repo)): p.read_bytes()
        for out in OUTPUTS
        for p in sorted((repo / out).rglob("*"))
        if p.is_file() and p.name != ".gitignore"
    }


def repro(repo: Path, hash_seed: str, threads: str) -> None:
    env = venv_env(repo, PYTHONHASHSEED=hash_seed, OMP_NUM_THREADS=threads)
    run(["dvc", "repro"], repo, env=env)


@pytest.fixture(scope="module")
def two_runs(pipeline_repo, rerun_repo) -> tuple[Path, Path]:
    """Run with PYTHONHASHSEED 1 and 1 thread in one folder, 2 and 2 in another."""
    return pipeline_repo, rerun_repo.repo


def test_two_runs_in_two_folders_write_identical_bytes(two_runs):
    first, second = two_runs
    ours, theirs = files(first), files(second)
    assert "models/model.joblib" in ours and "models/serving/model.json" in ours
    assert any(name.startswith("metrics/") for name in ours)
    assert any(name.startswith("plots/") for name in ours)
    assert sorted(ours) == sorted(theirs)
    differ = [name for name in ours if ours[name] != theirs[name]]
    assert differ == []
    assert (first / "dvc.lock").read_bytes() == (second / "dvc.lock").read_bytes()
    for repo in two_runs:  # nothing that varies by run, place or commit in the manifest
        text = (repo / "models" / "serving" / "model.json").read_text()
        for volatile in (str(repo), "git_commit", "trained_at", "mlflow_run_id"):
            assert volatile not in text, volatile


def test_a_fresh_clone_reproduces_the_committed_lock(two_runs, tmp_path):
    first = tmp_path / "first"  # the shared run stays as it is
    shutil.copytree(two_runs[0], first, symlinks=True)
    run(["git", "add", "-A"], first)  # empty if the copy's committed outputs were these
    run(
        ["git", "commit", "-qm", "dvc.lock, metrics and plots of a clean run", "--allow-empty"],
        first,
    )
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(first), str(clone)], tmp_path)
    assert not (clone / "models" / "model.joblib").exists()  # nothing to reuse: all rerun
    repro(clone, "3", "2")
    assert run(["git", "status", "--porcelain"], clone).stdout == ""
    assert files(clone) == files(first)
    diff = run(["dvc", "diff", "HEAD"], clone).stdout
    assert "models/model.joblib" not in diff, diff
