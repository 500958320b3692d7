"""Helpers to run the project's commands inside a temporary copy of the repository.

Used by the integration tests and the benchmarks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from src.config import ROOT


def venv_env(repo: Path, **extra: str) -> dict[str, str]:
    """Environment for running the pipeline inside `repo` with this interpreter's venv."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo)  # the copy's `src`, not the editable install's
    env["GIT_PAGER"] = "cat"
    env.pop("MLFLOW_TRACKING_URI", None)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        env.pop(key, None)
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True):
    """Run a command, returning the CompletedProcess; on failure show its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env or venv_env(cwd), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def copy_repo(dest: Path) -> Path:
    """Copy the project's files (tracked or not ignored) into `dest` and commit them."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    dest.mkdir(parents=True, exist_ok=True)
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for args in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.email", "test@example.com"],
        ["git", "config", "user.name", "test"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "copy"],
    ):
        run(args, dest)
    return dest


def stages_run(output: str) -> list[str]:
    """Names of the stages DVC actually ran, from `dvc repro` output."""
    return [
        line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")
    ]
