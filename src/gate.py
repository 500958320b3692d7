"""Quality gate: the PR's metrics against the bounds in params.yaml (`gate:`) and the base.

    python -m src.gate --base main          (make gate BASE=main)

Checks metrics/scores.json of the working tree (what `dvc repro` just wrote). Exits 1 and
names, for every failed check, the metric, its value and the bound. The gate is not a
pipeline stage: changing it reruns nothing.

The bounds come from the base revision's params.yaml when it has a `gate:` section, so a
PR cannot loosen the gate it is judged by; a PR that changes the gate sees the change
applied once it is merged (the report says so).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.config import ROOT
from src.revision import read_metrics, read_params, resolve
from src.utils import PipelineError, run_cli

RULES = ("min", "max", "max_drop")
TOLERANCE = 1e-9  # metrics are rounded to 6 decimals: equal means equal


def direction(metric: str) -> int:
    """+1 when higher is better, -1 when lower is better, 0 for counts (no better/worse)."""
    if metric.startswith("n_"):
        return 0
    if metric.endswith("loss") or metric.endswith("_std"):
        return -1
    return 1


@dataclass(frozen=True)
class Check:
    """One gate rule applied to one metric."""

    metric: str
    rule: str  # min | max | max_drop
    bound: float
    value: float | None  # the PR's value (for max_drop: how much it got worse)
    passed: bool
    skipped: bool
    detail: str  # one sentence naming the metric, its value and the bound


@dataclass
class GateResult:
    checks: list[Check] = field(default_factory=list)
    source: str = "params.yaml"  # where the bounds came from

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        if not self.checks:
            return "no gate configured (add a `gate:` section to params.yaml)"
        if self.passed:
            ran = sum(not c.skipped for c in self.checks)
            return f"passed ({ran} of {len(self.checks)} checks ran)"
        return "failed: " + "; ".join(c.detail for c in self.failures)


def validate_gate(gate: Any) -> dict[str, dict[str, float]]:
    """The `gate:` section as {rule: {metric: bound}}; PipelineError on anything else."""
    if gate is None:
        return {}
    if not isinstance(gate, dict):
        raise PipelineError("params.yaml `gate:` must map min/max/max_drop to {metric: bound}")
    unknown = sorted(set(gate) - set(RULES))
    if unknown:
        raise PipelineError(f"unknown gate rule(s) {unknown}: use {list(RULES)}")
    clean: dict[str, dict[str, float]] = {}
    for rule in RULES:
        bounds = gate.get(rule) or {}
        if not isinstance(bounds, dict):
            raise PipelineError(f"gate.{rule} must map metric names to numbers")
        for metric, bound in bounds.items():
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise PipelineError(f"gate.{rule}.{metric} must be a number, got {bound!r}")
            if rule == "max_drop" and bound < 0:
                raise PipelineError(f"gate.max_drop.{metric} must be >= 0, got {bound}")
        clean[rule] = {str(k): float(v) for k, v in sorted(bounds.items())}
    return clean


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def evaluate_gate(
    gate: dict[str, dict[str, float]],
    pr: dict[str, Any],
    base: dict[str, Any] | None,
    base_label: str = "base",
) -> list[Check]:
    """Apply every rule of a validated gate; a metric missing from the PR fails its checks."""
    checks: list[Check] = []
    for rule in RULES:
        for metric, bound in gate.get(rule, {}).items():
            value = pr.get(metric)
            if not isinstance(value, int | float):
                detail = f"{metric} is missing from the metrics (gate.{rule}: {_fmt(bound)})"
                checks.append(Check(metric, rule, bound, None, False, False, detail))
                continue
            if rule == "min":
                ok = value >= bound - TOLERANCE
                relation = "is at least" if ok else "is below"
                detail = f"{metric} = {_fmt(value)} {relation} the minimum {_fmt(bound)}"
                checks.append(Check(metric, rule, bound, value, ok, False, detail))
            elif rule == "max":
                ok = value <= bound + TOLERANCE
                relation = "is at most" if ok else "is above"
                detail = f"{metric} = {_fmt(value)} {relation} the maximum {_fmt(bound)}"
                checks.append(Check(metric, rule, bound, value, ok, False, detail))
            else:
                before = (base or {}).get(metric)
                if not isinstance(before, int | float):
                    detail = f"{metric}: no value on {base_label} to compare with (skipped)"
                    checks.append(Check(metric, rule, bound, None, True, True, detail))
                    continue
                sign = direction(metric) or 1
                drop = round((before - value) * sign, 9)
                ok = drop <= bound + TOLERANCE
                change = "is no worse than" if drop <= 0 else f"is {_fmt(drop)} worse than"
                verdict = "" if drop <= 0 else ("within the " if ok else "more than the ")
                detail = (
                    f"{metric} = {_fmt(value)} {change} {base_label}'s {_fmt(before)} "
                    f"({verdict}allowed drop {_fmt(bound)})"
                )
                checks.append(Check(metric, rule, bound, drop, ok, False, detail))
    return checks


def choose_bounds(
    base_params: dict[str, Any] | None, pr_params: dict[str, Any] | None, base_label: str
) -> tuple[dict[str, dict[str, float]], str, bool]:
    """The gate to apply: the base's when it has one, else the PR's.

    Returns (validated gate, where it came from, whether the PR changes it).
    """
    base_gate = (base_params or {}).get("gate")
    pr_gate = (pr_params or {}).get("gate")
    if base_gate:
        return validate_gate(base_gate), f"params.yaml on {base_label}", base_gate != pr_gate
    return validate_gate(pr_gate), "params.yaml", False


def run_gate(root: Path, base_rev: str) -> GateResult:
    """Gate the working tree's metrics against `base_rev`."""
    base_sha = resolve(root, base_rev)
    label = base_rev.removeprefix("origin/")
    pr_metrics = read_metrics(root, None)
    if pr_metrics is None:
        raise PipelineError("no metrics/scores.json in the working tree: run `dvc repro` first")
    gate, source, _ = choose_bounds(read_params(root, base_sha), read_params(root, None), label)
    checks = evaluate_gate(gate, pr_metrics, read_metrics(root, base_sha), label)
    return GateResult(checks=checks, source=source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare with")
    args = parser.parse_args()
    result = run_gate(ROOT, args.base)
    for check in result.checks:
        status = "skip" if check.skipped else ("PASS" if check.passed else "FAIL")
        print(f"{status}  {check.rule:<8} {check.detail}")
    if not result.checks:
        print(f"quality gate: {result.summary()}")
        return
    if not result.passed:
        raise PipelineError(f"quality gate {result.summary()} (bounds from {result.source})")
    print(f"quality gate {result.summary()} (bounds from {result.source})")


if __name__ == "__main__":
    run_cli(main)
