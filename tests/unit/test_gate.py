"""The quality gate: rules, messages, where the bounds come from, and `python -m src.gate`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from src.gate import choose_bounds, direction, evaluate_gate, run_gate, validate_gate
from src.utils import PipelineError
from tests.unit.experiment_repo import BASE_METRICS, GATE, PR_METRICS, env_for, git, make_repo


def test_metric_directions():
    assert direction("balanced_accuracy") == 1
    assert direction("roc_auc_ovr") == 1
    assert direction("log_loss") == -1
    assert direction("cv_accuracy_std") == -1
    assert direction("n_test") == 0


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ({"minimum": {"accuracy": 0.9}}, "unknown gate rule"),
        ({"min": {"accuracy": "high"}}, r"gate.min.accuracy must be a number"),
        ({"min": {"accuracy": True}}, r"gate.min.accuracy must be a number"),
        ({"max_drop": {"accuracy": -0.1}}, r"must be >= 0"),
        ({"min": [0.9]}, r"gate.min must map"),
        ([1, 2], r"must map min/max/max_drop"),
    ],
)
def test_invalid_gate_params_are_named(gate, message):
    with pytest.raises(PipelineError, match=message):
        validate_gate(gate)


def test_failures_name_the_metric_its_value_and_the_bound():
    gate = validate_gate(
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
    gate = validate_gate({"min": {"accuracy": 0.95}, "max_drop": {"log_loss": 0.0}})
    checks = evaluate_gate(gate, {"accuracy": 0.95, "log_loss": 0.04}, {"log_loss": 0.05}, "main")
    assert all(c.passed for c in checks)
    assert (
        checks[1].detail == "log_loss = 0.0400 is no worse than main's 0.0500 (allowed drop 0.0000)"
    )


def test_missing_metric_fails_and_missing_base_skips_the_drop_check():
    gate = validate_gate({"min": {"recall": 0.5}, "max_drop": {"accuracy": 0.01}})
    checks = evaluate_gate(gate, {"accuracy": 0.9}, None, "main")
    assert [(c.metric, c.passed, c.skipped) for c in checks] == [
        ("recall", False, False),
        ("accuracy", True, True),
    ]
    assert checks[0].detail == "recall is missing from the metrics (gate.min: 0.5000)"
    assert "no value on main" in checks[1].detail


def test_the_base_gate_applies_so_a_pr_cannot_loosen_its_own():
    loose = {"min": {"balanced_accuracy": 0.1}}
    gate, source, changed = choose_bounds({"gate": GATE}, {"gate": loose}, "main")
    assert gate == validate_gate(GATE) and source == "params.yaml on main" and changed
    gate, source, changed = choose_bounds({}, {"gate": loose}, "main")  # first gate ever
    assert gate == validate_gate(loose) and source == "params.yaml" and not changed
    assert choose_bounds(None, None, "main") == ({}, "params.yaml", False)


def test_run_gate_on_a_two_commit_repo(tmp_path):
    repo = make_repo(tmp_path / "repo")
    result = run_gate(repo, "main")
    assert not result.passed
    assert [c.metric for c in result.failures] == ["balanced_accuracy"]
    assert result.summary().startswith("failed: balanced_accuracy = 0.9400 is 0.0450 worse")
    assert run_gate(repo, "pr").passed  # against itself nothing dropped


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

    git(repo, "checkout", "-q", "main")
    ok = subprocess.run(
        [sys.executable, "-m", "src.gate", "--base", "main"],
        cwd=repo,
        env=env_for(repo),
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "quality gate passed (3 of 3 checks ran)" in ok.stdout


def test_unknown_base_says_how_to_fetch_it(tmp_path):
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(PipelineError, match="fetch-depth: 0"):
        run_gate(repo, "origin/main")
