"""`make experiments` end to end: two param sets run by `dvc exp run --temp` in a copy of
the repository, then the report's table of them against `main`."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3

import pytest
import yaml

from src.experiments import primary_metric
from src.report import _num
from src.tasks import metric_direction, task_family
from tests.conftest import copy_repo, run, stages_run, venv_env

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


LINK = re.compile(
    r"^\[run\]\((?P<base>[^()\s]+)/#/experiments/(?P<exp>\d+)/runs/(?P<id>[0-9a-f]{32})\)$"
)


def table_rows(report: str) -> tuple[list[str], dict[str, list[str]]]:
    """The experiments table of a report: (header, {row name: cells})."""
    table = report.split("### Experiments", 1)[1].split("### Quality gate", 1)[0]
    lines = [ln for ln in table.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for ln in lines[1:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[0].replace(" ⭐", "").strip("`")] = cells
    return header, rows


def logged_form(params: dict) -> dict[str, str]:
    """params.yaml as train logs it to MLflow: dotted keys, strings, lists comma-joined, and
    of the data: block only source and target."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        else:
            flat[prefix] = ",".join(map(str, value)) if isinstance(value, list) else str(value)

    walk("", {k: v for k, v in params.items() if k != "data"})
    flat["data.source"] = str(params["data"]["source"])
    flat["data.target"] = str(params["data"]["target"])
    return flat


def test_each_experiment_links_its_own_mlflow_run(tmp_path, mlflow_server):
    """With a tracking server, the table links each row's run: each experiment's is the run
    whose params are that experiment's (found by the tags train records inside `dvc exp
    run`), the committed row's is the committed model's run."""
    from mlflow.tracking import MlflowClient

    repo = copy_repo(tmp_path / "repo")
    env = venv_env(
        repo, MLFLOW_TRACKING_URI=mlflow_server, MLFLOW_EXPERIMENT_NAME="experiment-links"
    )
    run(["dvc", "repro"], repo, env=env)  # the committed configuration's run, on the server
    params = yaml.safe_load((repo / "params.yaml").read_text())
    folds, seed = params["train"]["cv_folds"], params["base"]["random_state"]
    grid = [
        {"name": "fewer-folds", "set": {"train.cv_folds": 3 if folds != 3 else 4}},
        {"name": "seed-7", "set": {"base.random_state": 7 if seed != 7 else 8}},
    ]
    (repo / "experiments.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "committed outputs and a grid"], repo)
    run(["python", "-m", "src.experiments", "run"], repo, env=env)
    run(["python", "-m", "src.report", "--base", "main"], repo, env=env)
    report = (repo / "reports" / "experiment" / "report.md").read_text()

    header, rows = table_rows(report)
    assert header[-1] == "MLflow"
    results = json.loads((repo / "reports" / "experiments" / "results.json").read_text())
    assert all("error" not in e for e in results["experiments"]), results
    client = MlflowClient(mlflow_server)
    linked = {}
    for name, cells in rows.items():
        link = LINK.match(cells[-1])
        assert link, (name, cells[-1])
        assert link["base"] == mlflow_server
        logged = client.get_run(link["id"])
        assert logged.info.experiment_id == link["exp"]
        linked[name] = logged
    assert len({r.info.run_id for r in linked.values()}) == 3  # one run per row

    for exp in results["experiments"]:  # the run's params are the experiment's own
        logged = linked[exp["name"]]
        assert logged.data.params == logged_form(exp["params"]), exp["name"]
        for key, value in exp["set"].items():
            assert logged.data.params[key] == str(value)
        assert logged.data.tags["dvc_exp_name"] == exp["name"]
        assert logged.data.tags["dvc_exp_baseline_rev"] == results["baseline"]
    committed = linked["this PR (committed)"]
    assert committed.data.params == logged_form(params)
    assert "dvc_exp_name" not in committed.data.tags
    # The committed run is also the one the report's last line links.
    assert committed.info.run_id in report.rsplit("[MLflow run](", 1)[1]

    # A fork's report (rebuilt by src/ci.py from its artifact) keeps the table, not the
    # links: the cell becomes the plain word.
    from src.ci import fork_markdown

    artifact = repo / "reports" / "experiment"
    (tmp_path / "out").mkdir()
    markdown, dropped = fork_markdown(report, artifact, tmp_path / "out", None)
    _, fork_rows = table_rows(markdown)
    assert {n: c[-1] for n, c in fork_rows.items()} == {n: "run" for n in rows}
    assert sum("link" in d and "/#/experiments/" in d for d in dropped) == len(rows) + 1
    assert "/#/experiments/" not in markdown
