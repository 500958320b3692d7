"""Several experiments per PR: a small grid of params run with DVC experiments.

    python -m src.experiments check [--file experiments.yaml]   validate only
    python -m src.experiments run   [--file experiments.yaml]   (make experiments)

`experiments.yaml` (committed, absent by default) is a list of named param sets:

    - name: deeper
      set: {train.max_depth: 20}
    - name: boosted
      set: {train.model_type: gradient_boosting, train.n_estimators: 100}

Each set overrides keys of params.yaml (dotted paths of keys it already has); the result
must pass params.yaml's typed schema (src/params.py). The file comes from the PR, so it is
hostile: it is read with yaml's safe loader (bounded size, no duplicate keys), names are
short plain identifiers (they reach markdown and git refs), values are scalars, at most
MAX_EXPERIMENTS sets; every problem is one line and nothing runs.

`run` runs each set with `dvc exp run --temp -S key=value ...`, one after the other, each
in a temporary copy of the workspace (the committed configuration's outputs, which the gate
and plots judge, are left as they are; DVC's run-cache skips the stages a set does not
change). Then it reads `dvc exp show --json` for each experiment's commit, params and
metrics and writes RESULTS, which `make report` turns into one table against the base
(src/report.py `experiments_section`). A failed experiment (say, a set whose export
misses parity) is a result, not a broken job: it is logged as an error, recorded with its
last error line (the report's table lists it as failed) and the others still run. A bad
experiments.yaml stops before anything runs (exit 78).

Each experiment's `train` tags its MLflow run with DVC's experiment name and baseline
commit (src/models/tracking.py); with a tracking server configured the table links each
row's run by them (`run_links`), the committed row's by its model's sha256.

Sequential `--temp` rather than `--queue` + workers: simpler (no Celery worker to start,
poll and stop; a failure is this command's own exit code). Measured here: two penguins
experiments in 69 s, about 33 s each (the whole pipeline of a set, run-cache hits aside).
The queue was not measured; on 2-core runners a second worker would share the same cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.ci import dvc_executable
from src.config import PARAMS_FILE, ROOT
from src.noise import BETTER, NOISE, PREDICTIONS_PATH, WORSE, Interval, holdout_comparison, marker
from src.params import check as check_params
from src.params import read as read_yaml
from src.revision import flatten, read_text
from src.tasks import metric_direction, task_family
from src.utils import ParamsError, PipelineError, atomic_write, run_cli, setup_logging, show

GRID_FILE = ROOT / "experiments.yaml"
RESULTS = ROOT / "reports" / "experiments" / "results.json"
MAX_EXPERIMENTS = 8
MAX_KEYS = 20  # overrides per experiment
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")  # plain text in markdown and git refs
NAME_RULE = "1 to 32 letters, digits, '-' or '_', starting with a letter"
# Keys an experiment may not set: the gate is the base branch's, not a pipeline param.
RESERVED = ("gate",)
SCALARS = (str, int, float, bool, type(None))
HEX40 = re.compile(r"^[0-9a-f]{40}$")


def _get(params: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _set(params: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[leaf] = value


def validate(grid: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The experiments of a parsed experiments.yaml, or ParamsError with one line per problem."""
    problems: list[tuple[str, str]] = []
    if not isinstance(grid, list) or not grid:
        raise ParamsError(
            [("", "must be a non-empty list of {name, set} mappings")], "experiments.yaml"
        )
    if len(grid) > MAX_EXPERIMENTS:
        raise ParamsError(
            [("", f"{len(grid)} experiments: at most {MAX_EXPERIMENTS} are allowed")],
            "experiments.yaml",
        )
    experiments: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, entry in enumerate(grid):
        where = f"[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "set"}:
            problems.append((where, "must be a mapping with exactly the keys name and set"))
            continue
        name, overrides = entry["name"], entry["set"]
        if not isinstance(name, str) or not NAME.match(name):
            problems.append((f"{where}.name", f"{show(name)}: must be {NAME_RULE}"))
            continue
        where = name
        if name in seen:
            problems.append((where, "duplicate name"))
            continue
        seen.add(name)
        if not isinstance(overrides, dict) or not overrides or len(overrides) > MAX_KEYS:
            problems.append(
                (f"{where}.set", f"must map 1 to {MAX_KEYS} params.yaml keys to values")
            )
            continue
        found: list[tuple[str, str]] = []
        trial = copy.deepcopy(params)
        for key, value in overrides.items():
            exists, current = _get(params, key) if isinstance(key, str) else (False, None)
            if isinstance(key, str) and key.split(".")[0] in RESERVED:
                found.append((f"{where}.set", f"{key}: the gate cannot be an experiment"))
            elif not exists:
                found.append((f"{where}.set", f"{show(key)}: not a key of params.yaml"))
            elif isinstance(current, dict | list):
                found.append((f"{where}.set", f"{key}: a section or list, not a single value"))
            elif not isinstance(value, SCALARS):
                found.append((f"{where}.set.{key}", f"{show(value)}: must be a single value"))
            else:
                _set(trial, key, value)
        if not found:
            try:
                check_params(trial)
            except ParamsError as exc:
                found += [(f"{where}: params.yaml {path}", text) for path, text in exc.problems]
        problems += found
        if not found:
            experiments.append({"name": name, "set": dict(overrides)})
    if problems:
        raise ParamsError(problems, "experiments.yaml")
    return experiments


def load(path: Path = GRID_FILE, params_file: Path = PARAMS_FILE) -> list[dict[str, Any]] | None:
    """The checked experiments of `path`, or None when the file does not exist."""
    if not path.is_file():
        return None
    from src.params import load as load_params

    return validate(read_yaml(path), load_params(params_file))


def override(key: str, value: Any) -> str:
    """`-S` argument (Hydra override grammar): JSON scalars are valid Hydra values."""
    return f"{key}={json.dumps(value)}"


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # Without a server, `train` logs to the workspace's mlflow.db; in a --temp copy that
    # would be the copy's, deleted with it: point it at this workspace's, as a normal train.
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return subprocess.run(
        [dvc_executable(), *args], cwd=root, env=env, capture_output=True, text=True, check=False
    )


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"


def exp_show(root: Path) -> dict[str, dict[str, Any]]:
    """{experiment name: {rev, params, metrics}} from `dvc exp show --json` (this baseline)."""
    proc = _dvc(root, "exp", "show", "--json")
    if proc.returncode != 0:
        raise PipelineError(f"dvc exp show failed: {_last_line(proc)}")
    found: dict[str, dict[str, Any]] = {}
    for baseline in json.loads(proc.stdout or "[]"):
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                name = rev.get("name") or exp.get("name")
                if not name:
                    continue
                metrics = ((data.get("metrics") or {}).get("metrics/scores.json") or {}).get("data")
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data")
                found[name] = {"rev": rev.get("rev"), "params": params, "metrics": metrics}
    return found


def run(root: Path, experiments: list[dict[str, Any]], out: Path) -> int:
    """Run every experiment in a temporary workspace copy; write `out` (failures included)."""
    log = setup_logging()
    failed: dict[str, str] = {}
    for exp in experiments:
        name = exp["name"]
        _dvc(root, "exp", "remove", name)  # a rerun of the job replaces the previous one
        args = [a for key, value in exp["set"].items() for a in ("-S", override(key, value))]
        log.info("experiment %s: dvc exp run --temp %s", name, " ".join(args))
        proc = _dvc(root, "exp", "run", "--temp", "--name", name, *args)
        if proc.returncode != 0:
            failed[name] = _last_line(proc)
            log.error("experiment %s failed: %s", name, failed[name])
    shown = exp_show(root)
    results = []
    for exp in experiments:
        entry = {"name": exp["name"], "set": exp["set"]}
        if exp["name"] in failed or exp["name"] not in shown:
            entry["error"] = failed.get(exp["name"], "not found in `dvc exp show`")
        else:
            entry.update(shown[exp["name"]])
        results.append(entry)
    baseline = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()
    text = json.dumps({"baseline": baseline, "experiments": results}, indent=2, sort_keys=True)
    text += "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda p: p.write_text(text, encoding="utf-8"))
    log.info("wrote %s (%d experiments, %d failed)", out, len(results), len(failed))
    return 0


# --- the report's table (src/report.py) ---------------------------------------------------

PRIMARY = {"classification": "balanced_accuracy", "regression": "r2"}  # by task family
SHORT = {BETTER: "✅", WORSE: "❌", NOISE: "≈"}


def primary_metric(family: str | None, metrics: Mapping[str, Any]) -> str | None:
    """The metric that picks the best experiment: the family's, else the first one with a
    direction among the test-set metrics."""
    name = PRIMARY.get(family or "")
    if name in metrics:
        return name
    return next((m for m in key_metrics(metrics)), None)


def key_metrics(metrics: Mapping[str, Any]) -> list[str]:
    """Test-set metrics with a direction (not cv_, train_, n_), sorted."""
    return sorted(
        m
        for m, v in metrics.items()
        if not m.startswith(("cv_", "train_", "n_"))
        and metric_direction(m)
        and isinstance(v, int | float)
        and not isinstance(v, bool)
    )


def best(rows: Mapping[str, Mapping[str, Any]], metric: str) -> set[str]:
    """Names of the rows with the best value of `metric` by its direction (ties: all)."""
    direction = metric_direction(metric)
    values = {
        name: m[metric]
        for name, m in rows.items()
        if isinstance(m.get(metric), int | float) and not isinstance(m.get(metric), bool)
    }
    if not direction or not values:
        return set()
    top = max(v * direction for v in values.values())
    return {name for name, v in values.items() if v * direction == top}


def read_results(path: Path) -> dict[str, Any] | None:
    """RESULTS as written by `run`, or None when absent. Written by our own job, but on a
    fork's PR by the fork's code: it is checked for shape, and names are re-validated."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise PipelineError(f"{path}: not readable JSON ({exc})") from exc
    exps = data.get("experiments") if isinstance(data, dict) else None
    if (
        not isinstance(exps, list)
        or len(exps) > MAX_EXPERIMENTS
        or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str) and NAME.match(e["name"])
            for e in exps
        )
    ):
        raise PipelineError(f"{path}: not the output of `python -m src.experiments run`")
    return data


COMMITTED = "this PR (committed)"


def run_links(
    env: Mapping[str, str], root: Path, results: Mapping[str, Any]
) -> dict[str, str | None] | None:
    """{row: address of its MLflow run, or None if the server has none}, or None when no
    tracking server is configured (the same rule as the committed run's link).

    The committed configuration's run is found by its model's sha256, each experiment's by
    the DVC experiment name and baseline commit that train records as tags.
    """
    from src.config import MODEL_FILE
    from src.models.tracking import (
        find_experiment_run,
        find_training_run,
        run_url,
        search,
        server_uri,
    )

    uri = server_uri(env)
    if uri is None:
        return None
    model = root / MODEL_FILE.relative_to(ROOT)
    run = search(uri, find_training_run, model) if model.is_file() else None
    links: dict[str, str | None] = {COMMITTED: run_url(uri, run) if run else None}
    baseline = results.get("baseline")
    for exp in results.get("experiments", []):
        if "error" in exp:
            continue
        run = None
        if isinstance(baseline, str) and HEX40.match(baseline):
            run = search(uri, find_experiment_run, exp["name"], baseline)
        links[exp["name"]] = run_url(uri, run) if run else None
    return links


def _cell(value: Any, interval: Interval | None, metric: str) -> str:
    from src.report import _num

    mark = marker(metric, interval)
    return f"{_num(value)} {SHORT[mark]}" if mark else _num(value)


def section(
    root: Path,
    results: Mapping[str, Any],
    base_sha: str,
    base_label: str,
    base_metrics: Mapping[str, Any] | None,
    pr_metrics: Mapping[str, Any],
    pr_params: Mapping[str, Any] | None,
    pr_intervals: Mapping[str, Interval] | None,
    comparable: bool,
    links: Mapping[str, str | None] | None = None,
) -> list[str]:
    """One table: the committed configuration and every experiment, against the base.

    `links` (from `run_links`): a column linking each row's MLflow run; None: no column.
    Names are NAME-checked plain text; param keys, values and error lines from the
    experiments are code spans (`_param`): nothing of theirs opens a link or a table cell.
    """
    from src.report import _param

    family = None
    if pr_params and isinstance(pr_params.get("data"), dict):
        try:
            family = task_family(pr_params["data"])
        except PipelineError:
            family = None
    metrics = key_metrics(pr_metrics)
    primary = primary_metric(family, pr_metrics)
    base_preds = read_text(root, base_sha, PREDICTIONS_PATH) if base_metrics else None
    committed = COMMITTED
    rows: dict[str, Mapping[str, Any]] = {committed: pr_metrics}
    cells: dict[str, list[str]] = {}
    flat_pr = flatten(dict(pr_params or {}))
    notes: list[str] = []
    for m in metrics:
        cells.setdefault(committed, []).append(
            _cell(pr_metrics.get(m), (pr_intervals or {}).get(m) if comparable else None, m)
        )
    params_of: dict[str, str] = {committed: "—"}
    for exp in results.get("experiments", []):
        name = exp["name"]
        if "error" in exp or not isinstance(exp.get("metrics"), dict):
            notes.append(f"`{name}` failed: {_param(str(exp.get('error', 'no metrics')))}")
            continue
        exp_metrics = exp["metrics"]
        rows[name] = exp_metrics
        flat = flatten(exp.get("params") or {})
        differ = sorted(k for k in set(flat) | set(flat_pr) if flat.get(k) != flat_pr.get(k))
        params_of[name] = ", ".join(_param(f"{k}={json.dumps(flat.get(k))}") for k in differ) or "—"
        intervals: Mapping[str, Interval] = {}
        rev = exp.get("rev")
        if comparable and base_preds is not None and isinstance(rev, str) and HEX40.match(rev):
            comparison = holdout_comparison(
                base_preds,
                read_text(root, rev, PREDICTIONS_PATH),
                base_metrics or {},
                exp_metrics,
                base_label,
            )
            intervals = comparison.intervals
        cells[name] = [_cell(exp_metrics.get(m), intervals.get(m), m) for m in metrics]
    winners = best(rows, primary) if primary else set()
    header = ["Experiment", "Params that differ", *metrics]
    if links is not None:
        header.append("MLflow")
        missing = [name for name in rows if not links.get(name)]
        if missing:
            notes.append(
                "No run on the MLflow tracking server for "
                + ", ".join(n if n == committed else f"`{n}`" for n in missing)
                + ": an experiment logs a run of its own only when its set changes an "
                "input of `train` (and DVC did not restore `train` from its run-cache)."
            )
    else:
        notes.append(
            "No MLflow links: `MLFLOW_TRACKING_URI` is not a tracking server (http/https), "
            "so each experiment's run is in the job's local store."
        )
    lines = [
        f"{len(results.get('experiments', []))} experiments from `experiments.yaml`, each "
        "run by `dvc exp run` on this PR's code; markers against "
        f"{base_label} as in Metrics (test-set paired bootstrap)."
        + (
            f" ⭐ best by `{primary}` ("
            f"{'higher' if metric_direction(primary) > 0 else 'lower'} is better)."
            if primary
            else ""
        ),
        "",
        "| " + " | ".join(header) + " |",
        "|---|---|" + "---:|" * len(metrics) + ("---|" if links is not None else ""),
    ]
    for name in rows:
        star = " ⭐" if name in winners else ""
        label = name if name == committed else f"`{name}`"
        row = [f"{label}{star}", params_of[name], *cells[name]]
        if links is not None:
            row.append(f"[run]({links[name]})" if links.get(name) else "—")
        lines.append("| " + " | ".join(row) + " |")
    if results.get("baseline") and results["baseline"] != _head(root):
        notes.append("These results are of another commit: rerun `make experiments`.")
    return lines + ([""] + [f"- {n}" for n in notes] if notes else [])


def _head(root: Path) -> str | None:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("check", "run"))
    parser.add_argument("--file", type=Path, default=GRID_FILE)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    log = setup_logging()
    experiments = load(args.file)
    if experiments is None:
        if args.out.exists() and args.command == "run":
            args.out.unlink()  # no grid: no stale table in the report
        log.info("no %s: no experiments", args.file.name)
        return 0
    if args.command == "check":
        log.info("%s: %d experiments ok", args.file.name, len(experiments))
        return 0
    return run(ROOT, experiments, args.out)


if __name__ == "__main__":
    run_cli(main)
