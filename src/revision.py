"""Read the pipeline's committed results at any git revision: metrics, params, plot data, dvc.lock.

Metrics and plot data are committed (`cache: false` in dvc.yaml), so git alone gives the
base branch's results: no DVC cache, no `dvc pull` of the base. `rev=None` means the
working tree (the results `dvc repro` just wrote).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from src.config import PARAMS_FILE, PLOTS_DIR, ROOT, SCORES_FILE
from src.utils import PipelineError

METRICS_PATH = SCORES_FILE.relative_to(ROOT).as_posix()  # metrics/scores.json
PARAMS_PATH = PARAMS_FILE.relative_to(ROOT).as_posix()  # params.yaml
PLOTS_PATH = PLOTS_DIR.relative_to(ROOT).as_posix()  # plots
LOCK_PATH = "dvc.lock"  # what `dvc repro` ran on: the hash of every stage's deps


def git(root: Path, *args: str) -> str:
    """Run git in `root` and return its stdout; a failure raises PipelineError with stderr."""
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PipelineError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def resolve(root: Path, rev: str) -> str:
    """The full commit SHA of `rev`, or a PipelineError saying how to make it available."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise PipelineError(
            f"git revision {rev!r} not found. Fetch it first (`git fetch origin main`); "
            "in GitHub Actions check out with `fetch-depth: 0`."
        )
    return proc.stdout.strip()


def read_text(root: Path, rev: str | None, path: str) -> str | None:
    """A file's text at `rev` (None: the working tree), or None if it does not exist there."""
    if rev is None:
        file = root / path
        return file.read_text(encoding="utf-8") if file.is_file() else None
    exists = subprocess.run(
        ["git", "cat-file", "-e", f"{rev}:{path}"], cwd=root, capture_output=True
    )
    if exists.returncode != 0:
        return None
    return git(root, "show", f"{rev}:{path}")


def read_metrics(root: Path, rev: str | None, path: str = METRICS_PATH) -> dict[str, Any] | None:
    """metrics/scores.json at `rev` as a dict, or None when that revision has none yet."""
    text = read_text(root, rev, path)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path} at {rev or 'the working tree'} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PipelineError(f"{path} at {rev or 'the working tree'} is not a JSON object")
    return data


def read_yaml(root: Path, rev: str | None, path: str) -> dict[str, Any] | None:
    """A YAML file at `rev` as a dict ({} when not a mapping), or None when it is absent."""
    text = read_text(root, rev, path)
    if text is None:
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path} at {rev or 'the working tree'} is not YAML: {exc}") from exc
    return data if isinstance(data, dict) else {}


def read_params(root: Path, rev: str | None, path: str = PARAMS_PATH) -> dict[str, Any] | None:
    """params.yaml at `rev` as a dict, or None when that revision has none."""
    return read_yaml(root, rev, path)


def read_lock(root: Path, rev: str | None, path: str = LOCK_PATH) -> dict[str, Any] | None:
    """dvc.lock at `rev` as a dict, or None when that revision has none (nothing ran yet)."""
    return read_yaml(root, rev, path)


def export_dir(root: Path, rev: str, path: str, dest: Path, suffix: str = "") -> list[str]:
    """Write the files under `path` committed at `rev` (ending in `suffix`) into `dest`.

    Keeps their layout below `path`; returns their names (empty when there are none).
    """
    listed = git(root, "ls-tree", "-r", "-z", "--name-only", rev, "--", f"{path}/")
    names = [n for n in listed.split("\0") if n and n.endswith(suffix)]
    for name in names:
        blob = subprocess.run(
            ["git", "show", f"{rev}:{name}"], cwd=root, capture_output=True, check=True
        ).stdout
        target = dest / Path(name).relative_to(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
    return names


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'C': 1.0}} -> {'train.C': 1.0}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
