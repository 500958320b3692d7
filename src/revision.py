"""Read the pipeline's committed results at any git revision: metrics, params, plot data, dvc.lock.

Metrics and plot data are committed (`cache: false` in dvc.yaml), so git alone gives the
base branch's results: no DVC cache, no `dvc pull` of the base. `rev=None` means the
working tree (the results `dvc repro` just wrote).

Metric values and changed params come from DVC itself (`dvc metrics diff --json`, `dvc
params diff --json`: `metrics_diff`, `params_diff`). The gate still reads params.yaml as
YAML (`read_params`): it needs the nested `gate:` and `data:` blocks, which DVC's output
flattens into dotted keys that cannot be split back (column names may hold dots).
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from src.ci import dvc_executable
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


def dvc_json(root: Path, *args: str) -> Any:
    """`dvc ARGS --json` in `root`, parsed; PipelineError with DVC's message if it fails."""
    command = [dvc_executable(), *args, "--json"]
    try:
        proc = subprocess.run(command, cwd=root, capture_output=True, text=True)
    except OSError as exc:
        raise PipelineError(f"dvc is not installed ({exc})") from exc
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")]
    if proc.returncode != 0 or errors:
        lines = errors or (proc.stderr or proc.stdout).strip().splitlines()
        message = lines[-1] if lines else f"exited {proc.returncode}"
        raise PipelineError(f"`dvc {' '.join(args)}` failed: {message}")
    try:
        return json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise PipelineError(f"`dvc {' '.join(args)}` did not print JSON: {exc}") from exc


def has_file(root: Path, rev: str, path: str) -> bool:
    proc = subprocess.run(["git", "cat-file", "-e", f"{rev}:{path}"], cwd=root, capture_output=True)
    return proc.returncode == 0


@dataclass(frozen=True)
class Results:
    """The two sides' metrics (per metrics file) and changed params, as DVC reports them."""

    base: dict[str, dict[str, Any] | None]  # metrics file -> {metric: value}, None: no file
    pr: dict[str, dict[str, Any] | None]
    params: dict[str, tuple[Any, Any]]  # "key" (or "file:key") -> (base value, PR value)

    def metrics(self, side: str, path: str = METRICS_PATH) -> dict[str, Any] | None:
        return (self.base if side == "base" else self.pr).get(path)


def _sides(diff: dict[str, Any], root: Path, base_sha: str) -> tuple[dict, dict]:
    base: dict[str, dict[str, Any] | None] = {}
    pr: dict[str, dict[str, Any] | None] = {}
    for path, metrics in diff.items():
        if not isinstance(metrics, dict):
            continue
        old = {k: v["old"] for k, v in metrics.items() if v.get("old") is not None}
        new = {k: v["new"] for k, v in metrics.items() if v.get("new") is not None}
        base[path] = old if has_file(root, base_sha, path) else None
        pr[path] = new if (root / path).is_file() else None
        for side, values, where in ((base, old, base_sha[:7]), (pr, new, "the working tree")):
            if side[path] is not None and not values:  # DVC skips a file it cannot parse
                raise PipelineError(f"{path} at {where} holds no metrics DVC can read")
    return base, pr


def dvc_results(root: Path, base_sha: str) -> Results:
    """`dvc metrics diff BASE --all` and `dvc params diff BASE` of the working tree (run at
    once: each takes seconds to start)."""
    with ThreadPoolExecutor(2) as pool:
        metrics = pool.submit(dvc_json, root, "metrics", "diff", base_sha, "--all")
        params = pool.submit(dvc_json, root, "params", "diff", base_sha)
        metrics_out, params_out = metrics.result(), params.result()
    base, pr = _sides(metrics_out, root, base_sha)
    changed: dict[str, tuple[Any, Any]] = {}
    for file, keys in sorted(params_out.items()):
        for key, value in sorted(keys.items()):
            name = key if file == PARAMS_PATH else f"{file}:{key}"
            changed[name] = (value.get("old"), value.get("new"))
    return Results(base, pr, changed)


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
