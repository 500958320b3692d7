"""The quality gate: rules, messages, where the bounds come from, and `python -m src.gate`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from src.gate import (
    choose_bounds,
    data_change,
    direction,
    evaluate_gate,
    judge,
    run_gate,
    validate_gate,
)
from src.noise import Interval
from src.utils import PipelineError
from tests.unit.experiment_repo import (
    BASE_METRICS,
    FAMILY_GATE,
    GATE,
    PR_METRICS,
    REGRESSION_DATA,
    dvc_lock,
    env_for,
    git,
    make_repo,
    params,
    predicted_side,
)

pytestmark = pytest.mark.mechanics  # never reads the configured dataset (pyproject.toml)

BASE_REGRESSION = {"r2": 0.62, "rmse": 10.5, "mae": 7.1, "n_test": 120}


def rules(gate):
    """The rules of a flat gate, validated."""
    return validate_gate(gate)["any"]


def test_metric_directions_are_the_tasks():
    assert direction("balanced_accuracy") == 1
    assert direction("roc_auc_ovr") == 1
    assert direction("log_loss") == -1
    assert direction("cv_accuracy_std") == -1
    assert direction("rmse") == -1 and direction("cv_rmse_mean") == -1
    assert direction("r2") == 1 and direction("cv_r2_std") == -1
    assert direction("n_test") == 0 and direction("train_accuracy") == 0


@pytest.mark.parametrize(
    ("gate", "line"),
    [
        ({"minimum": {"accuracy": 0.9}}, "gate.minimum: unknown key (did you mean min?)"),
        ({"min": {"accuracy": "high"}}, "gate.min.accuracy: 'high': must be a number"),
        ({"min": {"accuracy": True}}, "gate.min.accuracy: True: must be a number"),
        (
            {"max_drop": {"accuracy": -0.1}},
            "gate.max_drop.accuracy: -0.1: must be a number >= 0 (the largest allowed worsening)",
        ),
        ({"min": [0.9]}, "gate.min: [0.9]: must be null or a mapping of metric name"),
        ([1, 2], "gate: [1, 2]: must be null or a mapping of task families"),
        ({"regression": {"min": {"r2": "x"}}}, "gate.regression.min.r2: 'x': must be a number"),
        ({"regression": {"max_drop": {"r2": -1}}}, "gate.regression.max_drop.r2: -1: must be"),
        (
            {"classification": [1]},
            "gate.classification: [1]: must be null or a mapping of min, max, max_drop",
        ),
        ({"regression": {"floor": {"r2": 0.1}}}, "gate.regression.floor: unknown key"),
        (
            {"classification": {"min": {"f1_macro": 0.9}}, "min": {"r2": 0.1}},
            "gate: mixes task blocks ['classification'] with rules ['min']",
        ),
        (
            {"classification": {"max_drop_mode": "significant"}},
            r"gate.classification.max_drop_mode: 'significant': must be null or one of: delta",
        ),
        ({"max_drop_mode": 1}, "gate.max_drop_mode: 1: must be null or one of: delta"),
        (
            {"regression": {"max_drop": {"n_test": 1}}},
            "gate.regression.max_drop.n_test: 'n_test' has no better/worse direction",
        ),
        ({"min": {7: 0.5}}, "gate.min[7]: 7: must be a metric name (a string)"),
    ],
)
def test_invalid_gate_params_are_named(gate, line):
    with pytest.raises(PipelineError) as caught:
        validate_gate(gate)
    lines = str(caught.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"params.yaml: {line}"), lines


def test_a_bad_base_gate_names_the_base_branch():
    with pytest.raises(PipelineError, match=r"^params.yaml on main: gate.min.accuracy: 'x'"):
        choose_bounds({"gate": {"min": {"accuracy": "x"}}}, None, "main")


def test_failures_name_the_metric_its_value_and_the_bound():
    gate = rules(
        {
            "min": {"balanced_accuracy": 0.95},
            "max": {"log_loss": 0.1},
            "max_drop": {"balanced_accuracy": 0.03, "log_loss": 0.05, "f1_macro": 0.1},
        }
    )
    checks = evaluate_gate(gate, PR_METRICS, BASE_METRICS, "main")
    failed = {(c.rule, c.metric): c.detail for c in checks if not c.passed}
    assert failed == {
        ("min", "balanced_accuracy"): "balanced_accuracy = 0.9400 is below the minimum 0.9500",
        ("max", "log_loss"): "log_loss = 0.1200 is above the maximum 0.1000",
        ("max_drop", "balanced_accuracy"): (
            "balanced_accuracy = 0.9400 is 0.0450 worse than main's 0.9850 "
            "(more than the allowed drop 0.0300)"
        ),
        # lower is better for losses: a rise is the drop
        ("max_drop", "log_loss"): (
            "log_loss = 0.1200 is 0.0700 worse than main's 0.0500 "
            "(more than the allowed drop 0.0500)"
        ),
    }
    passed = [c.detail for c in checks if c.passed]
    assert passed == [
        "f1_macro = 0.9500 is 0.0360 worse than main's 0.9860 (within the allowed drop 0.1000)"
    ]


def test_bounds_are_inclusive_and_improvements_pass():
    gate = rules({"min": {"accuracy": 0.95}, "max_drop": {"log_loss": 0.0}})
    checks = evaluate_gate(gate, {"accuracy": 0.95, "log_loss": 0.04}, {"log_loss": 0.05}, "main")
    assert all(c.passed for c in checks)
    assert (
        checks[1].detail == "log_loss = 0.0400 is no worse than main's 0.0500 (allowed drop 0.0000)"
    )


def test_missing_metric_fails_and_missing_base_skips_the_drop_check():
    gate = rules({"min": {"recall": 0.5}, "max_drop": {"accuracy": 0.01}})
    checks = evaluate_gate(gate, {"accuracy": 0.9}, None, "main")
    assert [(c.metric, c.passed, c.skipped) for c in checks] == [
        ("recall", False, False),
        ("accuracy", True, True),
    ]
    assert checks[0].detail == "recall is missing from the PR's metrics (gate.min.recall: 0.5000)"
    assert "no value on main" in checks[1].detail


def test_the_base_gate_applies_so_a_pr_cannot_loosen_its_own():
    loose = {"min": {"balanced_accuracy": 0.1}}
    gate, source, changed = choose_bounds({"gate": GATE}, {"gate": loose}, "main")
    assert gate == validate_gate(GATE) and source == "params.yaml on main" and changed
    gate, source, changed = choose_bounds({}, {"gate": loose}, "main")  # first gate ever
    assert gate == validate_gate(loose) and source == "params.yaml" and not changed
    assert choose_bounds(None, None, "main") == ({}, "params.yaml", False)


# --- bounds per task family ------------------------------------------------------------


def test_a_classification_pr_is_judged_by_the_classification_block():
    base = pr = params(gate=FAMILY_GATE)
    result = judge(base, pr, BASE_METRICS, PR_METRICS, None, None, "main")
    assert result.family == "classification" and result.block == "gate.classification"
    assert {(c.rule, c.metric) for c in result.checks} == {
        ("min", "balanced_accuracy"),
        ("max", "log_loss"),
        ("max_drop", "balanced_accuracy"),
    }
    assert [c.metric for c in result.failures] == ["balanced_accuracy"]  # dropped 0.045


def test_a_regression_pr_is_judged_by_the_regression_block():
    base = pr = params(REGRESSION_DATA, gate=FAMILY_GATE)
    weak = {"r2": 0.25, "rmse": 14.0, "mae": 9.0, "n_test": 120}
    result = judge(base, pr, BASE_REGRESSION, weak, None, None, "main")
    assert result.family == "regression" and result.block == "gate.regression"
    assert {c.metric for c in result.checks} == {"r2"}  # no classification bound
    assert not result.passed
    assert result.summary() == (
        "failed: r2 = 0.2500 is below the minimum 0.3000; "
        "r2 = 0.2500 is 0.3700 worse than main's 0.6200 (more than the allowed drop 0.0500)"
    )
    fine = {**weak, "r2": 0.60}
    assert judge(base, pr, BASE_REGRESSION, fine, None, None, "main").summary() == (
        "passed (2 of 2 checks ran)"
    )


def test_a_family_without_a_block_has_no_bounds_and_says_so():
    only_classification = {"classification": FAMILY_GATE["classification"]}
    base = pr = params(REGRESSION_DATA, gate=only_classification)
    result = judge(base, pr, BASE_REGRESSION, BASE_REGRESSION, None, None, "main")
    assert result.checks == [] and result.passed
    assert result.summary() == (
        "no bounds for regression (no `gate.regression:` block) in params.yaml on main"
    )


def test_the_flat_gate_of_main_applies_to_any_task():
    flat = params(gate=GATE)  # main's gate before the per-task blocks
    result = judge(flat, params(gate=FAMILY_GATE), BASE_METRICS, PR_METRICS, None, None, "main")
    assert result.block == "gate" and result.changed
    assert [c.metric for c in result.failures] == ["balanced_accuracy"]
    # a regression PR against it: the classification metrics it names are missing, and fail
    regression = params(REGRESSION_DATA, gate=FAMILY_GATE)
    result = judge(flat, regression, BASE_METRICS, BASE_REGRESSION, None, None, "main")
    assert result.block == "gate" and result.family == "regression"
    failed = {c.detail for c in result.failures}
    assert failed == {
        "balanced_accuracy is missing from the PR's metrics (gate.min.balanced_accuracy: 0.9000)",
        "log_loss is missing from the PR's metrics (gate.max.log_loss: 0.3500)",
    }
    assert [c.skipped for c in result.checks if c.rule == "max_drop"] == [True]  # other data


def test_per_task_blocks_need_the_prs_task():
    pr = params(gate=FAMILY_GATE, target="count")  # an int target: declare data.task
    with pytest.raises(PipelineError, match="cannot choose the gate's block.*set data.task"):
        judge(params(gate=FAMILY_GATE), pr, BASE_METRICS, PR_METRICS, None, None, "main")


# --- a PR that changes the data --------------------------------------------------------

STRICT = {"min": {"balanced_accuracy": 0.95}, "max_drop": {"balanced_accuracy": 0.03}}
SCHEMA = params()["data"]["schema"]


@pytest.mark.parametrize(
    ("pr_data", "base_lock", "pr_lock", "reason"),
    [
        (
            {"source": "data/external/other.csv"},
            None,
            None,
            "data.source: `data/external/labels.csv` → `data/external/other.csv`",
        ),
        ({"target": "colour"}, None, None, "data.target: `label` → `colour`"),
        (
            {"schema": {**SCHEMA, "size": "int", "weight": "float"}},
            None,
            None,
            "data.schema: added `weight`, `size` `float` → `int`",
        ),
        ({"task": "binary"}, None, None, "data.task: `auto` → `binary`"),
        (
            {"target": "count", "task": "regression"},
            None,
            None,
            "task classification → regression; data.target: `label` → `count`; "
            "data.task: `auto` → `regression`",
        ),
        (
            {},
            dvc_lock("aaaa1111bbbb"),
            dvc_lock("cccc2222dddd"),
            "`data/external`: md5 `aaaa1111` → `cccc2222` in dvc.lock",
        ),
    ],
    ids=["source", "target", "schema", "task", "family", "dvc.lock"],
)
def test_changed_data_skips_max_drop_but_not_the_absolute_bounds(
    pr_data, base_lock, pr_lock, reason
):
    base, pr = params(gate=STRICT), params(gate=STRICT, **pr_data)
    assert data_change(base, pr, base_lock, pr_lock) == reason
    result = judge(base, pr, BASE_METRICS, PR_METRICS, base_lock, pr_lock, "main")
    assert result.data_change == reason
    by_rule = {c.rule: c for c in result.checks}
    assert by_rule["max_drop"].skipped and by_rule["max_drop"].passed
    assert by_rule["max_drop"].detail == f"balanced_accuracy: skipped: the data changed ({reason})"
    assert not by_rule["min"].passed  # 0.94 < 0.95 whatever the data
    assert result.summary() == "failed: balanced_accuracy = 0.9400 is below the minimum 0.9500"


def test_unchanged_data_still_applies_max_drop():
    base = params(gate=STRICT)
    pr = params(gate=STRICT, task="auto")  # absent and "auto" are the same task
    pr["train"]["n_estimators"] = 10  # model params are not data
    code_only = dvc_lock("aaaa1111bbbb", code_md5="1" * 32)  # new prepare code, same data
    assert data_change(base, pr, dvc_lock("aaaa1111bbbb"), code_only) is None
    result = judge(base, pr, BASE_METRICS, PR_METRICS, dvc_lock("aaaa1111bbbb"), code_only, "m")
    assert result.data_change is None
    drop = next(c for c in result.checks if c.rule == "max_drop")
    assert not drop.skipped and not drop.passed
    assert "0.0450 worse than m's 0.9850" in drop.detail


def test_data_change_wording_for_lock_and_schema_edge_cases():
    assert data_change(None, params(), None, None) is None  # nothing to compare with
    assert data_change(params(), params(), None, dvc_lock("ab")) is None  # base ran nothing
    wide = {f"c{i}": "float" for i in range(7)}
    assert data_change(params(schema={}), params(schema=wide), None, None) == (
        "data.schema: added `c0`, `c1`, `c2`, `c3` and 3 more"
    )
    moved = dvc_lock("ab")
    moved["stages"]["prepare"]["deps"][0]["path"] = "data/other"
    assert data_change(params(), params(), dvc_lock("ab"), moved) == (
        "`data/external`: no longer a data dependency in dvc.lock; "
        "`data/other`: new data dependency in dvc.lock"
    )
    pinned = params(sha256="1" * 64)
    assert data_change(pinned, params(sha256="2" * 64), None, None) == (
        "data.sha256: `111111111111` → `222222222222`"
    )
    assert data_change(params(), pinned, None, None) is None  # pinning the same file


# --- on a git repository and on the command line ---------------------------------------


def test_run_gate_on_a_two_commit_repo(tmp_path):
    repo = make_repo(tmp_path / "repo")
    result = run_gate(repo, "main")
    assert not result.passed
    assert [c.metric for c in result.failures] == ["balanced_accuracy"]
    assert result.summary().startswith("failed: balanced_accuracy = 0.9400 is 0.0450 worse")
    assert run_gate(repo, "pr").passed  # against itself nothing dropped


def test_run_gate_reads_dvc_lock_of_the_base_from_git(tmp_path):
    repo = make_repo(
        tmp_path / "repo", base_lock=dvc_lock("aaaa1111bbbb"), pr_lock=dvc_lock("aaaa1111bbbb")
    )
    assert run_gate(repo, "main").data_change is None
    (repo / "dvc.lock").write_text((repo / "dvc.lock").read_text().replace("aaaa1111", "eeee9999"))
    result = run_gate(repo, "main")  # the working tree's dvc.lock: `dvc repro` on new data
    assert result.data_change == "`data/external`: md5 `aaaa1111` → `eeee9999` in dvc.lock"
    assert result.passed  # min/max pass; the failing drop is not judged


def test_gate_cli_exits_nonzero_naming_metric_value_and_bound(tmp_path):
    repo = make_repo(tmp_path / "repo")
    proc = subprocess.run(
        [sys.executable, "-m", "src.gate", "--base", "main"],
        cwd=repo,
        env=env_for(repo),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  max_drop balanced_accuracy = 0.9400 is 0.0450 worse than main's 0.9850" in (
        proc.stdout
    )
    assert "quality gate failed: balanced_accuracy = 0.9400" in proc.stderr
    assert "(more than the allowed drop 0.0300)" in proc.stderr
    assert "data changed" not in proc.stdout

    git(repo, "checkout", "-q", "main")
    ok = subprocess.run(
        [sys.executable, "-m", "src.gate", "--base", "main"],
        cwd=repo,
        env=env_for(repo),
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "quality gate passed (3 of 3 checks ran) (bounds: gate from params.yaml on main)" in (
        ok.stdout
    )


def test_gate_cli_prints_why_the_data_changed(tmp_path):
    pr = params(source="data/external/churn.csv")
    repo = make_repo(tmp_path / "repo", pr_params=pr)
    proc = subprocess.run(
        [sys.executable, "-m", "src.gate", "--base", "main"],
        cwd=repo,
        env=env_for(repo),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        "data changed against main: data.source: `data/external/labels.csv` → "
        "`data/external/churn.csv`; max_drop checks skipped, min/max still apply"
    )
    assert "skip  max_drop balanced_accuracy: skipped: the data changed (data.source:" in (
        proc.stdout
    )
    assert "quality gate passed (2 of 3 checks ran)" in proc.stdout


def test_unknown_base_says_how_to_fetch_it(tmp_path):
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(PipelineError, match="fetch-depth: 0"):
        run_gate(repo, "origin/main")


def test_fork_controlled_values_in_the_reason_stay_inside_code_spans():
    # The reason lands in the PR comment, and `cml comment --publish` uploads what the
    # markdown links to: a fork's params must not become a link or an image.
    hostile = "![x](/etc/passwd) `x` | y"
    reason = data_change(params(), params(source=hostile), None, None)
    assert reason == "data.source: `data/external/labels.csv` → `![x](/etc/passwd) 'x' \\| y`"
    outside = reason.split("`")[::2]  # the text between the code spans
    assert not any("](" in part for part in outside)


NOISE_GATE = {"max_drop_mode": "noise", "max_drop": {"balanced_accuracy": 0.03, "log_loss": 0.0}}


def test_noise_mode_fails_only_when_the_whole_interval_is_beyond_the_allowed_drop():
    base = {"balanced_accuracy": 0.985, "log_loss": 0.05}
    pr = {"balanced_accuracy": 0.94, "log_loss": 0.06}  # 0.045 and 0.01 worse
    assert validate_gate(NOISE_GATE)["any"]["max_drop_mode"] == "noise"
    plain = evaluate_gate(
        rules({k: v for k, v in NOISE_GATE.items() if k != "max_drop_mode"}), pr, base, "`main`"
    )
    assert [c.passed for c in plain] == [False, False]  # the old behaviour, the default
    noisy = {  # PR − base: balanced accuracy -0.09 … +0.00, log loss +0.002 … +0.02
        "balanced_accuracy": Interval(-0.09, 0.0, "paired bootstrap"),
        "log_loss": Interval(0.002, 0.02, "paired bootstrap"),
    }
    checks = evaluate_gate(rules(NOISE_GATE), pr, base, "`main`", intervals=noisy)
    by_metric = {c.metric: c for c in checks}
    assert by_metric["balanced_accuracy"].passed  # could be no drop at all
    assert by_metric["balanced_accuracy"].detail == (
        "balanced_accuracy = 0.9400 against `main`'s 0.9850: drop 0.0450, 95% interval "
        "0.0000 … 0.0900 (paired bootstrap), within the allowed drop 0.0300"
    )
    assert not by_metric["log_loss"].passed  # significantly worse, and max_drop is 0
    assert "95% interval 0.0020 … 0.0200 (paired bootstrap), entirely above the allowed drop" in (
        by_metric["log_loss"].detail
    )
    # no interval for a metric: its plain change is checked, and the check says so
    checks = evaluate_gate(rules(NOISE_GATE), pr, base, "`main`", intervals={})
    assert [c.passed for c in checks] == [False, False]
    assert checks[0].detail.endswith("; no interval for it, so the plain change is checked")


def test_noise_mode_on_a_repo_with_paired_predictions(tmp_path):
    """One more wrong row of 86 drops balanced accuracy; max_drop 0 in noise mode lets it
    pass (within noise), the default mode fails it."""
    base_text, base_scores = predicted_side("multiclass", 2)
    pr_text, pr_scores = predicted_side("multiclass", 3)
    gate = {"max_drop": {"balanced_accuracy": 0.0}}
    results = {}
    for mode in ("delta", "noise"):
        repo = make_repo(
            tmp_path / mode,
            base_params=params(gate={**gate, "max_drop_mode": mode}),
            base_metrics=base_scores,
            pr_metrics=pr_scores,
            base_predictions=base_text,
            pr_predictions=pr_text,
        )
        results[mode] = run_gate(repo, "main")
    assert not results["delta"].passed
    (check,) = results["noise"].checks
    assert results["noise"].passed and "(paired bootstrap), within the allowed drop" in check.detail
