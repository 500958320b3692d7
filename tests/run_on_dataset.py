"""Bring your own problem, proved: the fast test suite passes on another dataset when only
params.yaml's `data` block and a data file change.

    python -m tests.run_on_dataset breast_cancer      # one dataset of DATASETS
    python -m tests.run_on_dataset --all              # every enabled dataset (make test-datasets)
    python -m tests.run_on_dataset --all --jobs 1     # one at a time (default: one per core)
    python -m tests.run_on_dataset breast_cancer --keep -- tests/model -x   # pytest arguments

For each dataset, in a temporary copy of the repository (tests/repo_tools.copy_repo), do
what the README tells a fork to do: write the dataset (shipped inside a Python package, so
nothing is downloaded) to data/external/, draft params.yaml's `data` block from it with
`make schema`'s module (`src.data.draft_schema --write`: every other line of the file stays
as it is), declaring `data.task` (`--task`) where the drafter says it must be, commit that as a
fork would, run `dvc repro`, then the fast suite's tests of the configured dataset:
`pytest -m "not slow and not mechanics"` (`mechanics` marks the tests that never read the
configured dataset, so another dataset cannot change their outcome: tests/conftest.py
refuses the marker on a test using a fixture of the configured dataset). Exits non-zero,
with the failing output, if either fails, or if fewer than MIN_PASSED of that selection
pass (so a marker cannot shrink it unnoticed). The datasets run concurrently, `--jobs` at
a time: each run is its own copy, processes and temporary folders.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tests.repo_tools import copy_repo, run, venv_env

THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
FAST_SUITE = ["-m", "not slow and not mechanics"]
# Fewer passed tests of FAST_SUITE than this on a dataset fails the run: markers must not
# shrink it unnoticed. 254 collected on each dataset (2026-12-01); lower it only with them.
MIN_PASSED = 230


def breast_cancer() -> pd.DataFrame:
    """scikit-learn's breast cancer data: 30 float features, a binary category target."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.copy()
    labels = [str(name) for name in bunch.target_names]  # 0 -> malignant, 1 -> benign
    frame["diagnosis"] = pd.Categorical.from_codes(bunch.target, categories=labels)
    return frame


def diabetes() -> pd.DataFrame:
    """scikit-learn's diabetes data, unscaled: 9 numeric features, `sex` as a category, and
    a numeric target (whole numbers, so the drafter asks for data.task to be declared)."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(as_frame=True, scaled=False)
    frame = bunch.data.copy()
    frame["sex"] = frame["sex"].map({1.0: "female", 2.0: "male"})
    frame["progression"] = bunch.target.astype("float64")
    return frame


@dataclass(frozen=True)
class Dataset:
    load: Callable[[], pd.DataFrame]
    file: str  # written under data/external/; .csv or .parquet
    target: str
    task: str = "auto"  # data.task, when the drafter's `auto` is not enough
    enabled: bool = True


DATASETS: dict[str, Dataset] = {
    "breast_cancer": Dataset(breast_cancer, "breast_cancer.csv", "diagnosis"),
    "diabetes": Dataset(diabetes, "diabetes.parquet", "progression", task="regression"),
}


def write_data(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def configure(repo: Path, dataset: Dataset, env: dict[str, str]) -> None:
    """Write the data file and params.yaml's data block in `repo`, as a fork would."""
    write_data(dataset.load(), repo / "data" / "external" / dataset.file)
    source = f"data/external/{dataset.file}"
    draft = [sys.executable, "-m", "src.data.draft_schema", source, "--target", dataset.target]
    run([*draft, "--task", dataset.task, "--write"], repo, env)


@dataclass
class Outcome:
    name: str
    passed: bool
    repro_s: float
    pytest_s: float
    summary: str
    output: str = ""


def pytest_summary(output: str) -> str:
    """The last line pytest prints ("N passed, M skipped in T s")."""
    lines = [line.strip("= \n") for line in output.splitlines() if line.strip()]
    return next((line for line in reversed(lines) if " in " in line), lines[-1] if lines else "")


def passed_count(summary: str) -> int:
    """N of pytest's "N passed" in its summary line (0 if none passed)."""
    found = re.search(r"\b(\d+) passed\b", summary)
    return int(found.group(1)) if found else 0


def chooses_tests(pytest_args: list[str]) -> bool:
    """Whether the arguments pick tests (`-m`, `-k`, paths): then MIN_PASSED does not apply."""
    return any(arg in ("-m", "-k") or not arg.startswith("-") for arg in pytest_args)


def pytest_selection(pytest_args: list[str]) -> list[str]:
    """The fast suite, unless the arguments choose their own markers (`-m slow ...`)."""
    return pytest_args if "-m" in pytest_args else [*FAST_SUITE, *pytest_args]


def run_dataset(
    name: str, pytest_args: list[str], keep: bool = False, min_passed: int = 0
) -> Outcome:
    dataset = DATASETS[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"mloperation-{name}-"))
    repo = copy_repo(workdir / "repo")
    env = venv_env(repo, **THREAD_ENV)
    try:
        configure(repo, dataset, env)
        run(["git", "add", "-A"], repo, env)
        run(["git", "commit", "-q", "-m", f"data: {name}"], repo, env)

        start = time.perf_counter()
        repro = run(["dvc", "repro"], repo, env, check=False)
        repro_s = time.perf_counter() - start
        if repro.returncode != 0:
            return Outcome(
                name, False, repro_s, 0.0, "dvc repro failed", repro.stdout + repro.stderr
            )

        start = time.perf_counter()
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
        )
        pytest_s = time.perf_counter() - start
        output = tests.stdout + tests.stderr
        summary = pytest_summary(output)
        passed = tests.returncode == 0
        if passed and passed_count(summary) < min_passed:
            passed = False
            summary += f"; expected at least {min_passed} passed (MIN_PASSED): a marker shrank it"
        return Outcome(name, passed, repro_s, pytest_s, summary, output)
    finally:
        if keep:
            print(f"[{name}] kept the copy: {repo}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, pytest_args = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="DATASET", help=", ".join(DATASETS))
    parser.add_argument("--all", action="store_true", help="every enabled dataset")
    parser.add_argument("--keep", action="store_true", help="keep the repository copies")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="datasets run at once (one per core)"
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in DATASETS]
    if unknown or not (args.names or args.all):
        parser.error(f"name one or more of {', '.join(DATASETS)}, or --all")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: must be 1 or more")
    names = args.names or [n for n, d in DATASETS.items() if d.enabled]
    min_passed = 0 if chooses_tests(pytest_args) else MIN_PASSED
    pytest_args = pytest_selection(pytest_args)

    total = time.perf_counter()

    def one(name: str) -> Outcome:
        print(f"[{name}] dvc repro, then pytest {' '.join(pytest_args)}", flush=True)
        return run_dataset(name, pytest_args, keep=args.keep, min_passed=min_passed)

    with ThreadPoolExecutor(max_workers=min(args.jobs, len(names))) as pool:
        outcomes = list(pool.map(one, names))  # reported in the order named
    for outcome in outcomes:
        if not outcome.passed:
            print(outcome.output[-20000:], flush=True)
        print(
            f"[{outcome.name}] {'PASSED' if outcome.passed else 'FAILED'}: {outcome.summary} "
            f"(dvc repro {outcome.repro_s:.0f} s, pytest {outcome.pytest_s:.0f} s)",
            flush=True,
        )
    print(f"datasets: {len(outcomes)} in {time.perf_counter() - total:.0f} s", flush=True)
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
