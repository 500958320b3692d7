"""Quality gate: the PR's metrics against the bounds in params.yaml (`gate:`) and the base.

    python -m src.gate --base main          (make gate BASE=main)

Checks metrics/scores.json of the working tree (what `dvc repro` just wrote). Exits 1 and
names, for every failed check, the metric, its value and the bound. The gate is not a
pipeline stage: changing it reruns nothing.

The bounds come from the base revision's params.yaml when it has a `gate:` section, so a
PR cannot loosen the gate it is judged by; a PR that changes the gate sees the change
applied once it is merged (the report says so). `gate:` holds one block per task family
(`classification:`, `regression:`), and the PR's family picks the block; the older flat
form (`min`/`max`/`max_drop` directly under `gate:`) applies to any task.

A PR that changes the data (`data_change`: source, target, schema, task, or the md5 of
the prepare stage's data in dvc.lock) is not judged against other data: its `max_drop`
checks are skipped, `min`/`max` still apply.

`max_drop_mode` in a block says how a drop is measured: `delta` (the default) compares the
two values; `noise` fails only when the whole 95 % interval of the drop (src/noise.py:
paired bootstrap on the test rows, CV folds) is above `max_drop`, so `max_drop: 0` then
means "significantly worse". A metric without an interval is checked by its plain delta,
and the check says so.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.config import ROOT
from src.noise import LEVEL, Comparison, Interval, compare
from src.params import MODE, RULES, check_gate
from src.revision import dvc_results, read_lock, read_params, read_text, resolve
from src.tasks import FAMILIES, TaskError, metric_direction, task_family
from src.utils import PipelineError, run_cli

ANY_TASK = "any"  # the block key of the flat (legacy) gate: applies to every task family
TOLERANCE = 1e-9  # metrics are rounded to 6 decimals: equal means equal
DATA_KEYS = ("source", "target", "schema", "task")  # what the data is; `task` absent = auto
MAX_NAMES = 4  # columns named per kind of schema change before "and N more"


def direction(metric: str) -> int:
    """+1 when higher is better, -1 when lower is better, 0 for no direction (the task's)."""
    return metric_direction(metric)


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
    block: str = "gate"  # the section applied: gate (any task), gate.classification, ...
    family: str | None = None  # the PR's task family, when params tell it
    data_change: str | None = None  # why the PR's data differs from the base's, if it does
    changed: bool = False  # the PR changes `gate:` (applies once merged)
    note: str | None = None  # why no bounds apply, when a family has no block

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        if not self.checks:
            return self.note or "no gate configured (add a `gate:` section to params.yaml)"
        if self.passed:
            ran = sum(not c.skipped for c in self.checks)
            return f"passed ({ran} of {len(self.checks)} checks ran)"
        return "failed: " + "; ".join(c.detail for c in self.failures)


# --- the gate's params -----------------------------------------------------------------


def _rules(block: Any) -> dict[str, Any]:
    """{rule: {metric: bound}}, plus `max_drop_mode` when the block sets it."""
    rules: dict[str, Any] = {
        rule: {str(k): float(v) for k, v in sorted(((block or {}).get(rule) or {}).items())}
        for rule in RULES
    }
    if (block or {}).get(MODE) is not None:
        rules[MODE] = block[MODE]
    return rules


def validate_gate(gate: Any, source: str = "params.yaml") -> dict[str, dict[str, dict[str, float]]]:
    """The `gate:` section as {block: {rule: {metric: bound}}}; ParamsError (one line per
    bad key, src.params) on anything else.

    A block is a task family (`classification`, `regression`), or `ANY_TASK` for the flat
    form with the rules directly under `gate:`.
    """
    check_gate(gate, source)
    if not gate:
        return {}
    if set(gate) & {*RULES, MODE}:
        return {ANY_TASK: _rules(gate)}
    return {f: _rules(gate[f]) for f in FAMILIES if f in gate}


def bounds_for(
    gate: dict[str, dict[str, Any]], family: str | None
) -> tuple[dict[str, Any], str, str | None]:
    """The rules of a validated gate for a task family: (rules, their key, why none apply)."""
    if ANY_TASK in gate:
        return gate[ANY_TASK], "gate", None
    if not gate:
        return {}, "gate", None
    if family is None:
        raise PipelineError("the gate has per-task blocks but the PR's task is unknown")
    if family in gate:
        return gate[family], f"gate.{family}", None
    return {}, f"gate.{family}", f"no bounds for {family} (no `gate.{family}:` block)"


def choose_bounds(
    base_params: dict[str, Any] | None, pr_params: dict[str, Any] | None, base_label: str
) -> tuple[dict[str, dict[str, Any]], str, bool]:
    """The gate to apply: the base's when it has one, else the PR's.

    Returns (validated gate, where it came from, whether the PR changes it).
    """
    base_gate = (base_params or {}).get("gate")
    pr_gate = (pr_params or {}).get("gate")
    if base_gate:
        source = f"params.yaml on {base_label}"
        return validate_gate(base_gate, source), source, base_gate != pr_gate
    return validate_gate(pr_gate), "params.yaml", False


# --- did the data change? --------------------------------------------------------------


def _family(data: dict[str, Any]) -> str | None:
    try:
        return task_family(data)
    except TaskError:
        return None


def _code(value: Any) -> str:
    """A value from the PR's params or dvc.lock as an inline code span: a fork controls it,
    and the reason lands in the markdown that CML renders (and whose links it uploads)."""
    text = str(value).replace("`", "'").replace("|", "\\|").replace("\n", " ")
    return f"`{text[:120]}`"


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")


def _schema_change(before: Any, after: Any) -> str:
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return "data.schema changed"
    parts = []
    added = [_code(c) for c in after if c not in before]
    removed = [_code(c) for c in before if c not in after]
    retyped = [
        f"{_code(c)} {_code(before[c])} → {_code(after[c])}"
        for c in after
        if c in before and before[c] != after[c]
    ]
    if added:
        parts.append(f"added {_names(added)}")
    if removed:
        parts.append(f"removed {_names(removed)}")
    if retyped:
        parts.append(_names(retyped))
    return "data.schema: " + ", ".join(parts)


def _data_deps(lock: dict[str, Any] | None) -> dict[str, str] | None:
    """{path: hash} of the prepare stage's data deps in a dvc.lock (code deps left out)."""
    stage = ((lock or {}).get("stages") or {}).get("prepare")
    if not isinstance(stage, dict):
        return None
    deps: dict[str, str] = {}
    for dep in stage.get("deps") or []:
        path = str(dep.get("path", ""))
        if not path or path.startswith("src/") or path.endswith(".py"):
            continue
        digest = dep.get("md5") or dep.get("etag") or dep.get("checksum") or ""
        deps[path] = str(digest).removesuffix(".dir")
    return deps


def data_change(
    base_params: dict[str, Any] | None,
    pr_params: dict[str, Any] | None,
    base_lock: dict[str, Any] | None,
    pr_lock: dict[str, Any] | None,
) -> str | None:
    """One line saying how the PR's data differs from the base's, or None when it is the same.

    Compares data.source, data.target, data.schema, data.task (absent = auto), data.sha256
    (when both sides pin one), the task family, and the md5 of the prepare stage's data
    deps in dvc.lock. A side without params.yaml or without a prepare stage in dvc.lock is
    not compared on that count.
    """
    reasons: list[str] = []
    if base_params is not None and pr_params is not None:
        before, after = base_params.get("data") or {}, pr_params.get("data") or {}
        was, now = _family(before), _family(after)
        if was and now and was != now:
            reasons.append(f"task {was} → {now}")
        for key in DATA_KEYS:
            old, new = before.get(key), after.get(key)
            if key == "task":
                old, new = old or "auto", new or "auto"
            if old == new:
                continue
            if key == "schema":
                reasons.append(_schema_change(old, new))
            else:
                reasons.append(f"data.{key}: {_code(old)} → {_code(new)}")
        old, new = before.get("sha256"), after.get("sha256")
        if old and new and old != new:
            reasons.append(f"data.sha256: {_code(str(old)[:12])} → {_code(str(new)[:12])}")
    old_deps, new_deps = _data_deps(base_lock), _data_deps(pr_lock)
    if old_deps is not None and new_deps is not None:
        for path in sorted(set(old_deps) | set(new_deps)):
            old, new = old_deps.get(path), new_deps.get(path)
            if old == new:
                continue
            if old is None:
                reasons.append(f"{_code(path)}: new data dependency in dvc.lock")
            elif new is None:
                reasons.append(f"{_code(path)}: no longer a data dependency in dvc.lock")
            else:
                reasons.append(
                    f"{_code(path)}: md5 {_code(old[:8])} → {_code(new[:8])} in dvc.lock"
                )
    return "; ".join(reasons) or None


# --- the checks ------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def evaluate_gate(
    rules: dict[str, Any],
    pr: dict[str, Any],
    base: dict[str, Any] | None,
    base_label: str = "base",
    changed_data: str | None = None,
    key: str = "gate",
    intervals: dict[str, Interval] | None = None,
) -> list[Check]:
    """Apply every rule of a validated block (`key`) to the PR's metrics.

    A metric missing from the PR fails its checks. With `changed_data` (a `data_change`
    reason) every max_drop check is skipped: the base's metrics are of other data. With
    `max_drop_mode: noise`, max_drop uses the metric's interval from `intervals`
    (PR − base) when there is one.
    """
    noise_mode = rules.get(MODE) == "noise"
    checks: list[Check] = []
    for rule in RULES:
        for metric, bound in rules.get(rule, {}).items():
            value = pr.get(metric)
            if rule == "max_drop" and changed_data:
                detail = f"{metric}: skipped: the data changed ({changed_data})"
                checks.append(Check(metric, rule, bound, None, True, True, detail))
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                detail = (
                    f"{metric} is missing from the PR's metrics "
                    f"({key}.{rule}.{metric}: {_fmt(bound)})"
                )
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
                if isinstance(before, bool) or not isinstance(before, int | float):
                    detail = f"{metric}: no value on {base_label} to compare with (skipped)"
                    checks.append(Check(metric, rule, bound, None, True, True, detail))
                    continue
                drop = round((before - value) * direction(metric), 9)
                interval = (intervals or {}).get(metric) if noise_mode else None
                if interval is not None:
                    checks.append(_noise_drop(metric, value, before, bound, interval, base_label))
                    continue
                ok = drop <= bound + TOLERANCE
                change = "is no worse than" if drop <= 0 else f"is {_fmt(drop)} worse than"
                verdict = "" if drop <= 0 else ("within the " if ok else "more than the ")
                detail = (
                    f"{metric} = {_fmt(value)} {change} {base_label}'s {_fmt(before)} "
                    f"({verdict}allowed drop {_fmt(bound)})"
                )
                if noise_mode:
                    detail += "; no interval for it, so the plain change is checked"
                checks.append(Check(metric, rule, bound, drop, ok, False, detail))
    return checks


def _noise_drop(
    metric: str, value: float, before: float, bound: float, interval: Interval, base_label: str
) -> Check:
    """max_drop in noise mode: fails only when the whole interval of the drop exceeds it."""
    sign = direction(metric)
    low, high = sorted((-sign * interval.low + 0.0, -sign * interval.high + 0.0))  # no -0.0
    ok = low <= bound + TOLERANCE
    verdict = "within" if ok else "entirely above"
    detail = (
        f"{metric} = {_fmt(value)} against {base_label}'s {_fmt(before)}: drop "
        f"{_fmt((before - value) * sign)}, {LEVEL:.0%} interval {_fmt(low)} … {_fmt(high)} "
        f"({interval.method}), {verdict} the allowed drop {_fmt(bound)}"
    )
    return Check(metric, "max_drop", bound, low, ok, False, detail)


def judge(
    base_params: dict[str, Any] | None,
    pr_params: dict[str, Any] | None,
    base_metrics: dict[str, Any] | None,
    pr_metrics: dict[str, Any],
    base_lock: dict[str, Any] | None,
    pr_lock: dict[str, Any] | None,
    base_label: str,
    intervals: dict[str, Interval] | None = None,
) -> GateResult:
    """The whole gate: pick the bounds for the PR's task, see whether the data changed, check.

    `intervals` (src/noise.py) serve the blocks with `max_drop_mode: noise`."""
    gate, source, changed = choose_bounds(base_params, pr_params, base_label)
    pr_data = (pr_params or {}).get("data") or {}
    try:
        family: str | None = task_family(pr_data)
    except TaskError as exc:
        if gate and ANY_TASK not in gate:  # per-task blocks: the PR's task must be known
            raise PipelineError(f"cannot choose the gate's block for this PR: {exc}") from exc
        family = None
    rules, block, note = bounds_for(gate, family)
    if note:
        note = f"{note} in {source}"
    reason = data_change(base_params, pr_params, base_lock, pr_lock)
    checks = evaluate_gate(rules, pr_metrics, base_metrics, base_label, reason, block, intervals)
    return GateResult(checks, source, block, family, reason, changed, note)


@dataclass(frozen=True)
class Sides:
    """What the gate and the report compare: each side's params, metrics and dvc.lock, and
    the noise comparison of the two (None when they are not comparable)."""

    base_params: dict[str, Any] | None
    pr_params: dict[str, Any] | None
    base_metrics: dict[str, Any] | None
    pr_metrics: dict[str, Any]
    base_lock: dict[str, Any] | None
    pr_lock: dict[str, Any] | None
    comparison: Comparison | None

    @property
    def intervals(self) -> dict[str, Interval] | None:
        return None if self.comparison is None else self.comparison.intervals

    def judge(self, base_label: str) -> GateResult:
        return judge(
            self.base_params,
            self.pr_params,
            self.base_metrics,
            self.pr_metrics,
            self.base_lock,
            self.pr_lock,
            base_label,
            self.intervals,
        )


def read_sides(root: Path, base_sha: str, results: Any, base_name: str) -> Sides:
    """Both sides of the comparison, from `dvc_results` (metrics) and git (params, lock)."""
    pr_metrics, base_metrics = results.metrics("pr"), results.metrics("base")
    if pr_metrics is None:
        raise PipelineError("no metrics/scores.json in the working tree: run `dvc repro` first")
    base_params, pr_params = read_params(root, base_sha), read_params(root, None)
    base_lock, pr_lock = read_lock(root, base_sha), read_lock(root, None)
    comparison = comparison_for(
        root,
        base_sha,
        base_params,
        pr_params,
        base_metrics,
        pr_metrics,
        base_lock,
        pr_lock,
        base_name,
    )
    return Sides(base_params, pr_params, base_metrics, pr_metrics, base_lock, pr_lock, comparison)


def run_gate(root: Path, base_rev: str) -> GateResult:
    """Gate the working tree's metrics against `base_rev`."""
    base_sha = resolve(root, base_rev)
    label = base_rev.removeprefix("origin/")
    return read_sides(root, base_sha, dvc_results(root, base_sha), label).judge(label)


def comparison_for(
    root: Path,
    base_sha: str,
    base_params: dict[str, Any] | None,
    pr_params: dict[str, Any] | None,
    base_metrics: dict[str, Any] | None,
    pr_metrics: dict[str, Any],
    base_lock: dict[str, Any] | None,
    pr_lock: dict[str, Any] | None,
    base_label: str,
) -> Comparison | None:
    """The noise comparison of the two sides (src/noise.py), or None when they are not
    comparable (no base metrics, or the data changed)."""
    if base_metrics is None or data_change(base_params, pr_params, base_lock, pr_lock):
        return None
    return compare(
        lambda rev, path: read_text(root, rev, path),
        base_sha,
        base_metrics,
        pr_metrics,
        base_params,
        pr_params,
        f"`{base_label}`",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare with")
    args = parser.parse_args()
    result = run_gate(ROOT, args.base)
    label = args.base.removeprefix("origin/")
    if result.data_change:
        print(
            f"data changed against {label}: {result.data_change}; "
            "max_drop checks skipped, min/max still apply"
        )
    for check in result.checks:
        status = "skip" if check.skipped else ("PASS" if check.passed else "FAIL")
        print(f"{status}  {check.rule:<8} {check.detail}")
    if not result.checks:
        print(f"quality gate: {result.summary()}")
        return
    where = f"bounds: {result.block} from {result.source}"
    if not result.passed:
        raise PipelineError(f"quality gate {result.summary()} ({where})")
    print(f"quality gate {result.summary()} ({where})")


if __name__ == "__main__":
    run_cli(main)
