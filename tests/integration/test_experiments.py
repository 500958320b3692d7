"""`make experiments` end to end: two param sets run by `dvc exp run --temp` in a copy of
the repository, then the report's table of them against `main`."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
import yaml

from src.experiments import primary_metric
from src.report import _num
from src.tasks import metric_direction, task_family
from tests.conftest import run, stages_run

pytestmark = pytest.mark.slow


def mlflow_runs(repo) -> int:
    with sqlite3.connect(repo / "mlflow.db") as db:
        return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def exp_show_metrics(repo) -> dict[str, dict]:
    """{name: metrics/scores.json} of each experiment, as `dvc exp show --json` reports it."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                found[rev["name"]] = rev["data"]["metrics"]["metrics/scores.json"]["data"]
    return found


def test_two_experiments_are_run_and_tabled_against_main(pipeline_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(pipeline_repo, repo, symlinks=True)  # workspace, cache and lock
    assert stages_run(run(["dvc", "repro"], repo).stdout) == []
    params = yaml.safe_load((repo / "params.yaml").read_text())
    folds = params["train"]["cv_folds"]
    grid = [
        {"name": "fewer-folds", "set": {"train.cv_folds": 3 if folds != 3 else 4}},
        {
            "name": "seed-7",
            "set": {"base.random_state": 7 if params["base"]["random_state"] != 7 else 8},
        },
    ]
    (repo / "experiments.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "committed outputs and a grid"], repo)
    committed = (repo / "metrics" / "scores.json").read_bytes()

    runs_before = mlflow_runs(repo)
    run(["python", "-m", "src.experiments", "run"], repo)
    assert mlflow_runs(repo) == runs_before + 2  # each experiment's train logged as usual

    # The committed configuration's outputs are untouched: the gate and plots judge them.
    assert (repo / "metrics" / "scores.json").read_bytes() == committed
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    shown = exp_show_metrics(repo)
    assert set(shown) == {"fewer-folds", "seed-7"}

    run(["python", "-m", "src.report", "--base", "main"], repo)
    text = (repo / "reports" / "experiment" / "report.md").read_text()
    table = text.split("### Experiments", 1)[1].split("### Quality gate", 1)[0]
    header = next(ln for ln in table.splitlines() if ln.startswith("| Experiment"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = {
        cells[0].replace(" ⭐", "").strip("`"): cells
        for ln in table.splitlines()
        if ln.startswith("| ") and not ln.startswith(("| Experiment", "|---"))
        for cells in [[c.strip() for c in ln.strip("|").split("|")]]
    }
    assert set(rows) == {"this PR (committed)", "fewer-folds", "seed-7"}
    change = grid[0]["set"]["train.cv_folds"], grid[1]["set"]["base.random_state"]
    assert rows["fewer-folds"][1] == f"`train.cv_folds={change[0]}`"
    assert rows["seed-7"][1] == f"`base.random_state={change[1]}`"
    for name, metrics in shown.items():  # each cell: `dvc exp show`'s value (+ a marker)
        for column, cell in zip(columns[2:], rows[name][2:], strict=True):
            assert cell.split(" ")[0] == _num(metrics[column]), (name, column)

    committed_scores = json.loads(committed)
    primary = primary_metric(task_family(params["data"]), committed_scores)
    values = {
        **{n: m[primary] for n, m in shown.items()},
        "this PR (committed)": committed_scores[primary],
    }
    top = max(v * metric_direction(primary) for v in values.values())
    starred = {n for n, cells in rows.items() if "⭐" in cells[0]}
    assert starred == {n for n, v in values.items() if v * metric_direction(primary) == top}
    assert f"⭐ best by `{primary}`" in table
