"""The registry's decisions that need no server: the gate on promotion (src/gate.py's
min/max bounds of the version's task family), the release's alias, and params.yaml's
`registry:` block. The server side is tests/integration/test_registry_server.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from src.models.registry import (
    Settings,
    check_alias,
    check_promotion,
    check_version,
    metric_tags,
    promotion_checks,
    recorded_metrics,
    release_alias,
)
from src.params import check
from src.utils import ParamsError, PipelineError

GATE = {
    "classification": {
        "min": {"balanced_accuracy": 0.9},
        "max": {"log_loss": 0.35},
        "max_drop": {"balanced_accuracy": 0.0},
    },
    "regression": {"min": {"r2": 0.3}, "max_drop": {"r2": 0.0}},
}
GOOD = {"balanced_accuracy": 0.95, "log_loss": 0.2, "accuracy": 0.96}


def test_a_version_within_the_bounds_of_its_family_passes():
    checks = check_promotion(GATE, "multiclass", GOOD, "version 3 of m", "production")
    assert {(c.rule, c.metric) for c in checks} == {
        ("min", "balanced_accuracy"),
        ("max", "log_loss"),
    }
    assert all(c.passed for c in checks)


def test_max_drop_is_not_a_promotion_rule():
    """A rollback to an older, slightly worse version stays possible."""
    checks, block = promotion_checks(GATE, "binary", GOOD)
    assert block == "gate.classification"
    assert "max_drop" not in {c.rule for c in checks}


@pytest.mark.parametrize(
    ("metrics", "named"),
    [
        (
            {**GOOD, "balanced_accuracy": 0.85},
            "balanced_accuracy = 0.8500 is below the minimum 0.9000",
        ),
        ({**GOOD, "log_loss": 0.5}, "log_loss = 0.5000 is above the maximum 0.3500"),
        ({"accuracy": 0.99}, "balanced_accuracy is missing"),
    ],
)
def test_a_version_outside_a_bound_is_refused_naming_it(metrics, named):
    with pytest.raises(PipelineError) as raised:
        check_promotion(GATE, "multiclass", metrics, "version 3 of m", "production")
    message = str(raised.value)
    assert named in message
    assert "version 3 of m fails the gate (gate.classification" in message
    assert "'production'" in message and "nothing changed" in message


def test_the_task_picks_the_block():
    check_promotion(GATE, "regression", {"r2": 0.5}, "v", "production")
    with pytest.raises(PipelineError, match="r2 = 0.1000 is below the minimum 0.3000"):
        check_promotion(GATE, "regression", {"r2": 0.1}, "v", "production")


def test_a_version_without_recorded_metrics_cannot_be_promoted():
    with pytest.raises(PipelineError, match="no recorded test metrics"):
        check_promotion(GATE, "multiclass", {}, "version 1 of m", "production")


def test_no_gate_means_no_bounds():
    assert check_promotion(None, "multiclass", GOOD, "v", "production") == []
    assert check_promotion({"regression": {"min": {"r2": 0.3}}}, "binary", GOOD, "v", "p") == []


def test_an_invalid_gate_is_a_params_error():
    with pytest.raises(ParamsError):
        promotion_checks({"classification": {"min": {"x": "high"}}}, "binary", GOOD)


def test_metrics_round_trip_through_version_tags_exactly():
    scores = {"f1_macro": 0.123456789012345, "n_test": 86, "flag": True, "nested": {"a": 1}}
    tags = metric_tags(scores)
    assert tags == {"metric.f1_macro": repr(0.123456789012345), "metric.n_test": "86.0"}
    assert recorded_metrics({**tags, "git_sha": "abc", "metric.bad": "x"}) == {
        "f1_macro": 0.123456789012345,
        "n_test": 86.0,
    }


def test_the_release_alias_follows_the_ref():
    settings = Settings("m", "candidate", "production")
    assert release_alias(settings, {"GITHUB_REF": "refs/heads/main"}) == "candidate"
    assert release_alias(settings, {"GITHUB_REF": "refs/tags/v1.4.0"}) == "production"
    assert release_alias(settings, {"GITHUB_REF": "refs/tags/nightly"}) is None
    assert release_alias(settings, {}) is None


@pytest.mark.parametrize("alias", ["latest", "v3", "V12", "1st", "a b", "", "x" * 300])
def test_aliases_mlflow_refuses_are_refused_first(alias):
    with pytest.raises(PipelineError, match="ALIAS"):
        check_alias(alias)


@pytest.mark.parametrize("version", ["0", "-1", "two", "1.5", ""])
def test_a_version_must_be_a_number(version):
    with pytest.raises(PipelineError, match="must be a version number"):
        check_version(version)


def test_settings_need_a_registry_block():
    with pytest.raises(PipelineError, match="no `registry:` section"):
        Settings.from_params({})


def test_params_registry_block_is_typed_with_one_line_per_key(params):
    base = {k: v for k, v in params.items() if k != "registry"}
    check({**base, "registry": {"model_name": "team.model-1"}})
    bad = {
        **base,
        "registry": {"model_name": "has space", "branch_alias": "latest", "tag_alias": 5},
    }
    with pytest.raises(ParamsError) as raised:
        check(bad)
    lines = raised.value.lines()
    assert any(line.startswith("params.yaml: registry.model_name: 'has space'") for line in lines)
    assert any("registry.tag_alias: 5: must be an alias" in line for line in lines)
    with pytest.raises(ParamsError, match="registry.branch_alias: 'latest': reserved by MLflow"):
        check({**base, "registry": {"model_name": "m", "branch_alias": "latest"}})
    with pytest.raises(ParamsError, match="registry.tag_alias: 'same': must differ"):
        check(
            {**base, "registry": {"model_name": "m", "branch_alias": "same", "tag_alias": "same"}}
        )
    with pytest.raises(ParamsError, match="registry.model_nam: unknown key"):
        check({**base, "registry": {"model_nam": "m"}})


def cli(*args: str) -> subprocess.CompletedProcess:
    from src.config import ROOT
    from tests.repo_tools import venv_env

    return subprocess.run(
        [sys.executable, "-m", "src.models.registry", *args],
        cwd=ROOT,
        env=venv_env(ROOT),  # without MLFLOW_TRACKING_URI
        capture_output=True,
        text=True,
    )


def test_without_a_server_register_skips_and_promote_refuses():
    """The journey without MLflow: the release's `make register` is a notice, exit 0; a
    promotion asked for by hand is an error naming what is missing."""
    skipped = cli("register")
    assert skipped.returncode == 0, skipped.stderr
    assert "register skipped: MLFLOW_TRACKING_URI is not set" in skipped.stdout
    refused = cli("promote", "--version", "1", "--alias", "production")
    assert refused.returncode == 1
    errors = [line for line in refused.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "MLFLOW_TRACKING_URI is not set" in errors[0]
