"""Report benchmark: `make bench-report` -> reports/bench/report.json + a table.

Measures the noise-aware comparison (src/noise.py) on predictions made from
tests/fixture_data.py's tables, 86 rows (the demo's test set) and 10,000 rows:
  * the paired bootstrap alone (1000 resamples, vectorised), per task;
  * the same resamples through the task's scikit-learn metrics (timed on 20 resamples and
    scaled to 1000), the reason src/tasks/resampled.py exists;
  * the whole `build_report` (dvc metrics/params/diff, bootstrap, plots) on a two-commit
    experiment repo (tests/unit/experiment_repo.py), median of N runs.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from src.config import REPORTS_DIR
from src.noise import RESAMPLES, paired_differences, read_predictions
from src.report import build_report
from src.utils import write_json
from tests.fixture_data import TASKS
from tests.unit.experiment_repo import make_repo, predicted_side

SIZES = (86, 10_000)
SKLEARN_RESAMPLES = 20


def bench_bootstrap(task: str, n_rows: int) -> dict:
    base = read_predictions(predicted_side(task, 2, n_rows)[0], "base")
    pr = read_predictions(predicted_side(task, n_rows // 20, n_rows)[0], "pr")
    start = time.perf_counter()
    paired_differences(base, pr)
    vectorised = time.perf_counter() - start
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(SKLEARN_RESAMPLES):
            rows = rng.integers(0, n_rows, n_rows)
            for side in (base, pr):
                outputs = side.outputs.iloc[rows] if side.task.is_classifier else side.outputs[rows]
                side.task.test_metrics(side.target[rows], outputs)
    sklearn = (time.perf_counter() - start) * RESAMPLES / SKLEARN_RESAMPLES
    return {
        "task": task,
        "rows": n_rows,
        "bootstrap_s": round(vectorised, 3),
        "sklearn_loop_s_estimated": round(sklearn, 1),
    }


def bench_report(workdir: Path, n_rows: int, rounds: int) -> dict:
    base_text, base_scores = predicted_side("multiclass", 2, n_rows)
    pr_text, pr_scores = predicted_side("multiclass", 3, n_rows)
    repo = make_repo(
        workdir / f"repo-{n_rows}",
        base_metrics=base_scores,
        pr_metrics=pr_scores,
        base_predictions=base_text,
        pr_predictions=pr_text,
    )
    times = []
    for i in range(rounds):
        start = time.perf_counter()
        text, _ = build_report(repo, "main", workdir / f"out-{n_rows}-{i}" / "report.md", env={})
        times.append(time.perf_counter() - start)
    assert "paired bootstrap of the difference" in text
    return {
        "rows": n_rows,
        "predictions_file_bytes": len(pr_text.encode()),
        "build_report_s_median": round(statistics.median(times), 2),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPORTS_DIR / "bench" / "report.json")
    args = parser.parse_args()
    bootstrap = [bench_bootstrap(task, n) for n in SIZES for task in TASKS]
    with tempfile.TemporaryDirectory() as tmp:
        reports = [bench_report(Path(tmp), n, args.rounds) for n in SIZES]
    result = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor()},
        "resamples": RESAMPLES,
        "bootstrap": bootstrap,
        "report": reports,
    }
    write_json(args.out, result)
    print(f"{'task':<11} {'rows':>6} {'bootstrap s':>12} {'sklearn loop s':>15}")
    for b in bootstrap:
        print(
            f"{b['task']:<11} {b['rows']:>6} {b['bootstrap_s']:>12} "
            f"{b['sklearn_loop_s_estimated']:>15}"
        )
    for r in reports:
        print(
            f"build_report, {r['rows']} rows: {r['build_report_s_median']} s median of "
            f"{r['rounds']} (predictions file {r['predictions_file_bytes']} bytes)"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
