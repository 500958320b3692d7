"""experiments.yaml: validation (hostile file, one line per problem), the best-row choice,
and the report's table from a results file (no DVC run: tests/integration has that)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from src.config import PARAMS_FILE, ROOT
from src.experiments import MAX_EXPERIMENTS, best, primary_metric, validate
from src.params import load as load_params
from src.report import build_report
from src.utils import ParamsError
from tests.unit.experiment_repo import BASE_METRICS, PR_METRICS, git, make_repo

PARAMS = load_params(PARAMS_FILE)  # the configured dataset's (tests/run_on_dataset.py)


def problems(grid) -> list[str]:
    with pytest.raises(ParamsError) as info:
        validate(grid, PARAMS)
    return info.value.lines()


def test_a_valid_grid_is_returned_as_written():
    grid = [
        {"name": "seed-1", "set": {"base.random_state": 1}},
        {"name": "seed_2", "set": {"base.random_state": 2, "split.test_size": 0.3}},
    ]
    assert validate(grid, PARAMS) == grid


@pytest.mark.parametrize(
    ("grid", "line"),
    [
        (
            [{"name": "typo", "set": {"train.n_estimatorz": 5}}],
            "experiments.yaml: typo.set: 'train.n_estimatorz': not a key of params.yaml",
        ),
        (
            [{"name": "neg", "set": {"base.random_state": -1}}],
            "experiments.yaml: neg: params.yaml base.random_state: -1: must be an integer "
            "from 0 to 4294967295",
        ),
        (
            [{"name": "text", "set": {"split.test_size": "0.3"}}],
            "experiments.yaml: text: params.yaml split.test_size: '0.3': must be a fraction "
            "between 0 and 1 (exclusive)",
        ),
        (
            [{"name": f"e{i}", "set": {"base.random_state": i}} for i in range(9)],
            f"experiments.yaml: 9 experiments: at most {MAX_EXPERIMENTS} are allowed",
        ),
        (
            [{"name": "<img src=x onerror=alert(1)>", "set": {"base.random_state": 1}}],
            "experiments.yaml: [0].name: '<img src=x onerror=alert(1)>': must be 1 to 32 "
            "letters, digits, '-' or '_', starting with a letter",
        ),
        (
            [{"name": "**bold**", "set": {"base.random_state": 1}}],
            "experiments.yaml: [0].name: '**bold**': must be 1 to 32 letters, digits, '-' or "
            "'_', starting with a letter",
        ),
        (
            [{"name": "loose", "set": {"gate.min": {}}}],
            "experiments.yaml: loose.set: gate.min: the gate cannot be an experiment",
        ),
        (
            [{"name": "schema", "set": {"data.schema": "x"}}],
            "experiments.yaml: schema.set: data.schema: a section or list, not a single value",
        ),
        (
            [{"name": "code", "set": {"base.random_state": {"eval": "os.system"}}}],
            "experiments.yaml: code.set.base.random_state: {'eval': 'os.system'}: must be a "
            "single value",
        ),
    ],
    ids=[
        "unknown-key",
        "out-of-range",
        "string-for-number",
        "too-many",
        "html-name",
        "markdown-name",
        "gate",
        "section",
        "mapping-value",
    ],
)
def test_a_bad_grid_is_one_line_naming_the_problem(grid, line):
    assert problems(grid) == [line]


def test_every_bad_experiment_gets_its_own_line_and_the_cli_exits_non_zero(tmp_path):
    grid = [
        {"name": "a", "set": {"train.nope": 1}},
        {"name": "a", "set": {"base.random_state": 1}},
        {"name": "b", "set": {"base.random_state": True}},
    ]
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(grid), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "src.experiments", "check", "--file", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 78
    lines = [ln.split(" ERROR ", 1)[-1] for ln in proc.stderr.strip().splitlines()]
    assert lines == [
        "experiments.yaml: a.set: 'train.nope': not a key of params.yaml",
        "experiments.yaml: a: duplicate name",
        "experiments.yaml: b: params.yaml base.random_state: True: must be an integer "
        "from 0 to 4294967295",
    ]


def test_no_grid_file_is_nothing_to_do(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "src.experiments",
            "run",
            "--file",
            str(tmp_path / "none.yaml"),
            "--out",
            str(tmp_path / "results.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no none.yaml: no experiments" in proc.stderr
    assert not (tmp_path / "results.json").exists()


def test_the_best_row_follows_the_metric_direction():
    rows = {
        "a": {"log_loss": 0.3, "r2": 0.5},
        "b": {"log_loss": 0.1, "r2": 0.4},
        "c": {"log_loss": 0.2, "r2": 0.5},
    }
    assert best(rows, "log_loss") == {"b"}  # lower is better
    assert best(rows, "r2") == {"a", "c"}  # higher is better; a tie marks both
    assert best(rows, "n_test") == set()  # no direction: no best
    assert primary_metric("regression", {"r2": 1, "rmse": 2}) == "r2"
    assert primary_metric("classification", {"log_loss": 0.2}) == "log_loss"


def experiment(repo, name, metrics, changes):
    exp_params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    for key, value in changes.items():
        section, leaf = key.split(".")
        exp_params[section][leaf] = value
    return {"name": name, "set": changes, "rev": None, "params": exp_params, "metrics": metrics}


def test_the_report_tables_every_experiment_and_marks_the_best(tmp_path):
    repo = make_repo(tmp_path / "repo")
    no_grid, _ = build_report(repo, "main", tmp_path / "report.md", env={})
    assert "### Experiments" not in no_grid
    head = git(repo, "rev-parse", "HEAD").strip()
    better = {**PR_METRICS, "balanced_accuracy": 0.99, "log_loss": 0.04}
    results = {
        "baseline": head,
        "experiments": [
            experiment(repo, "deeper", better, {"train.max_depth": 30}),
            experiment(repo, "broken", None, {"train.max_depth": 2}) | {"error": "stage failed"},
        ],
    }
    path = repo / "reports" / "experiments" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(results), encoding="utf-8")
    text, _ = build_report(repo, "main", tmp_path / "report.md", env={})
    table = text.split("### Experiments", 1)[1].split("### Quality gate", 1)[0]
    assert "⭐ best by `balanced_accuracy` (higher is better)" in table
    assert "| `deeper` ⭐ | `train.max_depth=30` | 0.9535 | 0.9900 | 0.9500 | 0.0400 |" in table
    assert "| this PR (committed) | — | 0.9535 " in table  # the committed row, not best
    assert "- `broken` failed: `stage failed`" in table
    header = next(ln for ln in table.splitlines() if ln.startswith("| Experiment"))
    assert "MLflow" not in header  # no tracking server: no link column
    assert "No MLflow links: `MLFLOW_TRACKING_URI` is not a tracking server" in table
    assert BASE_METRICS  # the base side is main's, as in Metrics
    path.unlink()  # no results: the report is exactly what it was
    again, _ = build_report(repo, "main", tmp_path / "report.md", env={})
    assert again == no_grid


def test_experiments_run_by_dvc_are_recorded_and_a_failure_does_not_stop_the_others(tmp_path):
    """Real `dvc exp run --temp`s in a DVC repo whose dvc.yaml has no stages (fast): each
    records its commit, params and metrics; an override DVC refuses fails only its own
    experiment."""
    from src.experiments import run

    repo = make_repo(tmp_path / "repo")
    params_before = (repo / "params.yaml").read_bytes()
    out = tmp_path / "results.json"
    grid = [
        {"name": "first", "set": {"base.random_state": 1}},
        {"name": "broken", "set": {"no such key!": 1}},  # not validated: DVC refuses it
    ]
    assert run(repo, grid, out) == 0  # a failed experiment is a result, not a broken job
    results = {e["name"]: e for e in json.loads(out.read_text(encoding="utf-8"))["experiments"]}
    assert list(results) == ["first", "broken"]
    assert results["broken"]["error"]
    scores = json.loads((repo / "metrics" / "scores.json").read_text(encoding="utf-8"))
    for name, seed in (("first", 1),):
        assert "error" not in results[name], results[name]
        assert re.fullmatch(r"[0-9a-f]{40}", results[name]["rev"])
        assert results[name]["params"]["base"]["random_state"] == seed
        assert results[name]["metrics"] == scores
    assert (repo / "params.yaml").read_bytes() == params_before  # the workspace is untouched


def test_hostile_experiment_text_opens_no_link_and_breaks_no_row(tmp_path):
    """Params and error lines of the experiments come from the PR: rendered by a real
    CommonMark parser (tables on, as GitHub), they open no link and add no cell or row."""
    from markdown_it import MarkdownIt

    from tests.unit.cml_standin import cml_urls

    repo = make_repo(tmp_path / "repo")
    evil = "x](https://evil.example/a)|\n| [y](https://evil.example/b) <img src=z>"
    hostile = experiment(repo, "hostile", PR_METRICS, {"train.model_type": evil})
    hostile["params"]["train"]["evil](https://evil.example/c)|\nkey"] = 1
    results = {
        "baseline": git(repo, "rev-parse", "HEAD").strip(),
        "experiments": [
            hostile,
            experiment(repo, "broken", None, {})
            | {"error": f"[boom](https://evil.example/d)|`{evil}"},
        ],
    }
    path = repo / "reports" / "experiments" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(results), encoding="utf-8")
    text, _ = build_report(repo, "main", tmp_path / "report.md", env={})
    table = text.split("### Experiments", 1)[1].split("### Quality gate", 1)[0]
    assert not [u for u in cml_urls(table) if "evil" in u]
    tokens = MarkdownIt("commonmark").enable("table").parse(table)
    widths, width = [], 0
    for token in tokens:
        if token.type == "tr_open":
            width = 0
        elif token.type in ("th_open", "td_open"):
            width += 1
        elif token.type == "tr_close":
            widths.append(width)
    header = next(ln for ln in table.splitlines() if ln.startswith("| Experiment"))
    # header, the committed configuration, hostile; each with the header's cells
    assert widths == [header.count(" | ") + 1] * 3
    assert not [t for t in tokens if t.type.startswith("html")]


def test_a_hostile_experiment_name_is_refused_before_the_table(tmp_path):
    from src.experiments import read_results
    from src.utils import PipelineError

    path = tmp_path / "results.json"
    for name in ("a](https://evil.example)", "a|b", "x" * 40, "`a`"):
        path.write_text(json.dumps({"experiments": [{"name": name}]}), encoding="utf-8")
        with pytest.raises(PipelineError, match="not the output of"):
            read_results(path)
