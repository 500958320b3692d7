"""The PR report, built on a temporary git repo with a `main` commit and a PR commit."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from src.noise import Interval
from src.report import (
    LEGEND,
    build_report,
    data_section,
    export_line,
    metrics_section,
    params_section,
    pull_line,
    run_link,
)
from src.utils import PipelineError
from tests.unit.experiment_repo import (
    BASE_METRICS,
    FAMILY_GATE,
    PR_METRICS,
    REGRESSION_DATA,
    dvc_lock,
    env_for,
    git,
    make_repo,
    params,
    plot_frames,
    predicted_side,
)

pytestmark = pytest.mark.mechanics  # never reads the configured dataset (pyproject.toml)

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


def metrics_table(report: str) -> list[str]:
    """The lines of the Metrics section."""
    section = report.split("### Metrics\n", 1)[1]
    return section.split("\n### ", 1)[0].splitlines()


def test_metrics_table_has_base_pr_delta_and_direction_markers(built):
    repo, _, text, gate = built
    base_sha = git(repo, "rev-parse", "--short=7", "main").strip()
    assert f"| Metric | `main` `{base_sha}` | PR | Change | 95% interval | |" in text
    # main has no per-row predictions (as right after this feature lands): plain deltas,
    # no verdict, and one line saying so
    assert row(text, "balanced_accuracy") == [
        "balanced_accuracy",
        "0.9850",
        "0.9400",
        "-0.0450",
        "",
        "",
    ]
    assert row(text, "log_loss") == ["log_loss", "0.0500", "0.1200", "+0.0700", "", ""]
    assert (
        "- `main` has no `metrics/test_predictions.csv` (older pipeline): test-set changes "
        "are plain deltas, without a verdict."
    ) in metrics_table(text)
    assert row(text, "cv_accuracy_std") == [
        "cv_accuracy_std",
        "0.0200",
        "0.0150",
        "-0.0050",
        "",
        "",
    ]
    assert row(text, "n_test") == ["n_test", "86", "86", "0", "", ""]
    names = [ln.split("|")[1].strip() for ln in text.splitlines() if ln.startswith("| ")]
    metric_rows = [n for n in names if n in BASE_METRICS]
    assert metric_rows.index("n_test") > metric_rows.index("cv_accuracy_std")  # counts last
    assert not gate.passed


def test_markers_follow_the_tasks_metric_directions(built):
    text = built[2]
    assert LEGEND in text
    assert "higher is better for scores" in LEGEND and "lower for losses and errors" in LEGEND
    assert "training-set scores (`train_*`)" in LEGEND
    up, down = Interval(0.01, 0.03, "paired bootstrap"), Interval(-0.05, -0.03, "paired bootstrap")
    lines = metrics_section(
        {"accuracy": 0.9, "f1_macro": 0.9, "train_accuracy": 0.99, "n_train": 250},
        {"accuracy": 0.92, "f1_macro": 0.91, "train_accuracy": 0.95, "n_train": 260},
        "b",
        "PR",
        intervals={
            "accuracy": up,
            "f1_macro": Interval(-0.01, 0.03, "paired bootstrap"),
            "train_accuracy": down,
            "n_train": up,
        },
    )
    assert "| accuracy | 0.9000 | 0.9200 | +0.0200 | +0.0100 … +0.0300 | ✅ better |" in lines
    assert "| f1_macro | 0.9000 | 0.9100 | +0.0100 | -0.0100 … +0.0300 | ≈ within noise |" in (
        lines
    )
    assert "| train_accuracy | 0.9900 | 0.9500 | -0.0400 |  |  |" in lines  # no direction
    assert "| n_train | 250 | 260 | +10 |  |  |" in lines


def test_regression_metrics_get_their_directions():
    base = {"rmse": 10.0, "mae": 7.0, "r2": 0.6, "cv_rmse_mean": 11.0, "cv_r2_std": 0.05}
    pr = {"rmse": 9.0, "mae": 7.5, "r2": 0.55, "cv_rmse_mean": 12.0, "cv_r2_std": 0.03}
    intervals = {  # each change measured with a tight interval around it
        name: Interval(
            pr[name] - base[name] - 1e-3, pr[name] - base[name] + 1e-3, "paired bootstrap"
        )
        for name in base
        if not name.endswith("_std")  # src.noise gives a spread across folds no interval
    }
    lines = metrics_section(base, pr, "b", "PR", intervals=intervals)[2:]
    marks = {ln.split("|")[1].strip(): ln.split("|")[-2].strip() for ln in lines}
    assert marks["rmse"] == "✅ better"  # lower is better
    assert marks["mae"] == "❌ worse" and marks["cv_rmse_mean"] == "❌ worse"
    assert marks["r2"] == "❌ worse"  # higher is better
    assert marks["cv_r2_std"] == ""  # a spread across folds: no verdict


def test_a_regression_pr_report_uses_the_regression_bounds(tmp_path):
    regression = params(REGRESSION_DATA, gate=FAMILY_GATE)
    repo = make_repo(
        tmp_path / "repo",
        base_params=regression,
        pr_params=regression,
        base_metrics={"r2": 0.62, "rmse": 10.5, "n_test": 120},
        pr_metrics={"r2": 0.58, "rmse": 11.0, "n_test": 120},
    )
    text, gate = build_report(repo, "main", tmp_path / "report.md", env={})
    assert gate.passed
    assert "- **Quality gate:** ✅ passed (2 of 2 checks ran)" in text
    assert "Bounds from `gate.regression:` in params.yaml on `main` (for this PR's task, " in text
    assert "| r2 = 0.5800 is at least the minimum 0.3000 | ✅ pass |" in text
    assert row(text, "rmse")[-1] == "" and row(text, "r2")[-1] == ""  # no predictions on main
    assert "Data changed" not in text


def test_a_family_without_bounds_is_stated(tmp_path):
    only_classification = {"classification": FAMILY_GATE["classification"]}
    regression = params(REGRESSION_DATA, gate=only_classification)
    metrics = {"r2": 0.62, "rmse": 10.5, "n_test": 120}
    repo = make_repo(
        tmp_path / "repo",
        base_params=regression,
        pr_params=regression,
        base_metrics=metrics,
        pr_metrics=metrics,
    )
    text, _ = build_report(repo, "main", tmp_path / "report.md", env={})
    assert (
        "- **Quality gate:** ⚠️ no bounds for regression (no `gate.regression:` block) "
        "in params.yaml on `main`"
    ) in text
    assert "No bounds for regression (no `gate.regression:` block) in params.yaml on `main`." in (
        text
    )


@pytest.mark.parametrize(
    ("changes", "pr_lock", "reason"),
    [
        (
            {"source": "data/external/churn.csv"},
            dvc_lock("aaaa1111"),
            "data.source: `data/external/labels.csv` → `data/external/churn.csv`",
        ),
        ({}, dvc_lock("bbbb2222"), "`data/external`: md5 `aaaa1111` → `bbbb2222` in dvc.lock"),
    ],
    ids=["source", "dvc.lock"],
)
def test_changed_data_is_said_first_and_not_compared(tmp_path, changes, pr_lock, reason):
    repo = make_repo(
        tmp_path / "repo",
        pr_params=params(**changes),
        base_lock=dvc_lock("aaaa1111"),
        pr_lock=pr_lock,
    )
    text, gate = build_report(repo, "main", tmp_path / "report.md", env={})
    lines = text.splitlines()
    assert lines[0] == "## Experiment report"
    first = next(ln for ln in lines[1:] if ln.strip())
    assert first == (
        f"> **Data changed:** {reason} — metrics are not comparable with `main`, so the "
        "gate checks only absolute bounds (min/max), not drops."
    )
    assert lines.index(first) < next(i for i, ln in enumerate(lines) if "Quality gate" in ln)
    # both sides are shown, without better/worse
    assert "| Metric | `main` `" in text and "| PR | Change |" in text
    assert row(text, "balanced_accuracy") == ["balanced_accuracy", "0.9850", "0.9400", "-0.0450"]
    table = [ln for ln in metrics_table(text) if ln.startswith("| ")]
    assert len(table) == 1 + len(PR_METRICS)
    assert not [ln for ln in table if "better" in ln or "worse" in ln]
    assert "Not comparable: the data changed" in text and LEGEND not in text
    # the drop is not judged; the absolute bounds are
    assert gate.passed
    assert f"| balanced_accuracy: skipped: the data changed ({reason}) | ⏭️ skipped |" in text
    assert "| balanced_accuracy = 0.9400 is at least the minimum 0.9000 | ✅ pass |" in text


def test_changed_data_still_fails_an_absolute_bound(tmp_path):
    repo = make_repo(
        tmp_path / "repo",
        pr_params=params(target="colour"),
        pr_metrics={**PR_METRICS, "balanced_accuracy": 0.7},
    )
    text, gate = build_report(repo, "main", tmp_path / "report.md", env={})
    assert not gate.passed
    assert text.splitlines()[2].startswith("> **Data changed:** data.target: `label` → `colour` — ")
    assert "- **Quality gate:** ❌ failed: balanced_accuracy = 0.7000 is below the minimum" in text


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
    assert "Bounds from `gate:` in params.yaml on `main` (for any task)." in text
    assert "| balanced_accuracy = 0.9400 is at least the minimum 0.9000 | ✅ pass |" in text
    assert "(more than the allowed drop 0.0300) | ❌ FAIL |" in text
    assert "### Data and model" in text
    assert "No DVC-tracked data or model file differs from `main`." in text


def plots(report: str) -> list[str]:
    """The lines of the Plots section (blank lines dropped)."""
    section = report.split("### Plots\n", 1)[1].split("\n---\n", 1)[0]
    return [line for line in section.splitlines() if line]


def test_only_changed_plots_get_a_figure_linked_relative_to_the_report(built):
    _, out, text, _ = built
    # the PR's confusion matrix data differs; its curves and importance do not
    assert plots(text) == [
        "`main` dashed grey, the PR solid blue, on the same axes and scale.",
        "![Confusion matrix, main vs PR](report_images/confusion_matrix.png)",
        "ROC curves: unchanged",
        "Precision-recall curves: unchanged",
        "Feature importance: unchanged",
    ]
    assert sorted(p.name for p in (out.parent / "report_images").iterdir()) == [
        "confusion_matrix.png"
    ]
    assert (out.parent / "report_images/confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("task", "n_classes", "names"),
    [
        ("binary", None, ["confusion_matrix", "roc", "precision_recall", "feature_importance"]),
        ("multiclass", 20, ["confusion_matrix", "roc", "precision_recall", "feature_importance"]),
        ("regression", None, ["predicted_vs_actual", "residuals", "feature_importance"]),
    ],
)
def test_one_figure_per_changed_plot_for_each_task(tmp_path, task, n_classes, names):
    repo = make_repo(
        tmp_path / "repo",
        base_plots=plot_frames(task, flips=2, n_classes=n_classes),
        pr_plots=plot_frames(task, flips=20, n_classes=n_classes),
    )
    out = tmp_path / "out" / "report.md"
    text, _ = build_report(repo, "main", out, env={})
    links = re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", text)
    assert [target for _, target in links] == [f"report_images/{n}.png" for n in names]
    assert all(caption.endswith(", main vs PR") for caption, _ in links)
    assert sorted(p.name for p in (out.parent / "report_images").iterdir()) == sorted(
        f"{n}.png" for n in names
    )
    assert "unchanged" not in "\n".join(plots(text))


def test_a_base_with_an_older_plots_layout_gets_a_line_and_the_pr_alone(repo, tmp_path):
    git(repo, "checkout", "-q", "main")
    for cls in ("a", "b"):
        (repo / "plots" / "roc" / f"{cls}.csv").write_text("x,y\n0,0\n1,1\n")  # not fpr, tpr
    (repo / "plots" / "feature_importance.csv").unlink()
    git(repo, "commit", "-q", "-am", "an older layout")
    git(repo, "checkout", "-q", "pr")
    git(repo, "rebase", "-q", "main")
    for cls in ("a", "b"):
        (repo / "plots" / "roc" / f"{cls}.csv").write_text("fpr,tpr\n0.0,0.0\n0.5,1.0\n1,1\n")
    (repo / "plots" / "feature_importance.csv").write_text(
        "feature,importance,std\nsize,0.3,0.05\n"
    )
    text, _ = build_report(repo, "main", tmp_path / "report.md", env={})
    lines = plots(text)
    assert "ROC curves: `main`'s plot data cannot be drawn (roc has no column fpr, tpr); " in (
        "\n".join(lines)
    )
    assert "Feature importance: `main` has no feature_importance plot data; the PR's alone." in (
        lines
    )
    assert "![ROC curves, PR](report_images/roc.png)" in lines
    assert "![Feature importance, PR](report_images/feature_importance.png)" in lines
    assert "![Confusion matrix, main vs PR](report_images/confusion_matrix.png)" in lines
    assert "Precision-recall curves: unchanged" in lines


def test_a_base_without_plot_data_gets_one_line_and_the_pr_alone(repo, tmp_path):
    git(repo, "checkout", "-q", "-b", "bare", "main")
    git(repo, "rm", "-q", "-r", "plots")
    git(repo, "commit", "-q", "-m", "no plots")
    git(repo, "checkout", "-q", "pr")
    text, _ = build_report(repo, "bare", tmp_path / "report.md", env={})
    lines = plots(text)
    assert lines[0] == "`bare` has no committed plot data: the PR's plots alone."
    assert lines[1:] == [
        f"![{title}, PR](report_images/{name}.png)"
        for name, title in (
            ("confusion_matrix", "Confusion matrix"),
            ("roc", "ROC curves"),
            ("precision_recall", "Precision-recall curves"),
            ("feature_importance", "Feature importance"),
        )
    ]


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
    assert len(list((tmp_path / "a").rglob("*.png"))) == 1


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
    assert "unchanged" not in text and "![ROC curves, PR](report_images/roc.png)" in text


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
    assert params_section({}, "`main`") == ["No params changed against `main`."]
    lines = params_section({"a.b": (None, [1, 2]), "c": (None, "x|y")}, "`main`")
    assert "| `a.b` | `null` | `[1, 2]` |" in lines
    assert "| `c` | `null` | `x\\|y` |" in lines
    lines = metrics_section({"accuracy": 0.9}, {"accuracy": 0.9 + 1e-6, "new": 1.0}, "b", "PR")
    assert "| accuracy | 0.9000 | 0.9000 | +0.000001 |  |  |" in lines
    assert "| new | — | 1.0000 |  |  |  |" in lines


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


def paired_repo(path, base_flips, pr_flips, task="multiclass", **kwargs):
    """main and a PR whose per-row test predictions differ in `pr_flips - base_flips` rows
    (real files, as evaluate writes them; metrics computed from them)."""
    base_text, base_scores = predicted_side(task, base_flips)
    pr_text, pr_scores = predicted_side(task, pr_flips)
    return make_repo(
        path,
        base_metrics=base_scores,
        pr_metrics=pr_scores,
        base_predictions=base_text,
        pr_predictions=pr_text,
        **kwargs,
    )


def test_paired_report_marks_a_real_drop_worse_and_one_row_as_noise(tmp_path):
    repo = paired_repo(tmp_path / "worse", 2, 30)
    text, _ = build_report(repo, "main", tmp_path / "worse.md", env={})
    accuracy = row(text, "accuracy")
    assert accuracy[-1] == "❌ worse"
    low, high = (float(x) for x in accuracy[-2].split(" … "))
    assert low < high < 0
    assert row(text, "n_test")[-1] == ""
    assert (
        "- Test-set intervals: paired bootstrap of the difference, 1000 resamples of the "
        "same 86 test rows, seed 0, 95%."
    ) in text
    assert LEGEND in text

    repo = paired_repo(tmp_path / "noise", 2, 3)
    text, _ = build_report(repo, "main", tmp_path / "noise.md", env={})
    accuracy = row(text, "accuracy")
    assert accuracy[3] == "-0.0116" and accuracy[-1] == "≈ within noise"
    low, high = (float(x) for x in accuracy[-2].split(" … "))
    assert low < -0.0116 and high >= 0


def test_a_metrics_file_dvc_cannot_read_is_named(repo, tmp_path):
    """`dvc metrics diff` skips a file it cannot parse; the report says which one."""
    (repo / "metrics" / "scores.json").write_text("{not json")
    with pytest.raises(PipelineError, match=r"metrics/scores.json at the working tree holds no"):
        build_report(repo, "main", tmp_path / "r.md", env={})
