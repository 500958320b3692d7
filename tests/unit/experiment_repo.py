"""A small git repository with a `main` commit and a PR commit, for the report and gate tests.

It holds what the report reads: params.yaml, metrics/scores.json and the plot data under
plots/ (the project's own files, then changed by the PR), plus a copy of `src` so the CLIs
(`python -m src.report`, `python -m src.gate`) can run inside it. No pipeline runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from src.config import ROOT

BASE_METRICS = {
    "accuracy": 0.988372,
    "balanced_accuracy": 0.985,
    "cv_accuracy_std": 0.02,
    "f1_macro": 0.986,
    "log_loss": 0.05,
    "n_test": 86,
}
PR_METRICS = {
    "accuracy": 0.953488,
    "balanced_accuracy": 0.94,  # -0.045: more than the gate's max_drop 0.03
    "cv_accuracy_std": 0.015,  # lower is better: improved
    "f1_macro": 0.95,
    "log_loss": 0.12,  # higher: worse
    "n_test": 86,
}
GATE = {
    "min": {"balanced_accuracy": 0.9},
    "max": {"log_loss": 0.35},
    "max_drop": {"balanced_accuracy": 0.03},
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def env_for(repo: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(repo)
    env["GIT_PAGER"] = "cat"
    env.update(extra)
    return env


def write_results(repo: Path, metrics: dict[str, Any], params: dict[str, Any]) -> None:
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "metrics" / "scores.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo(path: Path, base_has_metrics: bool = True) -> Path:
    """main: the project's params and plot data (+ metrics); branch `pr`: a worse model."""
    path.mkdir(parents=True)
    shutil.copytree(ROOT / "src", path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "plots", path / "plots", ignore=shutil.ignore_patterns("images"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["gate"] = GATE
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "user.name", "test")
    if base_has_metrics:
        write_results(path, BASE_METRICS, params)
    else:
        (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        shutil.rmtree(path / "plots")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "main")

    git(path, "checkout", "-q", "-b", "pr")
    if not (path / "plots").exists():
        shutil.copytree(ROOT / "plots", path / "plots", ignore=shutil.ignore_patterns("images"))
    params["train"]["n_estimators"] = 50
    params["train"]["model_type"] = "gradient_boosting"
    write_results(path, PR_METRICS, params)
    confusion = path / "plots" / "confusion_matrix.csv"
    lines = confusion.read_text().splitlines()
    lines[1] = "Gentoo,Chinstrap"  # one more mistake in the PR's confusion matrix
    confusion.write_text("\n".join(lines) + "\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "pr: gradient boosting")
    return path
