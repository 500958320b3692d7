"""Experiment report: the working tree's metrics, params, plots and data against a base revision.

    python -m src.report --base main [--out reports/experiment/report.md]   (make report)

This is the PR comment: CI runs it after `dvc repro` and posts the file with
`cml comment update`; `make report BASE=main` shows the same thing locally.

The base side comes from git alone (metrics and plot data are committed, `cache: false`);
the PR side is the working tree. Plots are drawn here from both sides' plot data, base and PR
on one figure each (src/visualization/compare.py), into `<report name>_images/`, and linked
relative to the report, which is how CML finds and publishes them. Same commit, same report:
the tables and images are byte-identical between runs; only the link to the workflow run
(last line, on CI) differs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from src.ci import PULL_STATUS, REPORT, dvc_executable
from src.config import MODEL_FILE, ROOT
from src.experiments import RESULTS, read_results, run_links
from src.experiments import section as experiments_section
from src.gate import GateResult, read_sides
from src.models.tracking import run_link as mlflow_run_link
from src.noise import BETTER, LEVEL, NOISE, WORSE, Interval, marker
from src.revision import (
    METRICS_PATH,
    PLOTS_PATH,
    dvc_results,
    export_dir,
    git,
    resolve,
)
from src.tasks import metric_direction
from src.utils import atomic_write, run_cli

MAX_DATA_ROWS = 25
LEGEND = (
    f"How to read the markers: {BETTER} / {WORSE} only when the {LEVEL:.0%} interval of "
    "the change (PR − base) excludes zero in that direction, by each metric's direction "
    "(`src.tasks.metric_direction`): higher is better for scores (accuracy, F1, ROC AUC, "
    "average precision, R²), lower for losses and errors (log loss, RMSE, MAE). "
    f"{NOISE} when the interval holds zero: the change is within what resampling the "
    "same test rows (or CV folds) moves it by. Counts (`n_*`), training-set scores "
    "(`train_*`), the spread across CV folds (`cv_*_std`) and changes without an interval "
    "get no marker."
)


# --- metrics ---------------------------------------------------------------------------


def _metric_order(name: str) -> tuple[int, str]:
    """Test-set metrics first, then cross-validation, training, counts."""
    for rank, prefix in enumerate(("cv_", "train_", "n_"), start=1):
        if name.startswith(prefix):
            return rank, name
    return 0, name


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"`{value}`"
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _delta(before: Any, after: Any) -> str:
    """The change as text (empty when a side is missing)."""
    numeric = (int, float)
    if not (isinstance(before, numeric) and isinstance(after, numeric)):
        return ""
    change = round(after - before, 9)
    if change == 0:
        return "0"
    if isinstance(before, int) and isinstance(after, int):
        return f"{change:+d}"
    return f"{change:+.4f}" if abs(change) >= 5e-5 else f"{change:+.6f}"


def _interval(interval: Interval | None) -> str:
    return "" if interval is None else f"{interval.low:+.4f} … {interval.high:+.4f}"


def metrics_section(
    base: Mapping[str, Any] | None,
    pr: Mapping[str, Any],
    base_label: str,
    pr_label: str,
    comparable: bool = True,
    intervals: Mapping[str, Interval] | None = None,
) -> list[str]:
    """Base beside PR with the change, its interval and a marker (only when `comparable`)."""
    names = sorted(set(pr) | set(base or {}), key=_metric_order)
    intervals = intervals or {}
    if base is None:
        lines = [f"| Metric | {pr_label} |", "|---|---:|"]
        lines += [f"| {name} | {_num(pr.get(name))} |" for name in names]
        return lines
    if comparable:
        lines = [
            f"| Metric | {base_label} | {pr_label} | Change | {LEVEL:.0%} interval | |",
            "|---|---:|---:|---:|:-:|:--|",
        ]
    else:
        lines = [f"| Metric | {base_label} | {pr_label} | Change |", "|---|---:|---:|---:|"]
    for name in names:
        row = [name, _num(base.get(name)), _num(pr.get(name)), _delta(base.get(name), pr.get(name))]
        if comparable:
            interval = intervals.get(name) if metric_direction(name) else None
            row += [_interval(interval), marker(name, interval)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


# --- params ----------------------------------------------------------------------------


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    text = " ".join(text.splitlines())  # a line break would end the table row
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def params_section(changed: Mapping[str, tuple[Any, Any]], base_label: str) -> list[str]:
    """The params `dvc params diff` reports as changed: {key: (base value, PR value)}."""
    if not changed:
        return [f"No params changed against {base_label}."]
    lines = [f"| Param | {base_label} | PR |", "|---|---|---|"]
    for key, (before, after) in sorted(changed.items()):
        lines.append(f"| {_param(key)} | {_param(before)} | {_param(after)} |")
    return lines


# --- data (dvc diff) -------------------------------------------------------------------


def dvc_diff(root: Path, base_sha: str) -> dict[str, list] | str:
    """`dvc diff --json BASE` of the working tree, or the reason it is not available."""
    try:
        proc = subprocess.run(
            [dvc_executable(), "diff", "--json", base_sha],
            cwd=root,
            capture_output=True,
            text=True,
        )
    except OSError as exc:
        return f"dvc is not installed ({exc})"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return lines[-1] if lines else f"dvc diff exited {proc.returncode}"
    return json.loads(proc.stdout or "{}")


def data_section(diff: dict[str, list] | str, base_label: str) -> list[str]:
    if isinstance(diff, str):
        return [f"Not available: {diff}"]
    rows: list[tuple[str, str]] = []
    for change in ("added", "deleted", "modified", "renamed"):
        for entry in diff.get(change, []):
            path = entry["path"]
            if isinstance(path, dict):  # renamed: {"old": ..., "new": ...}
                path = f"{path['old']} → {path['new']}"
            rows.append((change, path))
    if not rows:
        return [f"No DVC-tracked data or model file differs from `{base_label}`."]
    counts = ", ".join(
        f"{sum(c == kind for c, _ in rows)} {kind}"
        for kind in ("added", "deleted", "modified", "renamed")
        if any(c == kind for c, _ in rows)
    )
    lines = [f"`dvc diff {base_label}`: {counts}.", "", "| Change | Path |", "|---|---|"]
    lines += [f"| {change} | `{path}` |" for change, path in rows[:MAX_DATA_ROWS]]
    if len(rows) > MAX_DATA_ROWS:
        lines.append(f"| … | and {len(rows) - MAX_DATA_ROWS} more |")
    return lines


# --- plots -----------------------------------------------------------------------------


def plots_section(root: Path, base_sha: str | None, out: Path, base_label: str) -> list[str]:
    """One figure per plot with the base and the PR on the same axes, in `<report name>_images/`.

    A plot whose data is the same on both sides is one line; without the base's plot data
    (none committed, or a layout that cannot be read) the PR's figures are drawn alone.
    """
    from src.visualization.compare import TITLES, compare_plot, plot_names, save
    from src.visualization.render import load_plot_data

    images = out.parent / f"{out.stem}_images"
    shutil.rmtree(images, ignore_errors=True)
    pr = load_plot_data(root / PLOTS_PATH)
    base: dict | None = None
    lines: list[str] = []
    if base_sha is not None:
        with tempfile.TemporaryDirectory() as tmp:
            if not export_dir(root, base_sha, PLOTS_PATH, Path(tmp), suffix=".csv"):
                lines += [f"`{base_label}` has no committed plot data: the PR's plots alone.", ""]
            else:
                try:
                    base = load_plot_data(Path(tmp))
                except (ValueError, OSError) as exc:  # an older layout of plots/
                    lines += [f"Could not read `{base_label}`'s plot data ({exc}).", ""]
    if base is not None:
        lines += [
            f"`{base_label}` dashed grey, the PR solid blue, on the same axes and scale.",
            "",
        ]
    names = plot_names(pr)
    if not names:
        return [*lines, f"No plot data in the working tree's `{PLOTS_PATH}/`."]
    for name in names:
        title = TITLES[name]
        result = compare_plot(name, pr, base, base_label)
        if result.figure is None:
            lines += [f"{title}: unchanged", ""]
            continue
        path = save(result.figure, images / f"{name}.png")
        caption = (
            f"{title}, {base_label} vs PR"
            if base is not None and not result.note
            else (f"{title}, PR")
        )
        if result.note:
            lines += [f"{title}: {result.note}; the PR's alone.", ""]
        lines += [f"![{caption}]({path.relative_to(out.parent).as_posix()})", ""]
    return lines[:-1]


# --- the whole report ------------------------------------------------------------------


def pull_line(status_file: Path | None) -> str | None:
    """What `python -m src.ci pull` did, if it ran (reports/dvc_pull.json)."""
    if status_file is None or not status_file.is_file():
        return None
    status = json.loads(status_file.read_text(encoding="utf-8"))
    state, message = status.get("state"), status.get("message", "")
    if state == "pulled":
        return f"**DVC remote:** ✅ {message}"
    verb = "skipped" if state == "skipped" else "failed"
    return f"**DVC remote:** ⚠️ `dvc pull` {verb}: {message}"


def run_link(env: Mapping[str, str]) -> str | None:
    """The workflow run's URL when running in GitHub Actions."""
    keys = ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    if not all(env.get(k) for k in keys):
        return None
    server, repo, run_id = (env[k] for k in keys)
    return f"{server.rstrip('/')}/{repo}/actions/runs/{run_id}"


def gate_section(result: GateResult) -> list[str]:
    if not result.checks:
        summary = result.summary()
        return [f"{summary[0].upper()}{summary[1:]}."]
    applies = "any task" if result.block == "gate" else f"this PR's task, {result.family}"
    lines = [
        f"Bounds from `{result.block}:` in {result.source} (for {applies}).",
        "",
        "| Check | Result |",
        "|---|---|",
    ]
    for check in result.checks:
        mark = "⏭️ skipped" if check.skipped else ("✅ pass" if check.passed else "❌ FAIL")
        lines.append(f"| {check.detail} | {mark} |")
    return lines


EXPORT_PATH = "metrics/export.json"  # written by the export stage


def export_line(export: dict[str, Any] | None) -> str:
    """One line on the served (ONNX) model's parity with scikit-learn, from the export stage."""
    if export is None:
        return f"No `{EXPORT_PATH}` in the working tree: the export stage has not run."
    checked = [k.removesuffix("_rows") for k in sorted(export) if k.endswith("_rows")]
    mismatches = sum(int(export.get(f"{k}_label_mismatches", 0)) for k in checked)
    rows = sum(int(export[f"{k}_rows"]) for k in checked)
    worst = max(float(export.get(f"{k}_max_abs_proba_diff", 0.0)) for k in checked)
    tolerance = float(export.get("parity_tolerance", 0.0))
    ok = mismatches == 0 and worst <= tolerance
    return (
        f"{'✅' if ok else '❌'} Served model (ONNX) vs scikit-learn on {rows} rows "
        f"({', '.join(checked)}): {mismatches} label mismatches, max |Δp| {worst:.1e} "
        f"(tolerance {tolerance:.0e})."
    )


def build_report(
    root: Path,
    base_rev: str,
    out: Path,
    pull_status: Path | None = PULL_STATUS,
    env: Mapping[str, str] | None = None,
) -> tuple[str, GateResult]:
    """Write the report (markdown + images) to `out`; return its text and the gate result."""
    env = os.environ if env is None else env
    base_sha = resolve(root, base_rev)
    base_name = base_rev.removeprefix("origin/")
    base_label = f"`{base_name}`"
    head = git(root, "rev-parse", "--short=7", "HEAD").strip()
    with ThreadPoolExecutor(1) as pool:  # dvc takes seconds to start: run dvc diff meanwhile
        data_diff = pool.submit(dvc_diff, root, base_sha)
        results = dvc_results(root, base_sha)
        sides = read_sides(root, base_sha, results, base_name)
        gate = sides.judge(base_label)
        data_lines = data_section(data_diff.result(), base_name)
    pr_params, pr_metrics, base_metrics = sides.pr_params, sides.pr_metrics, sides.base_metrics
    comparison, intervals = sides.comparison, sides.intervals

    out.parent.mkdir(parents=True, exist_ok=True)
    plot_lines = plots_section(root, base_sha if base_metrics else None, out, base_name)
    short_base = base_sha[:7]
    lines = ["## Experiment report", ""]
    if gate.data_change:
        lines += [
            f"> **Data changed:** {gate.data_change} — metrics are not comparable with "
            f"{base_label}, so the gate checks only absolute bounds (min/max), not drops.",
            "",
        ]
    mark = "⚠️" if not gate.checks else ("✅" if gate.passed else "❌")
    lines += [
        f"- **Quality gate:** {mark} {gate.summary()}",
        f"- **Compared:** this PR (`{head}`, working tree after `dvc repro`) with "
        f"{base_label} (`{short_base}`)",
    ]
    pulled = pull_line(pull_status)
    if pulled:
        lines.append(f"- {pulled}")
    lines.append("")
    if base_metrics is None:
        lines += [
            f"> **First experiment:** {base_label} has no `{METRICS_PATH}` yet, so there is "
            "nothing to compare with. Below are this PR's results; once merged, they become "
            "the baseline.",
            "",
        ]
    lines += ["### Metrics", ""]
    comparable = gate.data_change is None
    lines += metrics_section(
        base_metrics, pr_metrics, f"{base_label} `{short_base}`", "PR", comparable, intervals
    )
    if comparison is not None:
        lines += ["", *(f"- {note}" for note in comparison.notes), "", LEGEND]
    elif base_metrics is not None:
        lines += [
            "",
            f"Not comparable: the data changed, so the two sides are scores on different "
            f"data and get no {BETTER} / {WORSE} markers.",
        ]
    experiments = read_results(root / RESULTS.relative_to(ROOT))  # make experiments
    if experiments is not None:
        lines += ["", "### Experiments", ""]
        lines += experiments_section(
            root,
            experiments,
            base_sha,
            base_label,
            base_metrics,
            pr_metrics,
            pr_params,
            intervals,
            comparable,
            run_links(env, root, experiments),  # http(s) URI only
        )
    lines += ["", "### Quality gate", "", *gate_section(gate)]
    if gate.changed:
        lines += [
            "",
            f"This PR changes `gate:` in params.yaml; the bounds of {base_label} apply until "
            "it is merged.",
        ]
    lines += ["", "### Params changed", "", *params_section(results.params, base_label)]
    lines += ["", "### Data and model", "", *data_lines]
    lines += ["", export_line(results.pr.get(EXPORT_PATH))]
    lines += ["", "### Plots", "", *plot_lines]
    lines += ["", "---", f"Reproduce locally: `make repro && make report BASE={base_name}`"]
    link = run_link(env)
    if link:
        lines += ["", f"[Workflow run]({link})"]
    mlflow_link = mlflow_run_link(env, root / MODEL_FILE.relative_to(ROOT))  # http(s) URI only
    if mlflow_link:
        lines += ["", mlflow_link]
    text = "\n".join(lines) + "\n"
    atomic_write(out, lambda p: p.write_text(text, encoding="utf-8"))
    return text, gate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare with")
    parser.add_argument("--out", type=Path, default=REPORT, help="markdown file to write")
    parser.add_argument(
        "--pull-status", type=Path, default=PULL_STATUS, help="JSON written by `src.ci pull`"
    )
    args = parser.parse_args()
    out = args.out.resolve()
    _, gate = build_report(ROOT, args.base, out, args.pull_status)
    print(f"wrote {out} (quality gate {gate.summary()})")


if __name__ == "__main__":
    run_cli(main)
