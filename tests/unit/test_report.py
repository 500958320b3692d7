"""The PR report, built on a temporary git repo with a `main` commit and a PR commit."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from src.report import (
    build_report,
    data_section,
    export_line,
    metrics_section,
    params_section,
    pull_line,
    run_link,
)
from src.utils import PipelineError
from tests.unit.experiment_repo import BASE_METRICS, PR_METRICS, env_for, git, make_repo

CI_ENV = {
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "acme/penguins",
    "GITHUB_RUN_ID": "123456",
}


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path / "repo")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One report of the PR commit against main, read by the tests that only look at it."""
    top = tmp_path_factory.mktemp("built")
    repo = make_repo(top / "repo")
    out = top / "out" / "report.md"
    status = top / "dvc_pull.json"
    status.write_text(
        json.dumps(
            {"state": "pulled", "message": "pulled data and run-cache from remote `storage`"}
        )
    )
    text, gate = build_report(repo, "main", out, pull_status=status, env=CI_ENV)
    return repo, out, text, gate


def row(report: str, first_cell: str) -> list[str]:
    (line,) = [ln for ln in report.splitlines() if ln.startswith(f"| {first_cell} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_metrics_table_has_base_pr_delta_and_direction_markers(built):
    repo, _, text, gate = built
    base_sha = git(repo, "rev-parse", "--short=7", "main").strip()
    assert f"| Metric | `main` `{base_sha}` | PR | Change | |" in text
    assert row(text, "balanced_accuracy") == [
        "balanced_accuracy",
        "0.9850",
        "0.9400",
        "-0.0450",
        "❌ worse",
    ]
    assert row(text, "log_loss") == ["log_loss", "0.0500", "0.1200", "+0.0700", "❌ worse"]
    assert row(text, "cv_accuracy_std") == [
        "cv_accuracy_std",
        "0.0200",
        "0.0150",
        "-0.0050",
        "✅ better",
    ]
    assert row(text, "n_test") == ["n_test", "86", "86", "0", ""]
    names = [ln.split("|")[1].strip() for ln in text.splitlines() if ln.startswith("| ")]
    metric_rows = [n for n in names if n in BASE_METRICS]
    assert metric_rows.index("n_test") > metric_rows.index("cv_accuracy_std")  # counts last
    assert not gate.passed


def test_params_gate_and_data_sections(built):
    text = built[2]
    assert row(text, "`train.model_type`") == [
        "`train.model_type`",
        "`random_forest`",
        "`gradient_boosting`",
    ]
    assert row(text, "`train.n_estimators`") == ["`train.n_estimators`", "`200`", "`50`"]
    assert "`train.max_depth`" not in text  # unchanged params are not listed
    assert "- **Quality gate:** ❌ failed: balanced_accuracy = 0.9400 is 0.0450 worse" in text
    assert "Bounds from params.yaml on `main`." in text
    assert "| balanced_accuracy = 0.9400 is at least the minimum 0.9000 | ✅ pass |" in text
    assert "(more than the allowed drop 0.0300) | ❌ FAIL |" in text
    assert "### Data and model" in text
    assert "Not available: ERROR: you are not inside of a DVC repository" in text


def test_plots_of_base_beside_pr_linked_relative_to_the_report(built):
    _, out, text, _ = built
    links = re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", text)
    assert [target for _, target in links] == [
        f"report_images/{side}/{name}.png"
        for name in ("confusion_matrix", "roc", "precision_recall", "feature_importance")
        for side in ("base", "pr")
    ]
    assert links[0][0] == "Confusion matrix, main" and links[1][0] == "Confusion matrix, PR"
    for _, target in links:
        assert (out.parent / target).read_bytes()[:4] == b"\x89PNG"
    images = out.parent / "report_images"
    # the PR's confusion matrix data differs, so its picture does; ROC data does not
    assert (images / "base/confusion_matrix.png").read_bytes() != (
        images / "pr/confusion_matrix.png"
    ).read_bytes()
    assert (images / "base/roc.png").read_bytes() == (images / "pr/roc.png").read_bytes()


def test_same_commit_same_report_bytes_except_the_run_link(repo, tmp_path):
    first, _ = build_report(repo, "main", tmp_path / "a" / "report.md", env=CI_ENV)
    second, _ = build_report(
        repo, "main", tmp_path / "b" / "report.md", env={**CI_ENV, "GITHUB_RUN_ID": "999"}
    )
    assert (
        first.splitlines()[-1]
        == "[Workflow run](https://github.com/acme/penguins/actions/runs/123456)"
    )
    assert first.splitlines()[:-1] == second.splitlines()[:-1]
    for png in sorted((tmp_path / "a").rglob("*.png")):
        twin = tmp_path / "b" / png.relative_to(tmp_path / "a")
        assert png.read_bytes() == twin.read_bytes(), png.name
    assert len(list((tmp_path / "a").rglob("*.png"))) == 8


def test_no_run_link_outside_ci():
    assert run_link({}) is None
    assert run_link({**CI_ENV, "GITHUB_SERVER_URL": "https://ghe.example/"}) == (
        "https://ghe.example/acme/penguins/actions/runs/123456"
    )


def test_stale_images_are_removed(repo, tmp_path):
    stale = tmp_path / "report_images" / "base" / "old_plot.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    build_report(repo, "main", tmp_path / "report.md", env={})
    assert not stale.exists()


def test_first_pr_when_the_base_has_no_metrics(tmp_path):
    repo = make_repo(tmp_path / "repo", base_has_metrics=False)
    text, gate = build_report(repo, "main", tmp_path / "report.md", env={})
    assert "> **First experiment:** `main` has no `metrics/scores.json` yet" in text
    assert "| Metric | PR |" in text
    assert row(text, "balanced_accuracy") == ["balanced_accuracy", "0.9400"]
    assert "no value on `main` to compare with (skipped) | ⏭️ skipped |" in text
    assert gate.passed  # the absolute bounds still apply; nothing to drop from
    assert "report_images/base/" not in text and "report_images/pr/roc.png" in text


def test_pull_status_lines(built, tmp_path):
    assert "- **DVC remote:** ✅ pulled data and run-cache from remote `storage`" in built[2]
    status = tmp_path / "dvc_pull.json"
    status.write_text(json.dumps({"state": "skipped", "message": "no credentials for `storage`"}))
    assert pull_line(status) == "**DVC remote:** ⚠️ `dvc pull` skipped: no credentials for `storage`"
    status.write_text(json.dumps({"state": "failed", "message": "timeout"}))
    assert pull_line(status) == "**DVC remote:** ⚠️ `dvc pull` failed: timeout"
    assert pull_line(tmp_path / "absent.json") is None and pull_line(None) is None


def test_unknown_base_and_missing_metrics_are_clear_errors(repo, tmp_path):
    with pytest.raises(PipelineError, match=r"'origin/main' not found.*fetch-depth: 0"):
        build_report(repo, "origin/main", tmp_path / "r.md", env={})
    (repo / "metrics" / "scores.json").unlink()
    with pytest.raises(PipelineError, match="run `dvc repro` first"):
        build_report(repo, "main", tmp_path / "r.md", env={})


def test_dvc_diff_in_a_dvc_repo_and_its_summary(repo, tmp_path):
    subprocess.run(["dvc", "init", "-q"], cwd=repo, env=env_for(repo), check=True)
    text, _ = build_report(repo, "main", tmp_path / "r.md", env={})
    assert "No DVC-tracked data or model file differs from `main`." in text
    diff = {
        "added": [{"path": "data/new.csv"}],
        "modified": [{"path": f"data/{i}.csv"} for i in range(30)],
        "renamed": [{"path": {"old": "a.csv", "new": "b.csv"}}],
    }
    lines = data_section(diff, "main")
    assert lines[0] == "`dvc diff main`: 1 added, 30 modified, 1 renamed."
    assert "| added | `data/new.csv` |" in lines
    assert lines[-1] == "| … | and 7 more |"


def test_section_helpers_handle_edge_cases():
    assert params_section({"a": 1}, {"a": 1}, "`main`") == ["No params changed against `main`."]
    lines = params_section({"a": {"b": None}}, {"a": {"b": [1, 2]}, "c": "x|y"}, "`main`")
    assert "| `a.b` | `null` | `[1, 2]` |" in lines
    assert "| `c` | — | `x\\|y` |" in lines
    lines = metrics_section({"accuracy": 0.9}, {"accuracy": 0.9 + 1e-6, "new": 1.0}, "b", "PR")
    assert "| accuracy | 0.9000 | 0.9000 | +0.000001 | ✅ better |" in lines
    assert "| new | — | 1.0000 |  |  |" in lines


def test_report_cli_writes_the_file(repo):
    proc = subprocess.run(
        [sys.executable, "-m", "src.report", "--base", "main", "--out", "out/report.md"],
        cwd=repo,
        env=env_for(repo),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "quality gate failed" in proc.stdout
    assert (repo / "out" / "report.md").read_text().startswith("## Experiment report")
    assert PR_METRICS["balanced_accuracy"] == 0.94


def test_export_parity_line():
    export = {
        "parity_tolerance": 1e-05,
        "test_label_mismatches": 0,
        "test_max_abs_proba_diff": 8e-07,
        "test_rows": 86,
        "train_label_mismatches": 0,
        "train_max_abs_proba_diff": 9e-07,
        "train_rows": 258,
    }
    line = export_line(export)
    assert line.startswith("✅") and "344 rows (test, train)" in line and "9.0e-07" in line
    assert export_line({**export, "test_label_mismatches": 2}).startswith("❌ ")
    assert export_line({**export, "train_max_abs_proba_diff": 1e-3}).startswith("❌ ")
    assert "export stage has not run" in export_line(None)


def test_report_shows_export_parity(built):
    _, _, text, _ = built
    assert "export stage has not run" in text  # the temp repo has no metrics/export.json
