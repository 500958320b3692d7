"""Pipeline benchmark: `make bench-pipeline` -> reports/bench/pipeline.json + a table.

Measures, in temporary copies of the repository:
  * full `dvc repro` from clean (no DVC cache, no outputs), median of N runs;
  * no-op `dvc repro` (everything up to date), median of N runs;
  * the features + train stages (incl. cross-validation, as `params.yaml` sets it) on the
    demo data scaled 10x, 100x, 1000x by resampling with noise: wall time and peak RSS,
    each in a fresh process.
Targets (2-core machine): no-op < 2 s median, full < 30 s, cost no worse than linear in
rows, < 2 GB peak at 1000x.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from src.config import REPORTS_DIR, ROOT
from src.utils import write_json
from tests.repo_tools import copy_repo, run, stages_run, venv_env

NUMERIC_NOISE = 0.05  # noise, as a fraction of each numeric column's std


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = run(cmd, cwd)
    return time.perf_counter() - start, proc.stdout


def bench_repro(workdir: Path, rounds: int, dataset: str | None = None) -> dict:
    """Full and no-op `dvc repro` in copies of the repo: as configured, or configured for
    `dataset` of tests/run_on_dataset.py (e.g. diabetes, a regression task)."""
    full, noop = [], []
    for i in range(rounds):
        repo = copy_repo(workdir / f"{dataset or 'repo'}{i}")
        if dataset:
            from tests.run_on_dataset import DATASETS, configure

            configure(repo, DATASETS[dataset], venv_env(repo))
            run(["git", "add", "-A"], repo)
            run(["git", "commit", "-qm", f"data: {dataset}"], repo)
        seconds, out = timed(["dvc", "repro"], repo)
        assert stages_run(out) == ["prepare", "features", "train", "export", "evaluate"], out
        full.append(seconds)
    for _ in range(max(rounds, 5)):
        seconds, out = timed(["dvc", "repro"], repo)
        assert stages_run(out) == [], out
        noop.append(seconds)
    return {
        "full_repro_s": {"median": statistics.median(full), "runs": full},
        "noop_repro_s": {"median": statistics.median(noop), "runs": noop},
    }


def scale_child(factor: int) -> None:
    """In a fresh process: scale the training set, run features + train, print figures."""
    import numpy as np
    import pandas as pd

    from src.config import TRAIN_DATA
    from src.features.build_features import build_features
    from src.models.train_model import train
    from src.utils import load_params

    params = load_params()
    base = pd.read_csv(TRAIN_DATA)
    rng = np.random.default_rng(factor)
    data = base.sample(n=len(base) * factor, replace=True, random_state=factor)
    data = data.reset_index(drop=True)
    for feature in params["data"]["schema"]:
        if feature in data and params["data"]["schema"][feature] == "float":
            data[feature] += rng.normal(0, base[feature].std() * NUMERIC_NOISE, len(data))
    start = time.perf_counter()
    schema, preprocessor, matrix = build_features(data, params)
    features_s = time.perf_counter() - start
    _, metrics, _ = train(params, {"schema": schema, "preprocessor": preprocessor}, matrix, data)
    total_s = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "factor": factor,
                "rows": len(data),
                "features_s": features_s,
                "train_s": total_s,
                "peak_rss_mb": peak_mb,
                "cv_accuracy_mean": metrics["cv_accuracy_mean"],
            }
        )
    )


def bench_scaling(factors: list[int], repo: Path) -> list[dict]:
    results = []
    for factor in factors:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.pipeline", "--child-scale", str(factor)],
            cwd=repo,
            env=venv_env(repo),
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = results[0]
    for r in results:
        r["seconds_per_1k_rows"] = 1000 * r["train_s"] / r["rows"]
        r["cost_ratio_vs_linear"] = (r["train_s"] / base["train_s"]) / (r["rows"] / base["rows"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="full repro runs")
    parser.add_argument("--scales", default="10,100,1000")
    parser.add_argument(
        "--datasets",
        default="diabetes",
        help="datasets of tests/run_on_dataset.py timed besides the configured one ('' none)",
    )
    parser.add_argument("--out", type=Path, default=REPORTS_DIR / "bench" / "pipeline.json")
    parser.add_argument("--child-scale", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_scale:
        scale_child(args.child_scale)
        return

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        repro = bench_repro(Path(tmp), args.rounds)
        others = {
            name: bench_repro(Path(tmp), args.rounds, name)
            for name in filter(None, args.datasets.split(","))
        }
        scaling = bench_scaling([int(s) for s in args.scales.split(",")], Path(tmp) / "repo0")
    result = {
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        **repro,
        "datasets": others,
        "scaling": scaling,
        "targets": {
            "noop_repro_median_lt_2s": all(
                r["noop_repro_s"]["median"] < 2 for r in [repro, *others.values()]
            ),
            "full_repro_median_lt_30s": repro["full_repro_s"]["median"] < 30,
            "peak_rss_at_max_scale_lt_2gb": scaling[-1]["peak_rss_mb"] < 2048,
        },
    }
    write_json(args.out, result)

    print(
        f"full dvc repro from clean: median {repro['full_repro_s']['median']:.1f} s "
        f"({args.rounds} runs)"
    )
    print(f"no-op dvc repro:           median {repro['noop_repro_s']['median']:.2f} s")
    for name, r in others.items():
        print(
            f"{name}: full {r['full_repro_s']['median']:.1f} s, "
            f"no-op {r['noop_repro_s']['median']:.2f} s (medians)"
        )
    print(
        f"{'scale':>6} {'rows':>8} {'features+train s':>17} {'s / 1k rows':>12} "
        f"{'vs linear':>10} {'peak RSS MB':>12}"
    )
    for r in scaling:
        print(
            f"{r['factor']:>5}x {r['rows']:>8} {r['train_s']:>17.1f} "
            f"{r['seconds_per_1k_rows']:>12.3f} {r['cost_ratio_vs_linear']:>10.2f} "
            f"{r['peak_rss_mb']:>12.0f}"
        )
    print(f"written to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
